"""Train one digits adapter with DistributedDataParallel; launch with torchrun.

    torchrun --standalone --nproc_per_node=2 -m riffle_train.ddp --task rotated     # CPU: gloo
    torchrun --standalone --nproc_per_node=8 -m riffle_train.ddp --task rotated     # 8 GPUs: NCCL

Every rank loads the same frozen base and injects the same zero-initialised adapter;
``trainer.fit`` wraps the model in DDP, gives each rank every ``world``-th example of the
shared shuffled batch (so the global batch is ``--batch-size x world``) and DDP averages the
gradients. Rank 0 scores the held-out set and, with ``--out``, writes the adapter GGUF.
Without torchrun (no ``WORLD_SIZE``) it runs as one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from . import digits, gguf_io
    from .trainer import accuracy, fit, init_distributed, seed_everything, shutdown_distributed

    ap = argparse.ArgumentParser(prog="python -m riffle_train.ddp")
    ap.add_argument("--base", default="models/digits/mlp.gguf")
    ap.add_argument("--task", default="rotated", choices=["rotated", "inverted", "noisy"])
    ap.add_argument("--method", default="gsoft")
    ap.add_argument("--block-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64, help="per rank")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--out", default=None, help="adapter GGUF to write (rank 0)")
    args = ap.parse_args(argv)

    rank, world, device = init_distributed()
    seed_everything(0)
    model, bkv = digits.model_from_gguf(args.base)
    arch = bkv["general.architecture"]
    targets = ["layers.0", "layers.1"] if arch == "mlp" else ["conv.1", "dense.0"]
    spec = digits.AdapterSpec(arch, args.task, args.method, args.block_size, targets)
    digits.apply_adapter_spec(model, spec, digits.task_labels(args.task))
    xtr, ytr, xte, yte = digits.task_data(args.task)
    t0 = time.perf_counter()
    res = fit(model, torch.from_numpy(xtr), torch.from_numpy(ytr), epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, device=device)
    if rank == 0:
        acc = accuracy(model, torch.from_numpy(xte), torch.from_numpy(yte))
        print(f"world {world} on {device}: {res.steps} steps, {time.perf_counter() - t0:.1f}s, "
              f"final loss {res.losses[-1]:.4f}, held-out {args.task} accuracy {acc:.4f}", flush=True)
        if args.out:
            model.cpu()
            gguf_io.write_gguf(Path(args.out), arch, digits.adapter_kv(spec, bkv["riffle.model_id"], None),
                               digits.adapter_tensors(model, spec), id_key="crc")
            print(f"wrote {args.out}")
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
