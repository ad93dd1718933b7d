"""Small random GSOFT adapters for a base model, for the `riffle serve` tests and bench.

    python scripts/serve-adapters.py BASE.gguf OUT_DIR TASK[:SEED] ...

Each adapter rotates the inputs of every `blk.N.attn_q.weight` and `blk.N.ffn_down.weight`
of a llama base (or every `blk.N.attn_q.weight` / `ffn_down` of a bert base) by a GSOFT
transform (block size 8, two factors, `gs` permutation) with skew parameters drawn from
N(0, 0.02) by the seed: far enough from the identity that the answers change, not so
far that the model stops making sense. The base is bound by its data-span id, computed
here as the runtime does (docs/format.md).
"""
import sys
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from riffle_train import gguf_io  # noqa: E402
from riffle_train.gguf_io import U32  # noqa: E402

BLOCK = 8
FACTORS = 2


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    base, out = Path(sys.argv[1]), Path(sys.argv[2])
    reader = gguf.GGUFReader(str(base))
    kv = gguf_io.read_kv(reader)
    base_id = kv.get("riffle.model_id") or gguf_io.verify_span(base)["model_id"]
    arch = kv["general.architecture"]
    shapes = {t.name: [int(x) for x in reversed(t.shape.tolist())] for t in reader.tensors}
    targets = sorted(n for n in shapes if n.endswith((".attn_q.weight", ".ffn_down.weight")))
    if not targets:
        sys.exit(f"{base}: no attn_q / ffn_down weights to adapt")
    out.mkdir(parents=True, exist_ok=True)
    for spec in sys.argv[3:]:
        task, _, seed = spec.partition(":")
        rng = np.random.default_rng(int(seed or 0))
        tensors = []
        for name in targets:
            cols = shapes[name][-1]
            for f in range(FACTORS):
                p = rng.normal(0.0, 0.02, size=(cols // BLOCK, BLOCK * (BLOCK - 1) // 2))
                tensors.append((f"{name}.oft_in.{f}", p.astype(np.float32)))
        facts = gguf_io.write_gguf(out / f"{task}.gguf", arch, {
            "general.type": "adapter",
            "general.name": f"random gsoft {task}",
            "adapter.type": "orthogonal",
            "adapter.orthogonal.method": "gsoft",
            "adapter.orthogonal.block_size": U32(BLOCK),
            "adapter.orthogonal.permutation": "gs",
            "adapter.orthogonal.factor_count": U32(FACTORS),
            "adapter.base_model_id": base_id,
            "adapter.task_name": task,
        }, tensors, id_key="crc")
        print(f"{out / (task + '.gguf')}: {len(targets)} weights, {facts['bytes']} bytes")


if __name__ == "__main__":
    main()
