"""CPU kernels for two-factor GS chains of ``8 x 8`` blocks (``gs_kernel.c``), built at first use.

On a CPU the grouped form of a GS chain (``OrthogonalChain.group_matrices``) spends ``64``
multiply-adds per feature in a batched product, plus copies to regroup the features and back;
these kernels apply the two factors directly, one group of 64 features at a time over all rows,
``16`` multiply-adds per feature and no copy, and compute the blocks' gradients in the same pass
as the input's. :class:`layers._GroupedAdaptedLinear` takes them for float32 CPU tensors. They
run on the calling thread (the C functions take a range of groups, so a caller could split
them; Python threads were tried and cost more than they saved: 39 -> 95 µs for 576 features).

The library is compiled once per source and CPU with the system C compiler (``cc -O3
-march=native``) into ``~/.cache/riffle/kernels`` (``RIFFLE_CACHE`` moves ``~/.cache/riffle``);
without a compiler, or with ``RIFFLE_TRAIN_KERNELS=0``, :func:`available` is false and the
layers run their PyTorch form (same results to rounding).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("gs_kernel.c")
ENV = "RIFFLE_TRAIN_KERNELS"


def _cache_dir() -> Path:
    return Path(os.environ.get("RIFFLE_CACHE") or Path.home() / ".cache" / "riffle") / "kernels"


def _cpu_tag() -> str:
    """What ``-march=native`` depends on: the CPU's model name and flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def library_path() -> Path:
    """Where the library for this source and CPU is cached (built there when missing)."""
    key = hashlib.sha256(SOURCE.read_bytes() + _cpu_tag().encode()).hexdigest()[:16]
    return _cache_dir() / f"gs_kernel-{key}.so"


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None or not SOURCE.is_file():
        return None
    out = library_path()
    if not out.exists():
        # Built next to its final name, then renamed: a concurrent process (a DDP rank) never
        # loads a half-written library.
        tmp = None
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so")
            os.close(fd)
            subprocess.run([cc, "-O3", "-march=native", "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
                           check=True, capture_output=True, timeout=120)
            os.replace(tmp, out)
        except (OSError, subprocess.SubprocessError) as e:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            warnings.warn(f"riffle_train: GS chain kernels not built ({e}); using the PyTorch form")
            return None
    try:
        lib = ctypes.CDLL(str(out))
    except OSError as e:  # a damaged cache entry: the PyTorch form, and say so
        warnings.warn(f"riffle_train: GS chain kernels not loaded from {out} ({e}); using the PyTorch form")
        return None
    f32p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.gs8_apply.argtypes = [f32p, f32p, i64, i64, i64, i64, f32p, f32p, ctypes.c_int]
    lib.gs8_apply.restype = None
    lib.gs8_backward.argtypes = [f32p, f32p, f32p, f32p, f32p, i64, i64, i64, i64, f32p, f32p]
    lib.gs8_backward.restype = None
    lib.gs8_cayley.argtypes = [f32p, f32p, i64]
    lib.gs8_cayley.restype = None
    return lib


def available() -> bool:
    """Whether the kernels are enabled (``RIFFLE_TRAIN_KERNELS`` is not ``0``, read at each call)
    and built, or can be, on this machine."""
    return os.environ.get(ENV, "1") != "0" and _library() is not None


def applies(x: torch.Tensor, b: int, n: int) -> bool:
    """Whether :func:`apply` / :func:`backward` take ``x``: float32 on the CPU, ``b = 8``, ``n``
    a multiple of 64, and the library available."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and b == 8 and n % 64 == 0 and available()


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _checked(x: torch.Tensor, blocks: torch.Tensor, *others: torch.Tensor) -> tuple[int, int]:
    """``(k, s)`` for rows ``x`` of ``n = 64 s`` features and blocks ``(2k, 8, 8)``, every tensor
    float32 on the CPU and ``others`` shaped as ``x``; the C code trusts these sizes, so
    anything else is a ``ValueError`` here."""
    n = x.shape[-1] if x.dim() else 0
    k = n // 8
    ok = (n > 0 and n % 64 == 0 and tuple(blocks.shape) == (2 * k, 8, 8)
          and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (x, blocks, *others))
          and all(t.shape == x.shape for t in others))
    if not ok:
        raise ValueError(f"gs_kernel: rows of {n} features (a multiple of 64) and (2k, 8, 8) float32 CPU blocks "
                         f"expected, got {tuple(x.shape)} {x.dtype} and {tuple(blocks.shape)} {blocks.dtype}")
    return k, n // 64


def apply(x: torch.Tensor, blocks: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``Q x`` (``Q^T x``) along the last dimension; ``blocks`` is ``(2k, 8, 8)``, factor 0's
    ``k`` blocks first (as :func:`layers.cayley` of the concatenated parameters)."""
    lib = _library()
    k, s = _checked(x, blocks)
    n = 64 * s
    xc = x.detach().reshape(-1, n).contiguous()
    bc = blocks.detach().contiguous()
    y = torch.empty_like(xc)
    px, py, pb, rows = _ptr(xc), _ptr(y), _ptr(bc), xc.shape[0]
    lib.gs8_apply(px, py, rows, s, 0, s, pb, pb + 4 * k * 64, int(transpose))
    return y.view(x.shape)


def backward(x: torch.Tensor, dy: torch.Tensor, blocks: torch.Tensor,
             need_x: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """For ``y = Q x``: ``Q^T dy`` (``None`` unless ``need_x``) and the gradient with respect to
    ``blocks`` (``(2k, 8, 8)``), summed over every row."""
    lib = _library()
    k, s = _checked(x, blocks, dy)
    n = 64 * s
    xc = x.detach().reshape(-1, n).contiguous()
    dc = dy.detach().reshape(-1, n).contiguous()
    bc = blocks.detach().contiguous()
    dx = torch.empty_like(xc) if need_x else None
    db = torch.empty_like(bc)
    px, pd, pdx, pdb, pb, rows = _ptr(xc), _ptr(dc), (_ptr(dx) if dx is not None else None), _ptr(db), _ptr(bc), xc.shape[0]
    lib.gs8_backward(px, pd, pdx, pdb, pdb + 4 * k * 64, rows, s, 0, s, pb, pb + 4 * k * 64)
    return (dx.view(x.shape) if dx is not None else None), db


def cayley(packed: torch.Tensor) -> torch.Tensor:
    """Cayley blocks ``(I - S)^{-1} (I + S)`` of packed ``8 x 8`` skew parameters ``(blocks, 28)``
    (float32 on the CPU), as :func:`layers.cayley` computes them (to float32 rounding)."""
    if packed.dim() != 2 or packed.shape[1] != 28 or packed.dtype != torch.float32 or packed.device.type != "cpu":
        raise ValueError(f"gs_kernel: (blocks, 28) float32 CPU parameters expected, got {tuple(packed.shape)} "
                         f"{packed.dtype}")
    p = packed.detach().contiguous()
    c = torch.empty(p.shape[0], 8, 8)
    _library().gs8_cayley(_ptr(p), _ptr(c), p.shape[0])
    return c
