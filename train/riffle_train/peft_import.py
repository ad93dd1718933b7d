"""Import PEFT OFT / BOFT adapter folders into riffle adapter files (gs-math.md sections 3, 10).

A PEFT folder holds ``adapter_config.json`` and ``adapter_model.safetensors``. Conversions:

* PEFT >= 0.16 OFT ``<module>.oft_R.weight`` ``(r, b(b-1)/2)``: packed exactly as riffle packs.
  Exact Cayley (``use_cayley_neumann = false``): PEFT's ``R = (I - S)(I + S)^{-1}`` applied as
  ``x @ R`` is the column operator ``R^T = C(S)``, riffle's block for the same ``S``: copied.
  Cayley-Neumann (``use_cayley_neumann``, PEFT's default): PEFT's truncated series
  ``I + 2S + ... + 2S^(t-2) + c S^(t-1)`` (``t = num_cayley_neumann_terms``; ``c = 1`` from PEFT
  0.18 on, ``c = 2`` in 0.16 and 0.17, whose configs carry no ``peft_version``) approximates ``(I + S)(I - S)^{-1}``, so its transpose
  approximates ``C(-S)``: the parameters are negated, and the truncation error (the largest
  spectral norm of ``R_series(S)^T - C(-S)`` over all blocks, computed in float64) is
  reported, stored in ``adapter.peft.truncation_error`` and refused above a limit.
  ``block_share`` (one row) is expanded to every block; ``coft`` applies PEFT's projection.
* PEFT < 0.16 OFT ``<module>.oft_r`` ``(r, b, b)`` and ``<module>.oft_s`` ``(out, 1)``: the skew
  part ``p = triu((A - A^T)/2)``, no sign change; ``oft_s`` becomes ``oft_scale``.
* PEFT BOFT ``<module>.boft_R`` ``(m, k, b, b)`` and ``boft_s`` ``(out, 1)``: riffle factor ``f`` is
  ``boft_R[m-1-f]`` packed as above (``m`` from the tensor, never from the config: PEFT without
  its CUDA extension silently trains one factor); ``boft_s`` becomes ``oft_scale``.
* Any other ``<module>.weight`` / ``.bias`` (PEFT ``modules_to_save``) replaces the base tensor
  of that name (a task head); a head whose size differs needs ``labels``.

Module names map to base tensors directly (``layers.0`` -> ``layers.0.weight``) or, for
``bert`` bases, from Hugging Face names to llama.cpp's (``encoder.layer.3.attention.self.query``
-> ``blk.3.attn_q.weight``; an optional ``bert.`` prefix is dropped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import gguf_io
from .gguf_io import F32, U32

DEFAULT_MAX_TRUNCATION_ERROR = 1e-2

HF_LINEAR = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
}


class ImportError_(ValueError):
    """A PEFT folder that cannot be imported (message says why)."""


# --------------------------------------------------------------------------- math helpers


def packed_len(b: int) -> int:
    return b * (b - 1) // 2


def block_size_of(n_packed: int) -> int | None:
    for b in range(2, 1025):
        if packed_len(b) == n_packed:
            return b
        if packed_len(b) > n_packed:
            return None
    return None


def skew(p: np.ndarray, b: int) -> np.ndarray:
    """(..., b(b-1)/2) -> (..., b, b) skew matrices (triu order)."""
    p = np.asarray(p, np.float64)
    s = np.zeros(p.shape[:-1] + (b, b))
    iu = np.triu_indices(b, 1)
    s[..., iu[0], iu[1]] = p
    return s - np.swapaxes(s, -1, -2)


def pack_skew_part(a: np.ndarray) -> np.ndarray:
    """``p = triu((A - A^T)/2)`` of full (..., b, b) blocks."""
    a = np.asarray(a, np.float64)
    b = a.shape[-1]
    iu = np.triu_indices(b, 1)
    s = (a - np.swapaxes(a, -1, -2)) / 2
    return s[..., iu[0], iu[1]]


def cayley(s: np.ndarray) -> np.ndarray:
    """riffle's ``C(S) = (I - S)^{-1}(I + S)`` for (..., b, b) skew matrices, float64."""
    eye = np.broadcast_to(np.eye(s.shape[-1]), s.shape)
    return np.linalg.solve(eye - s, eye + s)


