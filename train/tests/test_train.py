import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from riffle_train import digits
from riffle_train.layers import inject
from riffle_train.trainer import accuracy, fit, seed_everything, shutdown_distributed


def _tiny():
    xtr, ytr, xte, yte = digits.task_data("rotated")
    return torch.from_numpy(xtr[:256]), torch.from_numpy(ytr[:256])


def test_tiny_adapter_training_improves_loss(repo):
    model, _ = digits.model_from_gguf(repo / "models" / "digits" / "mlp.gguf")
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    inject(model, ["layers.0", "layers.1"], method="gsoft", block_size=8)
    x, y = _tiny()
    res = fit(model, x, y, epochs=6, batch_size=64, lr=2e-2, device=torch.device("cpu"))
    assert res.losses[-1] < 0.7 * res.losses[0]
    for k, v in frozen.items():  # the base stays frozen
        mod = k.rsplit(".", 1)[0]
        name = k if mod == "layers.2" else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        assert torch.equal(model.state_dict()[name], v)


def _ddp_worker(rank, world, path, out_dir):
    torch.set_num_threads(1)
    # A file store instead of a TCP store: no port to race for, and no rank hosts the
    # rendezvous, so rank 0 leaving first cannot pull it from under rank 1.
    store = f"file://{os.path.join(out_dir, 'rendezvous')}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        seed_everything(0)
        model, _ = digits.model_from_gguf(path)
        inject(model, ["layers.0", "layers.1"], method="double_gsoft", block_size=8)
        x, y = _tiny()
        res = fit(model, x, y, epochs=1, batch_size=32, lr=1e-2, max_steps=3, device=torch.device("cpu"))
        flat = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
        torch.save({"flat": flat, "steps": res.steps}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown_distributed()


def test_ddp_world_size_2_gloo(repo, tmp_path):
    path = str(repo / "models" / "digits" / "mlp.gguf")
    mp.spawn(_ddp_worker, args=(2, path, str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert a["steps"] == b["steps"] == 3
    assert a["flat"].abs().sum() > 0  # parameters moved from zero
    assert torch.equal(a["flat"], b["flat"])  # DDP kept the replicas identical


def test_ddp_example_single_process(repo, tmp_path, capsys):
    """riffle_train.ddp (the torchrun example of docs/training.md) also runs as one process."""
    from riffle_train import ddp, gguf_io

    out = tmp_path / "rotated.gguf"
    assert ddp.main(["--base", str(repo / "models" / "digits" / "mlp.gguf"), "--epochs", "2", "--out", str(out)]) == 0
    assert "world 1 on" in capsys.readouterr().out
    kv, t, _ = gguf_io.read_tensors(out)
    assert kv["adapter.task_name"] == "rotated" and "layers.0.weight.oft_in.1" in t
