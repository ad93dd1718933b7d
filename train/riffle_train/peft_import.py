"""PEFT OFT / BOFT adapter folders into riffle adapter files: the conversion is the riffle
CLI's, ``riffle import-peft`` (``cli/src/cmd/import_peft.rs``, docs/cli.md, gs-math.md sections 3
and 10), the one implementation; this module runs it and adds what the training path needs
around it:

* :func:`import_peft` runs ``riffle import-peft`` and reads the written file back into an
  :class:`ImportReport`; for a Cayley-Neumann adapter it computes, in float64, the truncation
  error (the largest spectral norm of ``R_series(S)^T - C(-S)`` over all blocks, PEFT's series
  against the exact Cayley block riffle applies) and refuses the import above a limit.
* float64 references of the conversions' mathematics (:func:`skew`, :func:`cayley`,
  :func:`peft_neumann_series`, ...) and of the adapted models (:func:`bert_outputs`,
  :func:`mlp_outputs`), with which the tests check the CLI's files against PEFT's outputs.

The CLI is found at ``$RIFFLE_BIN``, else ``target/release/riffle`` of this checkout, else
``riffle`` on ``PATH`` (``cargo build --release -p riffle-cli`` builds it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import gguf_io

DEFAULT_MAX_TRUNCATION_ERROR = 1e-2


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


# --------------------------------------------------------------------------- import (the CLI)


def riffle_cli() -> Path | None:
    """The riffle CLI: ``$RIFFLE_BIN``, this checkout's ``target/release/riffle``, or ``riffle``
    on ``PATH``; ``None`` when there is none."""
    env = os.environ.get("RIFFLE_BIN")
    if env:
        return Path(env)
    built = Path(__file__).resolve().parents[2] / "target" / "release" / "riffle"
    if built.exists():
        return built
    found = shutil.which("riffle")
    return Path(found) if found else None


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
    output: str
    cli_output: str

    def describe(self) -> str:
        s = self.cli_output.rstrip()
        if self.neumann:
            s += (f"\ntruncation error (float64, last coefficient {self.neumann_last_coefficient:g}): largest "
                  f"||R_series^T - C(-S)||_2 over blocks = {self.truncation_error:.3e}")
        return s


def import_peft(folder: str | Path, base: str | Path, output: str | Path, task: str | None = None,
                labels: list[str] | None = None,
                max_truncation_error: float = DEFAULT_MAX_TRUNCATION_ERROR) -> ImportReport:
    """``riffle import-peft folder --base base -o output [--task] [--labels]``, then the report
    of the written file. Raises :class:`ImportError_` with the CLI's message when it refuses the
    folder (exit 2), and when a Cayley-Neumann adapter's truncation error exceeds
    ``max_truncation_error`` (the file is removed then)."""
    exe = riffle_cli()
    if exe is None:
        raise ImportError_("the riffle CLI is not built (cargo build --release -p riffle-cli) and RIFFLE_BIN is unset")
    cmd = [str(exe), "import-peft", str(folder), "--base", str(base), "-o", str(output)]
    if task:
        cmd += ["--task", task]
    if labels:
        cmd += ["--labels", ",".join(labels)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode == 2:
        raise ImportError_(r.stderr.strip().removeprefix("riffle: "))
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    kv, tensors, _ = gguf_io.read_tensors(output)
    b = int(kv["adapter.orthogonal.block_size"])
    terms = kv.get("adapter.peft.cayley_neumann_terms")
    neumann = terms is not None
    version = kv.get("adapter.peft.version", "unknown")
    last = trunc = None
    if neumann:
        last = neumann_last_coefficient(None if version == "unknown" else version)
        # The file holds riffle's parameters, PEFT's negated.
        trunc = max((neumann_truncation_error(-np.asarray(t, np.float64), b, int(terms), last)
                     for name, t in tensors.items() if ".oft_in." in name), default=0.0)
        if trunc > max_truncation_error:
            Path(output).unlink()
            raise ImportError_(f"{folder}: Cayley-Neumann truncation error {trunc:.3e} exceeds "
                               f"{max_truncation_error:g} (PEFT's series is far from the exact Cayley transform "
                               "riffle applies; pass a larger max_truncation_error to import anyway)")
    layers = sorted({name.split(".oft_")[0] for name in tensors if ".oft_" in name})
    heads = sorted(name for name in tensors if ".oft_" not in name)
    return ImportReport(kv.get("adapter.peft.type", "?"), version, kv["adapter.orthogonal.method"], b,
                        int(kv["adapter.orthogonal.factor_count"]), layers, heads, neumann,
                        int(terms) if neumann else None, last, trunc, str(output), r.stdout)


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