def neumann_last_coefficient(peft_version: str | None) -> float:
    """Coefficient of the last term of PEFT's Cayley-Neumann series: 1 from PEFT 0.18 on, 2 in
    0.16 and 0.17. PEFT 0.18 is also the first to write ``peft_version`` into
    adapter_config.json (checked on 0.17.1 and 0.18.0), so a missing version means 2."""
    m = re.match(r"(\d+)\.(\d+)", peft_version or "")
    if not m:
        return 2.0
    return 1.0 if (int(m.group(1)), int(m.group(2))) >= (0, 18) else 2.0


def peft_neumann_series(s: np.ndarray, terms: int, last: float) -> np.ndarray:
    """PEFT's ``R = I + 2S + 2S^2 + ... + last * S^(terms-1)`` (``terms`` >= 1), float64."""
    eye = np.broadcast_to(np.eye(s.shape[-1]), s.shape)
    r = eye.copy()
    power = eye
    for j in range(1, terms):
        power = power @ s
        r = r + (last if j == terms - 1 and terms > 2 else 2.0) * power
    return r


def neumann_truncation_error(p_peft: np.ndarray, b: int, terms: int, last: float) -> float:
    """Largest spectral norm over blocks of ``R_series(S)^T - C(-S)`` (PEFT's operator minus
    riffle's exact block for the negated parameters), float64."""
    s = skew(p_peft, b)
    d = np.swapaxes(peft_neumann_series(s, terms, last), -1, -2) - cayley(-s)
    if d.size == 0:
        return 0.0
    return float(np.linalg.svd(d.reshape(-1, b, b), compute_uv=False).max())


def coft_project_packed(p: np.ndarray, b: int, eps: float) -> np.ndarray:
    """PEFT >= 0.16 ``_project_batch``: each block's skew matrix scaled to Frobenius norm
    at most ``eps / sqrt(r)``."""
    s = skew(p, b)
    lim = eps / np.sqrt(s.shape[0])
    norm = np.sqrt((s * s).sum(axis=(-1, -2), keepdims=True))
    s = np.where(norm <= lim, s, lim * s / np.where(norm == 0, 1, norm))
    iu = np.triu_indices(b, 1)
    return s[..., iu[0], iu[1]]


def coft_project_full(a: np.ndarray, eps: float) -> np.ndarray:
    """PEFT < 0.16 ``_project_batch`` on the full (r, b, b) blocks."""
    a = np.asarray(a, np.float64)
    lim = eps / np.sqrt(a.shape[0])
    norm = np.sqrt((a * a).sum(axis=(-1, -2), keepdims=True))
    return np.where(norm <= lim, a, lim * a / np.where(norm == 0, 1, norm))


# --------------------------------------------------------------------------- base model


@dataclass
class BaseInfo:
    path: Path
    arch: str
    model_id: str
    shapes: dict[str, tuple[int, ...]]
    kv: dict


def read_base(path: str | Path) -> BaseInfo:
    import gguf

    path = Path(path)
    r = gguf.GGUFReader(str(path))
    kv = gguf_io.read_kv(r)
    if kv.get("general.type", "model") != "model":
        raise ImportError_(f"{path}: general.type is {kv.get('general.type')!r}, not a base model")
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in r.tensors}
    mid = kv.get("riffle.model_id") or gguf_io.model_id(gguf_io.span_of_reader(r))
    return BaseInfo(path, kv["general.architecture"], mid, shapes, kv)


