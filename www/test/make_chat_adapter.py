"""A random GSOFT adapter for the chat test (www/test/chat.test.mjs): every block's
attn_q and attn_v of the given llama base, b = 8, gs permutation, 2 factors, skew
parameters drawn with standard deviation `std` (seeded), so the adapted model answers
visibly differently from the base. Not a trained task: the trained SmolLM2 adapters come
from the training issue (models/smollm2-adapters/).

    $(scripts/python-env) www/test/make_chat_adapter.py BASE.gguf OUT.gguf [--std 0.5] [--task random]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "train"))
from riffle_train import gguf_io  # noqa: E402
from riffle_train.gguf_io import U32  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--std", type=float, default=0.5)
    ap.add_argument("--task", default="random")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    import gguf

    r = gguf.GGUFReader(args.base)
    kv = gguf_io.read_kv(r)
    model_id = kv.get("riffle.model_id")
    if model_id is None:
        # A base without riffle.model_id is identified by the SHA-256 of its data span.
        model_id = gguf_io.model_id(gguf_io.span_of_reader(r))
    arch = kv["general.architecture"]
    b, m = 8, 2
    rng = np.random.default_rng(args.seed)
    tensors = []
    for t in r.tensors:
        name = t.name
        if name.endswith((".attn_q.weight", ".attn_v.weight")):
            cols = int(t.shape[0])  # GGUF order: innermost (in) first
            for f in range(m):
                tensors.append((f"{name}.oft_in.{f}",
                                (rng.standard_normal((cols // b, b * (b - 1) // 2)) * args.std).astype(np.float32)))
    meta = {
        "general.type": "adapter",
        "general.description": "random rotations (test adapter, not a trained task)",
        "adapter.type": "orthogonal",
        "adapter.orthogonal.method": "gsoft",
        "adapter.orthogonal.block_size": U32(b),
        "adapter.orthogonal.permutation": "gs",
        "adapter.orthogonal.factor_count": U32(m),
        "adapter.base_model_id": model_id,
        "adapter.task_name": args.task,
    }
    facts = gguf_io.write_gguf(args.out, arch, meta, tensors, id_key="crc")
    print(f"{args.out}: {len(tensors)} tensors, {facts['bytes']} bytes, base {model_id[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
