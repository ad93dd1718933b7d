"""Adapters for the benchmarks (timing only: random parameters, no training).

* PEFT OFT (b = 8, exact Cayley) and BOFT (b = 8, 2 butterfly factors) on every linear
  layer of all-MiniLM-L6-v2, two adapters each (``a``, ``b``), with PEFT's own random
  initialisation (``init_weights=False``, seeded), saved with ``save_pretrained``.
* The same parameters converted to riffle GGUF adapters (F32 and F16) following
  gs-math.md section 10 (in Python, independently of ``riffle import-peft``, so the two
  conversions check each other), and checked against PEFT's own outputs.
* GSOFT b = 8 (2 factors, gs permutation, per-output scale) on every linear layer with
  random small parameters (riffle-only method: PEFT has no GSOFT) for the latency table.

Everything is written under bench/out/adapters/ (ignored).
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from common import BLOCK, HF_TO_GGUF, MODEL_F32, OUT, PEFT_TARGETS, ROOT, log

ADIR = OUT / "adapters"
BOFT_FACTORS = 2


class _CpuBlockDiag:
    """Stand-in for PEFT's ``fbd_cuda`` extension on CPU: the same block-diagonal
    assembly (N, D, b, b) -> (N, D*b, D*b) in torch. Without it PEFT BOFT silently forces
    one butterfly factor on a machine without CUDA (gs-math.md section 12, item 4)."""

    @staticmethod
    def forward(x):
        n, d, h, _ = x.shape
        out = x.new_zeros(n, d, h, d, h)
        idx = torch.arange(d)
        out[:, idx, :, idx, :] = x.transpose(0, 1)
        return [out.reshape(n, d * h, d * h)]

    @staticmethod
    def backward(grad, x):
        n, d, h, _ = x.shape
        g = grad.reshape(n, d, h, d, h)
        idx = torch.arange(d)
        return [g[:, idx, :, idx, :].transpose(0, 1).contiguous()]


def enable_cpu_butterfly() -> None:
    import peft.tuners.boft.layer as boft_layer

    boft_layer._FBD_CUDA = _CpuBlockDiag()


def peft_config(method: str):
    from peft import BOFTConfig, OFTConfig

    if method == "oft":
        return OFTConfig(r=0, oft_block_size=BLOCK, target_modules=PEFT_TARGETS, module_dropout=0.0,
                         use_cayley_neumann=False, init_weights=False, bias="none")
    if method == "boft":
        return BOFTConfig(boft_block_size=BLOCK, boft_n_butterfly_factor=BOFT_FACTORS,
                          target_modules=PEFT_TARGETS, boft_dropout=0.0, init_weights=False, bias="none")
    raise ValueError(method)


def peft_model(base, method: str, names=("a", "b"), seed: int = 0):
    """A PeftModel over a deep copy of ``base`` with adapters ``names`` (first active)."""
    from peft import get_peft_model

    if method == "boft":
        enable_cpu_butterfly()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(copy.deepcopy(base), peft_config(method), adapter_name=names[0])
        for n in names[1:]:
            pm.add_adapter(n, peft_config(method))
    pm.set_adapter(names[0])
    pm.eval()
    return pm


def _gguf_layer(hf_name: str) -> str:
    # "base_model.model.encoder.layer.3.attention.self.query" -> "blk.3.attn_q.weight"
    rest = hf_name.split("encoder.layer.", 1)[1]
    i, mod = rest.split(".", 1)
    return f"blk.{i}.{HF_TO_GGUF[mod]}.weight"


def _packed(a: torch.Tensor) -> np.ndarray:
    b = a.shape[-1]
    iu = torch.triu_indices(b, b, 1)
    skew = (a - a.transpose(-1, -2)) / 2
    return skew[..., iu[0], iu[1]].detach().numpy()


def riffle_tensors_from_peft(pm, method: str, name: str) -> list[tuple[str, np.ndarray]]:
    """gs-math.md section 10: OFT ``oft_R.weight`` (r, b(b-1)/2) copied (exact Cayley);
    BOFT ``boft_R`` (m, k, b, b) -> ``oft_in.f`` = packed skew part of factor m-1-f,
    ``boft_s`` (out, 1) -> ``oft_scale``."""
    out = []
    for mname, mod in pm.named_modules():
        if method == "oft" and hasattr(mod, "oft_R") and name in getattr(mod, "oft_R", {}):
            out.append((f"{_gguf_layer(mname)}.oft_in.0", mod.oft_R[name].weight.detach().numpy().copy()))
        elif method == "boft" and hasattr(mod, "boft_R") and name in getattr(mod, "boft_R", {}):
            r = mod.boft_R[name].detach()
            m = r.shape[0]
            t = _gguf_layer(mname)
            for f in range(m):
                out.append((f"{t}.oft_in.{f}", _packed(r[m - 1 - f])))
            out.append((f"{t}.oft_scale", mod.boft_s[name].detach().reshape(-1).numpy().copy()))
    return out


def _base_ids() -> tuple[str, list[str]]:
    from riffle_train import gguf_io

    ids = {p.name: gguf_io.read_kv_only(p)["riffle.model_id"] for p in sorted(MODEL_F32.parent.glob("minilm-*.gguf"))}
    return ids[MODEL_F32.name], list(ids.values())


def write_riffle_adapter(path: Path, method: str, factors: int, tensors, dtype, task: str) -> int:
    from riffle_train import gguf_io
    from riffle_train.gguf_io import U32

    perm = {"oft": "none", "boft": "butterfly", "gsoft": "gs"}[method]
    base_id, compat = _base_ids()
    kv = {"general.type": "adapter",
          "general.name": f"all-MiniLM-L6-v2 benchmark adapter {task} ({method}, b={BLOCK}, random parameters)",
          "adapter.type": "orthogonal", "adapter.orthogonal.method": method,
          "adapter.orthogonal.block_size": U32(BLOCK), "adapter.orthogonal.permutation": perm,
          "adapter.orthogonal.factor_count": U32(factors), "adapter.base_model_id": base_id,
          "adapter.compatible_model_ids": compat, "adapter.task_name": task}
    facts = gguf_io.write_gguf(path, "bert", kv, [(n, a.astype(dtype)) for n, a in tensors], id_key="crc")
    return facts["bytes"]


def gsoft_tensors(seed: int) -> list[tuple[str, np.ndarray]]:
    """GSOFT b = 8, two factors on the input side, per-output scale, on all 36 linears."""
    rng = np.random.default_rng(seed)
    shapes = {"attn_q": (384, 384), "attn_k": (384, 384), "attn_v": (384, 384),
              "attn_output": (384, 384), "ffn_up": (1536, 384), "ffn_down": (384, 1536)}
    p = BLOCK * (BLOCK - 1) // 2
    out = []
    for i in range(6):
        for w, (o, n) in shapes.items():
            t = f"blk.{i}.{w}.weight"
            for f in range(2):
                out.append((f"{t}.oft_in.{f}", (0.05 * rng.standard_normal((n // BLOCK, p))).astype(np.float32)))
            out.append((f"{t}.oft_scale", (1 + 0.02 * rng.standard_normal(o)).astype(np.float32)))
    return out


def _dir_bytes(d: Path) -> int:
    f = next(d.rglob("adapter_model.safetensors"))
    return f.stat().st_size


def build(base, tok, texts) -> dict:
    """Writes every adapter; returns a manifest (paths, sizes, parameter counts, checks)."""
    from common import cosine, riffle_embed

    ADIR.mkdir(parents=True, exist_ok=True)
    man: dict = {"peft": {}, "gsoft": {}}
    text, ids = texts[64]
    x = torch.tensor([ids])
    for method in ("oft", "boft"):
        pm = peft_model(base, method)
        entry = {"factors": 1 if method == "oft" else BOFT_FACTORS, "adapters": {}}
        for name in ("a", "b"):
            d = ADIR / f"peft-{method}-{name}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pm.save_pretrained(str(d), selected_adapters=[name])
            tensors = riffle_tensors_from_peft(pm, method, name)
            paths = {}
            for dt, np_dt in (("f32", np.float32), ("f16", np.float16)):
                p = ADIR / f"minilm-{method}-{name}-{dt}.gguf"
                paths[dt] = {"path": str(p.relative_to(ROOT)),
                             "bytes": write_riffle_adapter(p, method, entry["factors"], tensors, np_dt, name)}
            n_params = sum(int(a.size) for _, a in tensors)
            pat = re.compile(rf"\.(oft_R|boft_R|boft_s)\.{name}(\.|$)")
            peft_params = sum(int(p.numel()) for n, p in pm.named_parameters() if pat.search(n))
            # check: PEFT's own unmerged output against riffle's, same text, same parameters
            pm.set_adapter(name)
            with torch.no_grad():
                h = pm(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
                ref = h.mean(1)[0].numpy()
            row = riffle_embed(text, ADIR / f"minilm-{method}-{name}-f32.gguf")
            cos = cosine(ref, row["output"])
            row_m = riffle_embed(text, ADIR / f"minilm-{method}-{name}-f32.gguf", merge=True)
            cos_m = cosine(ref, row_m["output"])
            log(f"{method}/{name}: riffle (unmerged, merged) vs PEFT cosine {cos:.7f}, {cos_m:.7f}")
            entry["adapters"][name] = {"peft_dir": str(d.relative_to(ROOT)), "peft_bytes": _dir_bytes(d),
                                       "riffle": paths, "riffle_params": n_params, "peft_params": peft_params,
                                       "cosine_vs_peft_unmerged": cos, "cosine_vs_peft_merged": cos_m}
        pm.set_adapter("a")
        man["peft"][method] = entry
    for name, seed in (("a", 1), ("b", 2)):
        tensors = gsoft_tensors(seed)
        p = ADIR / f"minilm-gsoft-{name}-f16.gguf"
        man["gsoft"][name] = {"path": str(p.relative_to(ROOT)),
                              "bytes": write_riffle_adapter(p, "gsoft", 2, tensors, np.float16, f"gsoft-{name}"),
                              "params": sum(int(a.size) for _, a in tensors)}
    (ADIR / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man


if __name__ == "__main__":
    from common import hf_model, hf_tokenizer, texts_of_length

    tok = hf_tokenizer()
    print(json.dumps(build(hf_model(), tok, texts_of_length(tok)), indent=1))