def compatible_ids(base: BaseInfo) -> list[str]:
    """``riffle.model_id`` of the other conversions of the same base next to it (same
    architecture, name, tensor names and shapes: the F16 / Q8_0 files of riffle-train's
    ``minilm convert``)."""
    import gguf

    out = []
    for p in sorted(base.path.parent.glob("*.gguf")):
        if p.resolve() == base.path.resolve():
            continue
        try:
            r = gguf.GGUFReader(str(p))
            kv = gguf_io.read_kv(r)
        except Exception:
            continue
        if kv.get("general.type") != "model" or kv.get("general.architecture") != base.arch:
            continue
        if kv.get("general.name") != base.kv.get("general.name"):
            continue
        shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in r.tensors}
        if shapes != base.shapes:
            continue
        mid = kv.get("riffle.model_id") or gguf_io.model_id(gguf_io.span_of_reader(r))
        if mid != base.model_id and mid not in out:
            out.append(mid)
    return out


def base_weight(base: BaseInfo, module: str) -> str | None:
    """The base weight a PEFT module path adapts."""
    direct = f"{module}.weight"
    if direct in base.shapes:
        return direct
    if base.arch == "bert":
        m = re.search(r"(?:^|\.)encoder\.layer\.(\d+)\.(.+)$", module)
        if m and m.group(2) in HF_LINEAR:
            name = f"blk.{m.group(1)}.{HF_LINEAR[m.group(2)]}.weight"
            if name in base.shapes:
                return name
    return None


def base_tensor_for_saved(base: BaseInfo, key: str) -> str | None:
    """The base tensor a ``modules_to_save`` tensor (``<module>.weight|bias``) replaces."""
    key = key.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")
    if key in base.shapes:
        return key
    if base.arch == "bert":
        from .minilm import gguf_name

        m = re.search(r"(?:^|\.)((?:encoder\.layer|embeddings)\..+)$", key)
        if m:
            try:
                name = gguf_name(m.group(1))
            except (KeyError, ValueError):
                name = None
            if name in base.shapes:
                return name
    return None


# --------------------------------------------------------------------------- import


@dataclass
class Layer:
    target: str
    factors: list[np.ndarray] = field(default_factory=list)  # packed, factor 0 first
    scale: np.ndarray | None = None


@dataclass
class ImportReport:
    peft_type: str
    peft_version: str
    method: str
    block_size: int
    factor_count: int
    layers: list[str]
    heads: list[str]
    neumann: bool
    neumann_terms: int | None
    neumann_last_coefficient: float | None
    truncation_error: float | None
    max_skew_frobenius: float
    bytes: int
    output: str
    base_model_id: str
    conversion: str

    def describe(self) -> str:
        s = (f"wrote {self.output}: PEFT {self.peft_version} {self.peft_type} ({self.method}, b={self.block_size}, "
             f"m={self.factor_count}) on {len(self.layers)} layer{'s' if len(self.layers) != 1 else ''}"
             f"{f' + {len(self.heads)} head tensors' if self.heads else ''}; {self.conversion} ({self.bytes} bytes)")
        if self.neumann:
            s += (f"\nnote: PEFT applies the {self.neumann_terms}-term Cayley-Neumann series (last coefficient "
                  f"{self.neumann_last_coefficient:g}); riffle applies the exact Cayley transform of the negated "
                  f"parameters. Truncation error: largest ||R_series^T - C(-S)||_2 over blocks = "
                  f"{self.truncation_error:.3e} (largest ||S||_F = {self.max_skew_frobenius:.3g})")
        return s


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k).double().numpy()
    return out


