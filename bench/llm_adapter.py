"""The GSOFT adapter bench/llm.py measures unmerged decode with (docs/benchmarks.md section 9):
GSOFT, block size 8, two factors, `gs` permutation, on the inputs of all seven linears of every
block of SmolLM2-135M (210 slots), F16 skew parameters drawn from N(0, 0.05) by the seed, bound
to the given base file by its data-span id (docs/format.md).

    $(scripts/python-env) bench/llm_adapter.py BASE.gguf OUT.gguf [SEED]
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from riffle_train import gguf_io  # noqa: E402
from riffle_train.gguf_io import U32  # noqa: E402

BLOCK, FACTORS = 8, 2
# (rows, cols) of SmolLM2-135M's seven linears.
DIMS = {"attn_q": (576, 576), "attn_k": (192, 576), "attn_v": (192, 576), "attn_output": (576, 576),
        "ffn_gate": (1536, 576), "ffn_up": (1536, 576), "ffn_down": (576, 1536)}


def main(base: str, out: str, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    tensors = []
    for blk in range(30):
        for layer, (_, cols) in DIMS.items():
            for f in range(FACTORS):
                p = rng.standard_normal((cols // BLOCK, BLOCK * (BLOCK - 1) // 2)) * 0.05
                tensors.append((f"blk.{blk}.{layer}.weight.oft_in.{f}", p.astype(np.float16)))
    kv = {"general.type": "adapter", "adapter.type": "orthogonal", "adapter.orthogonal.method": "gsoft",
          "adapter.orthogonal.block_size": U32(BLOCK), "adapter.orthogonal.permutation": "gs",
          "adapter.orthogonal.factor_count": U32(FACTORS),
          "adapter.base_model_id": gguf_io.verify_span(base)["model_id"], "adapter.task_name": "random"}
    print(gguf_io.write_gguf(out, "llama", kv, tensors, id_key="crc"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
