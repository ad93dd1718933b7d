"""Train one SmolLM2 chat adapter with DistributedDataParallel; launch with torchrun.

    torchrun --standalone --nproc_per_node=2 -m riffle_train.llm_ddp --task sentiment --out a.gguf  # CPU: gloo
    torchrun --standalone --nproc_per_node=8 -m riffle_train.llm_ddp --task sentiment --out a.gguf  # NCCL

Every rank loads the same frozen base, injects the same zero-initialised adapter and draws
the same global batches (``--batch`` x world examples per step, as ``llm.make_batches``
draws them); rank r trains on rows r, r+world, ... of each, and DDP averages the gradients,
so with answers of equal length per rank the step equals one process's step on the whole
global batch. Rank 0 writes the adapter (F16, bound to the base) and, with ``--score``,
scores the held-out chats. Without torchrun it runs as one process.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from . import llm
    from .llama import SMOLLM2_Q4_1, base_model_id, llama_from_gguf
    from .trainer import init_distributed, seed_everything, shutdown_distributed

    ap = argparse.ArgumentParser(prog="python -m riffle_train.llm_ddp")
    ap.add_argument("--base", default=str(SMOLLM2_Q4_1))
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--prepared", default=None, help="folder with <task>.split.json (else the corpus split)")
    ap.add_argument("--method", default="gsoft", choices=llm.OUR_METHODS)
    ap.add_argument("--block-size", type=int, default=8)
    ap.add_argument("--blocks", default="all")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8, help="per rank")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--max-prompt", type=int, default=160)
    ap.add_argument("--score", action="store_true", help="rank 0 scores the held-out chats")
    ap.add_argument("--out", default=None, help="adapter GGUF to write (rank 0)")
    args = ap.parse_args(argv)

    rank, world, device = init_distributed()
    torch.set_num_threads(1)
    seed_everything(0)
    b = llm.Budget(train=args.train, heldout=args.heldout, steps=args.steps, batch=args.batch * world, lr=args.lr,
                   max_prompt=args.max_prompt, block_size=args.block_size,
                   blocks=None if args.blocks == "all" else tuple(int(x) for x in args.blocks.split(",")))
    tok = llm.tokenizer_from_gguf(args.base)
    prep = llm.prepare(args.task, tok, b, prepared_dir=args.prepared)
    model, _ = llama_from_gguf(args.base)
    model.to(device)
    llm.apply_method(model, args.method, llm.targets(model, b.blocks), b)
    wrapped = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    pad = tok.token_to_id(llm.IM_END)
    glob = llm.make_batches(prep.rows, b.batch, b.steps, 0, b.max_prompt, pad)
    mine = ((ids[rank::world], lab[rank::world], att[rank::world]) for ids, lab, att in glob)
    res = llm.train_steps(wrapped, mine, b.steps, b.lr, device, device.type == "cuda",
                          log=(print if rank == 0 else (lambda *a, **k: None)), tag=f"rank {rank}/{world}")
    if rank == 0:
        print(f"world {world} on {device}: {b.steps} steps, {res['train_seconds']}s, "
              f"last loss {res['losses'][-1]:.4f}", flush=True)
        if args.out:
            model.cpu()
            llm.export_adapter(model, args.method, b, args.task, Path(args.out), base_model_id(args.base), [],
                               prep.labels)
            print(f"wrote {args.out}", flush=True)
        if args.score:
            fresh, _ = llama_from_gguf(args.base)
            llm.load_adapter(fresh, args.out) if args.out else None
            texts = llm.generate_texts(fresh if args.out else model, tok, [e.messages() for e in prep.heldout],
                                       llm.max_new_tokens(args.task), 32, False)
            sc = llm.score(args.task, texts, [e.answer for e in prep.heldout],
                           prep.labels or llm.task_labels(args.task))
            print(f"held-out {args.task}: score {sc['score']:.4f} well-formed {sc['well_formed']:.4f}", flush=True)
    # The DDP wrapper's reducer holds the process group and its communication threads: drop it
    # before the group is torn down (a CI run saw rank 1 abort in gloo's teardown once).
    del wrapped
    gc.collect()
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
