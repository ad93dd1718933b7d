"""Makes the PEFT adapter folders that `riffle import-peft` is tested on.

Real PEFT (0.21) OFT and BOFT adapters over the committed digits MLP (models/digits/mlp.gguf,
rebuilt in torch with the module names `layers.0..2`), random parameters, saved with
`save_pretrained`, plus `expected.json`: 16 held-out inputs and the PEFT model's logits
(float64). The Rust test imports each folder and compares riffle's outputs with these.

Run from the repository root with a Python that has torch, peft and gguf, e.g. the pinned
benchmark environment:  python cli/tests/data/peft/make_fixtures.py
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from gguf import GGUFReader
from torch import nn

import peft
from peft import BOFTConfig, OFTConfig, get_peft_model
import peft.tuners.boft.layer as boft_layer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
DIGITS = os.path.join(ROOT, "models", "digits")


def tensors(path):
    r = GGUFReader(path)
    out = {}
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]
        out[t.name] = np.array(t.data, dtype=np.float32).reshape(shape)
    return out


class MLP(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.layers = nn.ModuleList()
        i = 0
        while f"layers.{i}.weight" in w:
            out_f, in_f = w[f"layers.{i}.weight"].shape
            lin = nn.Linear(in_f, out_f)
            lin.weight.data = torch.tensor(w[f"layers.{i}.weight"])
            lin.bias.data = torch.tensor(w[f"layers.{i}.bias"])
            self.layers.append(lin)
            i += 1

    def forward(self, x):
        for i, l in enumerate(self.layers):
            x = l(x)
            if i + 1 < len(self.layers):
                x = torch.relu(x)
        return x


class BlockDiag(torch.autograd.Function):
    """Pure-torch stand-in for PEFT's CUDA FastBlockDiag: (N, D, H, H) -> (N, D*H, D*H)."""

    @staticmethod
    def forward(ctx, x):
        return torch.stack([torch.block_diag(*torch.unbind(x[i])) for i in range(x.shape[0])])

    @staticmethod
    def backward(ctx, g):
        raise NotImplementedError


def enable_multi_factor_boft():
    # Without its CUDA extension PEFT BOFT silently uses one butterfly factor; pretend the
    # extension is there and give it a CPU block-diagonal so that m > 1 can be exported.
    boft_layer._FBD_CUDA = object()
    boft_layer.FastBlockDiag = BlockDiag


def randomize(model, seed, scale):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith("boft_s"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "modules_to_save" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def make(name, config, seed, scale, inputs):
    w = tensors(os.path.join(DIGITS, "mlp.gguf"))
    model = get_peft_model(MLP(w), config)
    randomize(model, seed, scale)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor(inputs)).double().numpy()
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(
            {
                "peft_version": peft.__version__,
                "torch_version": torch.__version__,
                "base": "models/digits/mlp.gguf",
                "inputs": inputs.tolist(),
                "outputs": out.tolist(),
            },
            f,
        )
    print(name, "->", sorted(os.listdir(d)))


def main():
    torch.manual_seed(0)
    ds = tensors(os.path.join(DIGITS, "heldout-rotated.gguf"))
    inputs = ds["inputs"][:16].astype(np.float32)
    common = dict(target_modules=["layers.0", "layers.1"], init_weights=False)
    make("oft-exact", OFTConfig(oft_block_size=8, r=0, use_cayley_neumann=False, **common), 1, 0.1, inputs)
    make("oft-neumann", OFTConfig(oft_block_size=8, r=0, use_cayley_neumann=True, **common), 2, 0.02, inputs)
    enable_multi_factor_boft()
    make(
        "boft",
        BOFTConfig(
            boft_block_size=4,
            boft_n_butterfly_factor=2,
            target_modules=["layers.0", "layers.1"],
            modules_to_save=["layers.2"],
            init_weights=False,
        ),
        3,
        0.1,
        inputs,
    )


if __name__ == "__main__":
    sys.exit(main())