def import_peft(folder: str | Path, base: str | Path, output: str | Path, task: str | None = None,
                labels: list[str] | None = None,
                max_truncation_error: float = DEFAULT_MAX_TRUNCATION_ERROR) -> ImportReport:
    folder, output = Path(folder), Path(output)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.exists():
        raise ImportError_(f"{folder}: no adapter_config.json (give the PEFT adapter folder)")
    cfg = json.loads(cfg_path.read_text())
    peft_type = cfg.get("peft_type")
    if peft_type not in ("OFT", "BOFT"):
        raise ImportError_(f"{cfg_path}: peft_type is {peft_type!r}; riffle imports OFT and BOFT adapters")
    version = cfg.get("peft_version") or "unknown"  # written from PEFT 0.18 on
    if cfg.get("bias", "none") != "none":
        raise ImportError_(f"{cfg_path}: bias = {cfg['bias']!r}: adapters that train biases are not imported")
    if cfg.get("fan_in_fan_out"):
        raise ImportError_(f"{cfg_path}: fan_in_fan_out (Conv1D weights) is not supported")
    st_path = folder / "adapter_model.safetensors"
    if not st_path.exists():
        if (folder / "adapter_model.bin").exists():
            raise ImportError_(f"{folder}: adapter_model.bin (pickle) is not read; save with safe_serialization=True")
        raise ImportError_(f"{folder}: no adapter_model.safetensors")
    tensors = _load_safetensors(st_path)
    info = read_base(base)
    coft = bool(cfg.get("coft", False))
    eps = float(cfg.get("eps", 6e-5))
    neumann_terms = int(cfg.get("num_cayley_neumann_terms", 5))
    last = neumann_last_coefficient(cfg.get("peft_version"))

    layers: dict[str, Layer] = {}
    heads: list[tuple[str, np.ndarray]] = []
    sizes: set[int] = set()
    counts: set[int] = set()
    kinds: set[str] = set()
    trunc = 0.0
    max_fro = 0.0

    def layer(t: str) -> Layer:
        return layers.setdefault(t, Layer(t))

    suffixes = ((".oft_R.weight", "oft_R"), (".oft_r", "oft_r"), (".oft_s", "oft_s"),
                (".boft_R", "boft_R"), (".boft_s", "boft_s"))
    for key in sorted(tensors):
        val = tensors[key]
        name = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        kind = module = None
        for suf, k in suffixes:
            if name.endswith(suf):
                kind, module = k, name[:-len(suf)]
                break
        if kind is None:
            if re.search(r"\.(oft|boft)_\w+", name):
                raise ImportError_(f"{st_path}: tensor {key!r} is a PEFT parameter riffle does not know")
            tgt = base_tensor_for_saved(info, name)
            if tgt is None:
                raise ImportError_(f"{st_path}: tensor {key!r} matches no tensor of {base} "
                                   "(not an OFT/BOFT parameter or a saved module of this base)")
            heads.append((tgt, val))
            continue
        target = base_weight(info, module)
        if target is None:
            raise ImportError_(f"{st_path}: module {module!r} matches no weight of {base} (wrong base?)")
        shape = info.shapes[target]
        if len(shape) != 2:
            raise ImportError_(f"{st_path}: {module!r} is not a linear layer ({target} has shape {shape}); "
                               "riffle imports PEFT adapters of linear layers only")
        out_f, in_f = shape
        kinds.add(kind)
        if kind == "oft_R":
            if val.ndim != 2:
                raise ImportError_(f"{key}: shape {val.shape}, want (r, b(b-1)/2)")
            b = block_size_of(val.shape[1])
            if b is None or in_f % b:
                raise ImportError_(f"{key}: shape {val.shape} does not fit {target} (in = {in_f})")
            k = in_f // b
            if val.shape[0] not in (k, 1):
                raise ImportError_(f"{key}: {val.shape[0]} blocks, want {k} (or 1 with block_share)")
            p = coft_project_packed(val, b, eps) if coft else val
            p = np.repeat(p, k, axis=0) if p.shape[0] == 1 and k > 1 else p
            max_fro = max(max_fro, float(np.sqrt((skew(p, b) ** 2).sum(axis=(-1, -2))).max()))
            if cfg.get("use_cayley_neumann", True):
                trunc = max(trunc, neumann_truncation_error(p, b, neumann_terms, last))
                p = -p
            layer(target).factors = [p]
            sizes.add(b)
            counts.add(1)
        elif kind == "oft_r":
            if val.ndim != 3 or val.shape[1] != val.shape[2]:
                raise ImportError_(f"{key}: shape {val.shape}, want (r, b, b)")
            b = val.shape[1]
            if in_f % b or val.shape[0] not in (in_f // b, 1):
                raise ImportError_(f"{key}: shape {val.shape} does not fit {target} (in = {in_f})")
            a = coft_project_full(val, eps) if coft else val
            p = pack_skew_part(a)
            p = np.repeat(p, in_f // b, axis=0) if p.shape[0] == 1 and in_f // b > 1 else p
            max_fro = max(max_fro, float(np.sqrt((skew(p, b) ** 2).sum(axis=(-1, -2))).max()))
            layer(target).factors = [p]
            sizes.add(b)
            counts.add(1)
        elif kind == "boft_R":
            if val.ndim != 4 or val.shape[2] != val.shape[3]:
                raise ImportError_(f"{key}: shape {val.shape}, want (m, k, b, b)")
            m, kk, b = val.shape[0], val.shape[1], val.shape[2]
            if in_f % b or kk not in (in_f // b, 1):
                raise ImportError_(f"{key}: shape {val.shape} does not fit {target} (in = {in_f})")
            facs = []
            for f in range(m):
                p = pack_skew_part(val[m - 1 - f])  # riffle factor f = PEFT butterfly level m-1-f
                p = np.repeat(p, in_f // b, axis=0) if p.shape[0] == 1 and in_f // b > 1 else p
                max_fro = max(max_fro, float(np.sqrt((skew(p, b) ** 2).sum(axis=(-1, -2))).max()))
                facs.append(p)
            layer(target).factors = facs
            sizes.add(b)
            counts.add(m)
        else:  # oft_s / boft_s: (out, 1)
            if val.size != out_f or val.shape[0] != out_f:
                raise ImportError_(f"{key}: shape {val.shape}, want ({out_f}, 1)")
            layer(target).scale = val.reshape(out_f)
    if not layers:
        raise ImportError_(f"{st_path}: holds no OFT or BOFT parameters")
    for l in layers.values():
        if not l.factors:
            raise ImportError_(f"{st_path}: {l.target} has a scale but no rotation parameters")
    if len(sizes) > 1 or len(counts) > 1:
        raise ImportError_(f"{st_path}: layers use different block sizes {sorted(sizes)} / factor counts "
                           f"{sorted(counts)}; a riffle adapter has one")
    b, m = sizes.pop(), counts.pop()
    method, perm = ("boft", "butterfly") if peft_type == "BOFT" else ("oft", "none")
    if method == "boft" and m > 1:
        from .layers import check_chain_shape

        for l in layers.values():
            try:
                check_chain_shape(info.shapes[l.target][1], b, m, perm)
            except ValueError as e:
                raise ImportError_(f"{l.target}: {e}") from None
    neumann = peft_type == "OFT" and "oft_R" in kinds and bool(cfg.get("use_cayley_neumann", True))
    if neumann and trunc > max_truncation_error:
        raise ImportError_(
            f"{folder}: PEFT's {neumann_terms}-term Cayley-Neumann series differs from the exact Cayley "
            f"transform by up to {trunc:.3e} (spectral norm, per block), above the accepted "
            f"{max_truncation_error:g}; pass a larger max_truncation_error (--max-truncation-error) to import "
            "it anyway")
    head_names = []
    for name, val in heads:
        want = info.shapes[name]
        if tuple(val.shape) != want:
            if labels is None:
                raise ImportError_(f"{name}: shape {tuple(val.shape)} differs from the base's {want} "
                                   "(a head with a new number of outputs needs labels)")
            if val.shape[0] != len(labels) or tuple(val.shape[1:]) != want[1:]:
                raise ImportError_(f"{name}: shape {tuple(val.shape)} does not fit {len(labels)} labels")
        head_names.append(name)

    task = task or folder.name
    order = list(info.shapes)
    tensors_out = []
    for l in sorted(layers.values(), key=lambda l: order.index(l.target)):
        for f, p in enumerate(l.factors):
            tensors_out.append((f"{l.target}.oft_in.{f}", np.ascontiguousarray(p, np.float32)))
        if l.scale is not None:
            tensors_out.append((f"{l.target}.oft_scale", np.ascontiguousarray(l.scale, np.float32)))
    for name, val in sorted(heads, key=lambda h: order.index(h[0])):
        tensors_out.append((name, np.ascontiguousarray(val, np.float32)))
    kv = {"general.type": "adapter", "general.name": f"{task} (imported from PEFT {version} {peft_type})",
          "adapter.type": "orthogonal", "adapter.orthogonal.method": method,
          "adapter.orthogonal.block_size": U32(b), "adapter.orthogonal.permutation": perm,
          "adapter.orthogonal.factor_count": U32(m), "adapter.base_model_id": info.model_id,
          "adapter.task_name": task}
    alt = compatible_ids(info)
    if alt:
        kv["adapter.compatible_model_ids"] = alt
    if labels:
        kv["adapter.labels"] = list(labels)
    kv["adapter.peft.version"] = version
    kv["adapter.peft.type"] = peft_type
    if neumann:
        kv["adapter.peft.cayley_neumann_terms"] = U32(neumann_terms)
        kv["adapter.peft.truncation_error"] = F32(trunc)
    facts = gguf_io.write_gguf(output, info.arch, kv, tensors_out, id_key="crc")
    if peft_type == "BOFT":
        conv = "boft_R[m-1-f] -> oft_in.f, skew part packed, no sign change; boft_s -> oft_scale"
    elif "oft_r" in kinds:
        conv = "oft_r skew part packed, no sign change; oft_s -> oft_scale"
    elif neumann:
        conv = "oft_R.weight negated (Cayley-Neumann)"
    else:
        conv = "oft_R.weight copied (exact Cayley)"
    if coft:
        conv += "; coft projection applied"
    return ImportReport(peft_type, version, method, b, m, [l.target for l in layers.values()], head_names,
                        neumann, neumann_terms if neumann else None, last if neumann else None,
                        trunc if neumann else None, max_fro, facts["bytes"], str(output), info.model_id, conv)


# --------------------------------------------------------------------------- float64 reference


def bert_outputs(base: str | Path, adapter: str | Path | None, ids: list[list[int]]) -> np.ndarray:
    """Mean-pooled final hidden states (or head logits when the adapter brings ``cls.*``) of
    base + adapter, unmerged, in float64 from the GGUF tensors as stored."""
    import torch

    from .minilm import apply_text_adapter, encoder_from_gguf

    enc, _ = encoder_from_gguf(base)
    if adapter is not None:
        apply_text_adapter(enc, adapter)
    enc = enc.double().eval()
    out = []
    with torch.no_grad():
        for x in ids:
            t = torch.tensor([x])
            out.append(enc(t, torch.ones_like(t))[0].numpy())
    return np.array(out)


def mlp_outputs(base: str | Path, adapter: str | Path | None, x: np.ndarray) -> np.ndarray:
    """Logits of an ``mlp`` base + adapter in float64 (``reference.py``)."""
    from . import reference

    bkv, bt, _ = gguf_io.read_tensors(base)
    at = None
    if adapter is not None:
        akv, at, _ = gguf_io.read_tensors(adapter)
        at["__meta__"] = {"permutation": akv["adapter.orthogonal.permutation"],
                          "block_size": akv["adapter.orthogonal.block_size"]}
    t, ops = reference.effective_tensors(bt, at)
    return reference.mlp_forward(x, t, ops, bkv["mlp.layer_count"])
