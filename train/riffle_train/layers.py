"""Orthogonal adapter layers: chains of permuted block-diagonal Cayley factors.

Conventions are those of ``docs/gs-math.md`` (normative):

* packed skew parameters, one row of ``b(b-1)/2`` values per block, in the order of
  ``torch.triu_indices(b, b, 1)``;
* Cayley sign ``C(S) = (I + S)(I - S)^{-1}`` (computed as ``solve(I - S, I + S)``,
  batched over the blocks of a factor);
* a factor is ``P_pi^T blockdiag(B) P_pi`` with ``pi`` a gather table; a chain is
  ``Q = F_{m-1} ... F_0`` (factor 0 applied first);
* permutations: ``none`` (identity), ``gs`` (factor f uses sigma^f with
  ``sigma(i) = (i mod b) k + i // b``), ``butterfly`` (factor f uses level m-1-f);
* an adapted layer computes ``y = s * (Q_out (W (Q_in x))) + bias``.

The unmerged forward of a Linear applies the chains to the activations with gathers
and batched block matmuls; no dense ``n x n`` matrix is formed. While training, the
``lean`` path (the CPU default) runs it as one autograd function that keeps only the
layer input (and its parameters) for the backward pass and recomputes the rest
there; ``plain`` records every operation (see :data:`ADAPTER_PATHS`). Convolutions apply
``Q_in`` / ``Q_out`` to the weight viewed as an ``(out, in*kh*kw)`` matrix (row-major
flattening), which costs ``out*in*kh*kw*b`` MACs per factor and again forms no dense Q.
:class:`WeightBank` (the default for CUDA models) batches that weight-side form over every
layer of a model, which on a GPU is much cheaper than a dozen small launches per layer.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F

METHODS = ("gsoft", "double_gsoft", "oft", "boft", "gs")
PERMUTATIONS = ("none", "gs", "butterfly")
#: How :func:`inject`'s unmerged layers compute while training (``path=`` or the environment
#: variable ``RIFFLE_ADAPTER_PATH``):
#:
#: * ``lean``: each linear through one autograd function that keeps only the input for the
#:   backward pass, besides references to parameters (and, for GS chains of the grouped form,
#:   their Cayley blocks), and recomputes the rest there: :class:`_GroupedAdaptedLinear` where
#:   every chain is :meth:`OrthogonalChain.paired`, :class:`_LeanAdaptedLinear` otherwise;
#: * ``lean_keep`` (the CPU default): as ``lean``, but also keeps each linear's output ``y``
#:   (often kept downstream anyway) and recovers ``W Q_in x`` from it in backward instead of
#:   recomputing that product (faster, more memory; with a zero scale entry it falls back to
#:   ``lean``);
#: * ``plain``: each linear's operations recorded by autograd one by one (keeps every
#:   factor's input, the rotated input and the pre-scale output);
#: * ``bank``: :class:`WeightBank` (adapted weights of all layers per forward, batched);
#: * ``bank_lean``: the bank with ``memory_efficient`` (no adapted weight kept for backward).
ADAPTER_PATHS = ("lean", "lean_keep", "plain", "bank", "bank_lean")
PATH_ENV = "RIFFLE_ADAPTER_PATH"


def default_device() -> torch.device:
    """CUDA when available, else CPU (the same code runs on both)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def packed_len(b: int) -> int:
    return b * (b - 1) // 2


# --------------------------------------------------------------------------- permutations


def gs_shuffle(n: int, b: int) -> list[int]:
    k = n // b
    return [(i % b) * k + i // b for i in range(n)]


def butterfly_level(n: int, b: int, level: int) -> list[int]:
    """Gather table of butterfly level ``level`` (gs-math.md section 4)."""
    if level == 0:
        return list(range(n))
    h = b // 2
    span = b << level
    out = []
    for j in range(n):
        base = j // span * span
        local = j - base
        q, e = divmod(local, h)
        c = q // 2 if q % 2 == 0 else (1 << level) + (q - 1) // 2
        out.append(base + c * h + e)
    return out


def factor_permutation(kind: str, n: int, b: int, m: int, f: int) -> list[int]:
    """Gather table ``pi`` of factor ``f`` of an ``m``-factor chain."""
    if kind == "none":
        return list(range(n))
    if kind == "gs":
        sigma = gs_shuffle(n, b)
        pi = list(range(n))
        for _ in range(f):  # sigma^f: sigma applied f times to the index
            pi = [sigma[j] for j in pi]
        return pi
    if kind == "butterfly":
        return butterfly_level(n, b, m - 1 - f)
    raise ValueError(f"unknown permutation {kind!r}")


def inverse_permutation(pi: Sequence[int]) -> list[int]:
    inv = [0] * len(pi)
    for i, p in enumerate(pi):
        inv[p] = i
    return inv


def check_chain_shape(n: int, b: int, m: int, kind: str) -> None:
    if b < 2:
        raise ValueError(f"block size {b} < 2")
    if n <= 0 or n % b:
        raise ValueError(f"block size {b} does not divide width {n}")
    if m < 1:
        raise ValueError(f"factor count {m} < 1")
    if kind not in PERMUTATIONS:
        raise ValueError(f"unknown permutation {kind!r}")
    if kind == "butterfly" and m > 1 and (b % 2 or n % (b << (m - 1))):
        raise ValueError(f"butterfly needs even b and b*2^(m-1) | n (n={n}, b={b}, m={m})")


# --------------------------------------------------------------------------- Cayley


def skew_from_packed(p: torch.Tensor, b: int) -> torch.Tensor:
    """``(..., b(b-1)/2)`` packed parameters -> ``(..., b, b)`` skew matrices."""
    iu = torch.triu_indices(b, b, 1, device=p.device)
    s = p.new_zeros(p.shape[:-1] + (b, b))
    s[..., iu[0], iu[1]] = p
    return s - s.transpose(-1, -2)


@functools.lru_cache(maxsize=None)
def _minus_skew_index(b: int, device: torch.device) -> torch.Tensor:
    """Gather table from ``[0, p, -p]`` to the ``b*b`` entries of ``-S`` (row-major)."""
    packed = {(i, j): t for t, (i, j) in enumerate(torch.triu_indices(b, b, 1).T.tolist())}
    npk = len(packed)
    idx = [0 if r == c else (1 + npk + packed[(r, c)] if r < c else 1 + packed[(c, r)])
           for r in range(b) for c in range(b)]
    return torch.tensor(idx, dtype=torch.long, device=device)


@functools.lru_cache(maxsize=None)
def _eye(b: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.eye(b, dtype=dtype, device=device)


def cayley(p: torch.Tensor, b: int) -> torch.Tensor:
    """Cayley blocks ``C(S) = (I - S)^{-1} (I + S)`` for packed parameters ``(..., P)``.

    ``I - S`` is gathered from ``[0, p, -p]`` in one indexing operation and ``I + S`` is its
    transpose, so a whole set of blocks costs a handful of kernels and one batched solve.
    ``I - S`` is never singular for a real skew ``S`` (its eigenvalues are ``1 - i*lambda``),
    so the solve skips the error check, which on a GPU would wait for the device.
    """
    zero = p.new_zeros(()).expand(p.shape[:-1] + (1,))
    ext = torch.cat([zero, p, -p], -1)
    a = ext.index_select(-1, _minus_skew_index(b, p.device)).unflatten(-1, (b, b)) + _eye(b, p.dtype, p.device)
    return torch.linalg.solve_ex(a, a.mT).result


def packed_from_blocks(a: torch.Tensor) -> torch.Tensor:
    """Packed parameters ``p_ij = (A_ij - A_ji)/2`` of full ``(..., b, b)`` tensors."""
    b = a.shape[-1]
    iu = torch.triu_indices(b, b, 1, device=a.device)
    skew = (a - a.transpose(-1, -2)) / 2
    return skew[..., iu[0], iu[1]]


# --------------------------------------------------------------------------- chains


class OrthogonalChain(nn.Module):
    """``Q = F_{m-1} ... F_0`` on a side of width ``n``; parameters packed per factor.

    ``params[f]`` has shape ``(n/b, b(b-1)/2)``, exactly the ``T.oft_in.{f}`` tensor
    of format.md. Zero parameters give ``Q = I`` exactly.
    """

    def __init__(self, n: int, block_size: int, factors: int = 2, permutation: str = "gs",
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        check_chain_shape(n, block_size, factors, permutation)
        self.n, self.b, self.m, self.permutation = n, block_size, factors, permutation
        self.k = n // block_size
        self.params = nn.ParameterList(
            nn.Parameter(torch.zeros(self.k, packed_len(block_size), dtype=dtype, device=device))
            for _ in range(factors))
        pis = [factor_permutation(permutation, n, block_size, factors, f) for f in range(factors)]
        invs = [inverse_permutation(pi) for pi in pis]
        # Forward Q: gather g_f = x[pi_f]; u = B g; y = u[inv_f]. Consecutive scatter/gather
        # pairs are fused into one gather: g_{f+1} = u_f[inv_f[pi_{f+1}]].
        fwd = [pis[0]] + [[invs[f - 1][j] for j in pis[f]] for f in range(1, factors)]
        fwd.append(invs[-1])
        # Transpose Q^T: factors m-1 .. 0 with transposed blocks.
        order = list(range(factors - 1, -1, -1))
        bwd = [pis[order[0]]] + [[invs[order[i - 1]][j] for j in pis[order[i]]]
                                 for i in range(1, factors)]
        bwd.append(invs[order[-1]])
        for i, t in enumerate(fwd):
            self.register_buffer(f"fwd_{i}", torch.tensor(t, dtype=torch.long, device=device),
                                 persistent=False)
        for i, t in enumerate(bwd):
            self.register_buffer(f"bwd_{i}", torch.tensor(t, dtype=torch.long, device=device),
                                 persistent=False)
        self._identity_gather = [t == list(range(n)) for t in fwd], [t == list(range(n)) for t in bwd]
        # A gather that is a transpose of the width viewed as a (b, k) or (k, b) matrix (the GS
        # shuffle sigma and its inverse) runs as a strided copy, much cheaper than a gather.
        k, b = self.k, block_size
        shapes = {tuple((i % b) * k + i // b for i in range(n)): (b, k),
                  tuple((i % k) * b + i // k for i in range(n)): (k, b)}
        self._transpose_gather = [shapes.get(tuple(t)) for t in fwd], [shapes.get(tuple(t)) for t in bwd]

    def extra_repr(self) -> str:
        return f"n={self.n}, b={self.b}, m={self.m}, permutation={self.permutation}"

    def num_params(self) -> int:
        return self.m * self.k * packed_len(self.b)

    def blocks(self, params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The ``m`` factors' Cayley blocks, each ``(k, b, b)`` (one batched solve), of this
        chain's parameters or of ``params`` (tensors shaped like them)."""
        if params is None:
            return self._inference_cached("blocks", lambda: self._blocks_of(list(self.params)))
        return self._blocks_of(list(params))

    def _blocks_of(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.m == 1:
            return [cayley(params[0], self.b)]
        return list(cayley(torch.cat(params), self.b).split(self.k))

    def _inference_cached(self, what: str, make):
        """``make()``, kept while autograd is off and this chain's parameters are unchanged
        (their storage and version counters, which every in-place update such as an optimizer
        step or ``copy_`` advances): generation and scoring then solve the Cayley blocks once,
        not at every forward. With autograd on, always ``make()`` (the graph needs it)."""
        if torch.is_grad_enabled():
            return make()
        key = tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in self.params)
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get(what)
        if hit is None or hit[0] != key:
            hit = cache[what] = (key, make())
        return hit[1]

    def paired(self) -> bool:
        """Whether this chain is two GS factors on a width that is a multiple of ``b^2``: then
        it falls apart into ``n / b^2`` independent rotations of ``b^2`` features each (see
        :meth:`group_matrices`), which :meth:`forward` runs as one batched product."""
        return self.m == 2 and self.permutation == "gs" and self.n % (self.b * self.b) == 0

    def group_matrices(self, blocks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The ``s = n / b^2`` dense ``b^2 x b^2`` rotations a :meth:`paired` chain is made of.

        Feature ``b (s r + g) + e`` (``r, e < b``, ``g < s``) is entry ``(r, e)`` of group ``g``:
        factor 0's contiguous block ``s r + g`` holds entries ``(r, 0..b)`` of group ``g``, and
        factor 1's strided block ``b g + e`` (features ``t k + b g + e``, ``k = s b``) holds
        entries ``(0..b, e)``, so each group is closed under both factors and
        ``Q = F_1 F_0`` restricted to it is ``M_g[(r', e'), (r, e)] = B1[b g + e'][r', r] *
        B0[s r + g][e', e]``: ``b^4`` products per group, no sum.
        """
        if blocks is None:
            blocks = self.blocks()
        b, s = self.b, self.n // (self.b * self.b)
        b1 = blocks[1].view(s, b, b, b).permute(0, 2, 1, 3)  # [g, r', e', r]
        b0 = blocks[0].view(b, s, b, b).permute(1, 2, 0, 3)  # [g, e', r, e]
        return (b1.unsqueeze(-1) * b0.unsqueeze(1)).reshape(s, b * b, b * b)

    def regroup(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of ``x`` (``(..., n)``) as the ``s`` groups of a :meth:`paired` chain:
        ``(s, rows, b^2)``, a copy."""
        b, s = self.b, self.n // (self.b * self.b)
        return x.reshape(-1, b, s, b).permute(2, 0, 1, 3).reshape(s, -1, b * b)

    def ungroup(self, g: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """Inverse of :meth:`regroup`: ``(s, rows, b^2)`` back to ``lead + (n,)``."""
        b, s = self.b, self.n // (self.b * self.b)
        return g.view(s, -1, b, b).permute(1, 2, 0, 3).reshape(lead + (self.n,))

    def rotate_grouped(self, x: torch.Tensor, m: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``Q x`` (or ``Q^T x``) of a :meth:`paired` chain whose :meth:`group_matrices` are
        ``m``: the features regrouped into the chain's ``s`` groups, one batched product, and
        back. It spends ``b^2`` multiply-adds per feature where the two factors spend ``2 b``,
        but as one well-shaped batched product it is faster on a CPU than two batches of
        ``b x b`` blocks and the shuffle between them."""
        return self.ungroup(torch.bmm(self.regroup(x), m if transpose else m.transpose(1, 2)), x.shape[:-1])

    def _run_paired(self, x: torch.Tensor, transpose: bool, blocks: list[torch.Tensor] | None) -> torch.Tensor:
        if blocks is None:
            m = self._inference_cached(f"groups-{x.dtype}", lambda: self.group_matrices().to(x.dtype))
        else:
            m = self.group_matrices(blocks).to(x.dtype)
        return self.rotate_grouped(x, m, transpose)

    def _run(self, x: torch.Tensor, transpose: bool, blocks: list[torch.Tensor] | None) -> torch.Tensor:
        if self.paired():
            return self._run_paired(x, transpose, blocks)
        return self.run_factors(x, transpose, blocks)

    def run_factors(self, x: torch.Tensor, transpose: bool = False,
                    blocks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``Q x`` (``Q^T x``) factor by factor: gathers and batches of ``b x b`` blocks (every
        chain; the reference the grouped form of :meth:`paired` chains is tested against)."""
        if blocks is None:
            blocks = self.blocks()
        lead = x.shape[:-1]
        steps, last = self._plan(transpose)
        views = self._transpose_gather[1 if transpose else 0]
        for i, (gather, f) in enumerate(steps):
            if views[i] is not None:
                x = x.unflatten(-1, views[i]).transpose(-1, -2).reshape(lead + (self.n,))
            elif gather is not None:
                x = x.index_select(-1, gather)
            blk = blocks[f].to(x.dtype)
            g = x.reshape(lead + (self.k, self.b))
            # u[..., j, c] = sum_t B_j[c, t] g[..., j, t]   (B^T for the transpose)
            eq = "...jt,jct->...jc" if not transpose else "...jt,jtc->...jc"
            x = torch.einsum(eq, g, blk).reshape(lead + (self.n,))
        if views[self.m] is not None:
            x = x.unflatten(-1, views[self.m]).transpose(-1, -2).reshape(lead + (self.n,))
        elif last is not None:
            x = x.index_select(-1, last)
        return x

    def _plan(self, transpose: bool) -> tuple[list[tuple[torch.Tensor | None, int]], torch.Tensor | None]:
        """How ``Q`` (or ``Q^T``) runs: ``(gather, f)`` per factor in order (``gather`` is
        the fused index table to apply first, ``None`` for the identity), then the last
        gather (or ``None``)."""
        prefix, ident = ("bwd_", self._identity_gather[1]) if transpose else ("fwd_", self._identity_gather[0])
        order = range(self.m - 1, -1, -1) if transpose else range(self.m)
        steps = [(None if ident[i] else getattr(self, f"{prefix}{i}"), f) for i, f in enumerate(order)]
        return steps, None if ident[self.m] else getattr(self, f"{prefix}{self.m}")

    def forward(self, x: torch.Tensor, blocks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``Q x`` for every vector along the last dimension of ``x``."""
        return self._run(x, False, blocks)

    def apply_transpose(self, x: torch.Tensor, blocks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``Q^T x`` along the last dimension."""
        return self._run(x, True, blocks)

    def dense(self) -> torch.Tensor:
        """Dense ``Q`` (tests and goldens only)."""
        eye = torch.eye(self.n, dtype=self.params[0].dtype, device=self.params[0].device)
        return self.forward(eye).T  # rows of eye are e_i; Q e_i is column i


# --------------------------------------------------------------------------- adapted layers


@dataclass(frozen=True)
class AdapterConfig:
    method: str = "gsoft"
    block_size: int = 8
    factors: int | None = None
    scale: bool = True

    @property
    def permutation(self) -> str:
        return {"gsoft": "gs", "double_gsoft": "gs", "gs": "gs", "oft": "none", "boft": "butterfly"}[self.method]

    @property
    def factor_count(self) -> int:
        if self.method == "oft":
            if self.factors not in (None, 1):
                raise ValueError("oft has exactly one factor")
            return 1
        if self.factors is not None:
            return self.factors
        return 2

    @property
    def double(self) -> bool:
        return self.method == "double_gsoft"


def _chain(n: int, cfg: AdapterConfig, like: torch.Tensor) -> OrthogonalChain:
    return OrthogonalChain(n, cfg.block_size, cfg.factor_count, cfg.permutation,
                           dtype=like.dtype, device=like.device)


class _AdaptedBase(nn.Module):
    """Shared logic: chains, scale, merge/unmerge on the ``(out, in_flat)`` weight matrix."""

    base: nn.Module

    def _setup(self, base: nn.Module, out_f: int, in_f: int, cfg: AdapterConfig):
        if cfg.method not in METHODS:
            raise ValueError(f"unknown method {cfg.method!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.cfg = cfg
        w = base.weight
        self.oft_in = _chain(in_f, cfg, w)
        self.oft_out = _chain(out_f, cfg, w) if cfg.double else None
        self.oft_scale = nn.Parameter(torch.ones(out_f, dtype=w.dtype, device=w.device)) if cfg.scale else None
        self.merged = False
        # How an unmerged layer runs on its own: "lean", "lean_keep" or "plain" (ADAPTER_PATHS).
        self.path = "lean"
        # Set by the model's WeightBank for the duration of one forward of the whole model.
        self.bank_weight: torch.Tensor | None = None
        self.bank_chunk: _BankChunk | None = None

    def _bank_weight_now(self) -> torch.Tensor | None:
        """The bank's adapted weight for this forward, computed with the rest of its chunk
        on first use when the bank computes weights chunk by chunk."""
        if self.bank_weight is None and self.bank_chunk is not None:
            self.bank_chunk.materialize()
        return self.bank_weight

    # weight viewed as (out, in_flat)
    def _wmat(self) -> torch.Tensor:
        return self.base.weight.reshape(self.base.weight.shape[0], -1)

    def adapted_weight(self) -> torch.Tensor:
        """``diag(s) Q_out W Q_in`` without a dense Q (rows by Q_in^T, columns by Q_out)."""
        w = self.oft_in.apply_transpose(self._wmat())
        if self.oft_out is not None:
            w = self.oft_out(w.T).T
        if self.oft_scale is not None:
            w = w * self.oft_scale[:, None]
        return w

    def unmerged_weight_from(self, merged: torch.Tensor) -> torch.Tensor:
        """``Q_out^T diag(s)^{-1} W' Q_in^T``."""
        w = merged
        if self.oft_scale is not None:
            w = w / self.oft_scale[:, None]
        if self.oft_out is not None:
            w = self.oft_out.apply_transpose(w.T).T
        return self.oft_in(w)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        w = self.adapted_weight()
        self.base.weight.copy_(w.reshape(self.base.weight.shape))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.unmerged_weight_from(self._wmat())
        self.base.weight.copy_(w.reshape(self.base.weight.shape))
        self.merged = False

    def adapter_num_params(self) -> int:
        n = self.oft_in.num_params()
        if self.oft_out is not None:
            n += self.oft_out.num_params()
        if self.oft_scale is not None:
            n += self.oft_scale.numel()
        return n


class AdaptedLinear(_AdaptedBase):
    """``y = s * (Q_out (W (Q_in x))) + bias``, input-centric when unmerged."""

    def __init__(self, base: nn.Linear, cfg: AdapterConfig):
        super().__init__()
        self._setup(base, base.out_features, base.in_features, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        w = self._bank_weight_now()
        if w is not None:
            if self.bank_chunk is not None:
                # Nothing keeps it for the backward pass: dropped now, its chunk's weights
                # are freed once the chunk's last layer has run.
                self.bank_weight = None
                return _LeanLinear.apply(x, w, self.base.bias, self.bank_chunk, self)
            return F.linear(x, w, self.base.bias)
        if self.path != "plain" and torch.is_grad_enabled():
            pi = list(self.oft_in.params)
            po = list(self.oft_out.params) if self.oft_out is not None else []
            if _GroupedAdaptedLinear.applies(self, x):
                return _GroupedAdaptedLinear.apply(x, self.base.weight, self.base.bias, self.oft_scale,
                                                   (self, len(pi), self.path == "lean_keep"), *pi, *po)
            return _LeanAdaptedLinear.apply(x, self.base.weight, self.base.bias, self.oft_scale,
                                            (self, len(pi), self.path == "lean_keep"), *pi, *po)
        return self.unmerged(x, self.base.weight, self.base.bias, self.oft_scale)

    def unmerged(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None,
                 blocks_in: list[torch.Tensor] | None = None,
                 blocks_out: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``y = s * (Q_out (W (Q_in x))) + bias`` on the activations (the plain path, which
        autograd records op by op; the lean path runs the same operations without recording)."""
        h = F.linear(self.oft_in(x, blocks_in), weight)
        if self.oft_out is not None:
            h = self.oft_out(h, blocks_out)
        if scale is not None:
            h = h * scale
        if bias is not None:
            h = h + bias
        return h


def _save_lean(ctx, how: tuple, x, weight, bias, scale, y, extra) -> None:
    """What a lean layer keeps for backward: ``x``, references to the weight, bias and scale,
    ``extra`` (parameters or Cayley blocks), and the output ``y`` when it recovers ``W Q_in x``
    from it instead of a second product with ``W``: ``lean_keep``, when that product is needed at
    all (a scale or ``Q_out``) and every scale entry is nonzero (checking that waits for a GPU)."""
    mod, n_in, keep = how
    ctx.mod, ctx.n_in = mod, n_in
    ctx.keep = keep and (mod.oft_out is not None or scale is not None) and (
        scale is None or not bool((scale == 0).any()))
    ctx.save_for_backward(x, weight, scale, bias, y if ctx.keep else None, *extra)


def _load_lean(ctx) -> tuple:
    """What :func:`_save_lean` kept: ``(x, weight, scale, bias, y or None, extra, mod, n_in)``."""
    x, weight, scale, bias, y, *extra = ctx.saved_tensors
    return x, weight, scale, bias, y, extra, ctx.mod, ctx.n_in


class _LeanAdaptedLinear(torch.autograd.Function):
    """The unmerged adapted linear ``y = s * (Q_out (W (Q_in x))) + bias`` that keeps for the
    backward pass only the layer input ``x`` (layers that share one input, such as q/k/v,
    share its storage) and references to its parameters (the chains' packed parameters, the
    scale, the frozen weight and bias): no activation of its own and no Cayley by-product.

    The backward pass recomputes what it needs: the Cayley blocks (one small batched solve
    per chain), the factor products of ``Q_in x`` (``m*n*b`` multiply-adds per token), and,
    only when there is a scale or a ``Q_out``, ``h = W (Q_in x)`` (one product with the frozen
    weight) to differentiate ``Q_out`` and ``s`` at; ``lean_keep`` keeps the output ``y``
    instead and recovers it as ``Q_out^T ((y - bias) / s)``. The gradients of the chains (through the
    Cayley transform to the packed parameters) come from autograd over the same operations as
    the plain path (:meth:`AdaptedLinear.unmerged`), recorded there one layer at a time; the
    input gradient through ``W`` is one product ``dh W``, as ``F.linear``'s own backward
    computes it. Under autocast the backward runs in the forward's autocast state, so every
    recomputed operation has the forward's dtypes.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale, how, *params):  # noqa: D401 - autograd API
        dev = x.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        mod, n_in, _ = how
        bo = mod.oft_out.blocks(params[n_in:]) if mod.oft_out is not None else None
        y = mod.unmerged(x, weight, bias, scale, mod.oft_in.blocks(params[:n_in]), bo)
        _save_lean(ctx, how, x, weight, bias, scale, y, params)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, scale, bias, y, params, mod, n_in = _load_lean(ctx)
        need = ctx.needs_input_grad
        need_x, need_w, need_bias, need_s = need[0], need[1], need[2], need[3]
        need_pi, need_po = need[5:5 + n_in], need[5 + n_in:]
        weight = weight.detach()
        dx = dw = dbias = ds = None
        dpi: list[torch.Tensor | None] = [None] * n_in
        dpo: list[torch.Tensor | None] = [None] * len(need_po)
        dev, on, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(dev, dtype=dtype, enabled=on):
            xg = x.detach().requires_grad_(need_x)
            pi = [p.detach().requires_grad_(r) for p, r in zip(params[:n_in], need_pi)]
            u = mod.oft_in(xg, mod.oft_in.blocks(pi))
            if mod.oft_out is None and scale is None:
                dh = dy
            else:
                po = [p.detach().requires_grad_(r) for p, r in zip(params[n_in:], need_po)]
                if ctx.keep:
                    with torch.no_grad():
                        v = y if bias is None else y - bias
                        if scale is not None:
                            v = v / scale
                        h = v if mod.oft_out is None else mod.oft_out.apply_transpose(v, mod.oft_out.blocks(po))
                    h = h.to(u.dtype).requires_grad_(True)
                else:
                    h = F.linear(u.detach(), weight).requires_grad_(True)
                sg = None if scale is None else scale.detach().requires_grad_(need_s)
                v = h if mod.oft_out is None else mod.oft_out(h, mod.oft_out.blocks(po))
                if sg is not None:
                    v = v * sg
                wrt = [h] + [p for p in po if p.requires_grad] + ([sg] if need_s else [])
                got = list(torch.autograd.grad(v, wrt, dy))
                dh = got.pop(0)
                dpo = [got.pop(0) if r else None for r in need_po]
                ds = got.pop(0) if need_s else None
            if need_w:
                dw = dh.reshape(-1, dh.shape[-1]).mT @ u.detach().reshape(-1, u.shape[-1]).to(dh.dtype)
            wrt = ([xg] if need_x else []) + [p for p in pi if p.requires_grad]
            if wrt:
                du = torch.matmul(dh, weight)
                got = list(torch.autograd.grad(u, wrt, du.to(u.dtype)))
                dx = got.pop(0) if need_x else None
                dpi = [got.pop(0) if r else None for r in need_pi]
        if need_bias:
            dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
        return (dx, dw, dbias, ds, None, *dpi, *dpo)


def _group_matrix_grad(chain: OrthogonalChain, blocks: torch.Tensor, gm: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to both factors' Cayley blocks (``(2k, b, b)``, factor 0 first)
    of a loss whose gradient with respect to :meth:`OrthogonalChain.group_matrices` is ``gm``:
    each group entry is the product of one entry of each factor, so each factor's gradient is
    the other's entries times ``gm``, summed over the index the other one adds."""
    b, s, k = chain.b, chain.n // (chain.b * chain.b), chain.k
    b0 = blocks[:k].view(b, s, b, b).permute(1, 2, 0, 3)  # [g, e', r, e]
    b1 = blocks[k:].view(s, b, b, b).permute(0, 2, 1, 3)  # [g, r', e', r]
    g5 = gm.view(s, b, b, b, b)  # [g, r', e', r, e]
    g1 = (g5 * b0.unsqueeze(1)).sum(-1)  # [g, r', e', r]
    g0 = (g5 * b1.unsqueeze(-1)).sum(1)  # [g, e', r, e]
    return torch.cat([g0.permute(2, 0, 1, 3).reshape(k, b, b), g1.permute(0, 2, 1, 3).reshape(k, b, b)])


def _cayley_grad(c: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to the packed parameters of blocks ``C = (I - S)^{-1} (I + S)``
    (``c``, ``(..., b, b)``) given the gradient ``g`` with respect to ``C``, with no solve:
    ``dC = (I - S)^{-1} dS (C + I)`` and ``(I - S)^{-1} = (C + I) / 2`` (because ``(I - S) +
    (I - S)^T = 2I``), so the gradient with respect to ``S`` is ``(C^T + I) g (C^T + I) / 2``,
    and a packed ``p_ij`` (``S_ij = p``, ``S_ji = -p``) gets its upper entry minus its lower one."""
    b = c.shape[-1]
    ct = c.mT + _eye(b, c.dtype, c.device)
    gs = ct @ g @ ct / 2
    iu = torch.triu_indices(b, b, 1, device=c.device)
    return gs[..., iu[0], iu[1]] - gs[..., iu[1], iu[0]]


class _GroupedSide:
    """One grouped chain of a layer with its Cayley blocks (``(2k, b, b)``, factor 0 first):
    rotations and gradients on the CPU kernels of :mod:`gs_kernel` for float32 CPU tensors with
    ``b = 8`` where they are built, else as batched products with the group matrices."""

    def __init__(self, chain: OrthogonalChain, blocks: torch.Tensor, like: torch.Tensor):
        from . import gs_kernel

        self.chain, self.blocks = chain, blocks
        self.kernel = gs_kernel if gs_kernel.applies(like, chain.b, chain.n) else None
        self._mats: torch.Tensor | None = None

    @staticmethod
    def cayley(chain: OrthogonalChain, packed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The Cayley blocks of ``chain``'s concatenated packed parameters: on the kernels where
        :class:`_GroupedSide` runs the chain on them (one LAPACK call costs about 100 µs for a
        576-feature chain's 144 blocks, the kernel 12), else :func:`cayley`."""
        from . import gs_kernel

        if packed.dtype == torch.float32 and gs_kernel.applies(like, chain.b, chain.n):
            return gs_kernel.cayley(packed)
        return cayley(packed, chain.b)

    def mats(self) -> torch.Tensor:
        if self._mats is None:
            self._mats = self.chain.group_matrices(list(self.blocks.split(self.chain.k)))
        return self._mats

    def rotate(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``Q x`` (``Q^T x``) along the last dimension."""
        if self.kernel is not None:
            return self.kernel.apply(x, self.blocks, transpose)
        return self.chain.rotate_grouped(x, self.mats(), transpose)

    def grad(self, x: torch.Tensor, dy: torch.Tensor, need_x: bool,
             need_params: bool) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
        """For ``y = Q x`` and ``dy = dL/dy``: ``Q^T dy`` (if ``need_x``) and the gradients of the
        chain's packed parameters, one per factor (if ``need_params``)."""
        c = self.chain
        if self.kernel is not None:
            dx, db = self.kernel.backward(x, dy, self.blocks, need_x)
        else:
            dyg = c.regroup(dy)  # once for both products
            dx = c.ungroup(torch.bmm(dyg, self.mats()), dy.shape[:-1]) if need_x else None
            db = (_group_matrix_grad(c, self.blocks, torch.bmm(dyg.mT, c.regroup(x)))
                  if need_params else None)
        return dx, (list(_cayley_grad(self.blocks, db).split(c.k)) if need_params else None)


class _GroupedAdaptedLinear(torch.autograd.Function):
    """:class:`_LeanAdaptedLinear` for layers whose chains are all :meth:`OrthogonalChain.paired`
    (GSOFT and Double GSOFT on widths that are multiples of ``b^2``), with a backward pass
    written out instead of recorded again (:class:`_GroupedSide`: on the CPU the kernels of
    :mod:`gs_kernel`, else batched products with the chain's group matrices; the Cayley
    gradient needs no solve, :func:`_cayley_grad`), so that it costs about what the plain
    path's does while keeping what the lean paths keep: the input (``lean``; also the output
    with ``lean_keep``, from which ``W Q_in x`` is recovered instead of recomputed) and each
    chain's Cayley blocks (``2 n b`` values, parameter-sized). Float32 and float64 without
    autocast; other cases take :class:`_LeanAdaptedLinear`.
    """

    @staticmethod
    def applies(mod: "_AdaptedBase", x: torch.Tensor) -> bool:
        """Whether ``mod`` on ``x`` takes this function."""
        return (all(c.paired() for c in _chain_sides(mod)) and x.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled(x.device.type))

    @staticmethod
    def _sides(mod: "_AdaptedBase", blocks: Sequence[torch.Tensor], like: torch.Tensor) -> list[_GroupedSide]:
        return [_GroupedSide(c, bl, like) for c, bl in zip(_chain_sides(mod), blocks)]

    @staticmethod
    def forward(ctx, x, weight, bias, scale, how, *params):  # noqa: D401 - autograd API
        mod, n_in, _ = how
        groups = [params[:n_in], params[n_in:]]
        blocks = [_GroupedSide.cayley(c, torch.cat(list(p)), x) for c, p in zip(_chain_sides(mod), groups)]
        sides = _GroupedAdaptedLinear._sides(mod, blocks, x)
        h = F.linear(sides[0].rotate(x), weight)
        if len(sides) == 2:
            h = sides[1].rotate(h)
        y = h if scale is None else h * scale
        if bias is not None:
            y = y + bias
        _save_lean(ctx, how, x, weight, bias, scale, y, blocks)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, scale, bias, y, blocks, mod, n_in = _load_lean(ctx)
        sides = _GroupedAdaptedLinear._sides(mod, blocks, x)
        need = ctx.needs_input_grad
        need_x, need_w, need_bias, need_s = need[0], need[1], need[2], need[3]
        u = None
        if ctx.keep:
            v = y if bias is None else y - bias
            v = v if scale is None else v / scale  # Q_out W Q_in x
            h = v if len(sides) == 1 else sides[1].rotate(v, transpose=True)
        elif len(sides) == 2 or scale is not None:
            u = sides[0].rotate(x)
            h = F.linear(u, weight)
            v = h if len(sides) == 1 else sides[1].rotate(h)
        dv = dy if scale is None else dy * scale
        ds = (dy * v).reshape(-1, dy.shape[-1]).sum(0) if need_s else None
        grads_out: list[torch.Tensor | None] = [None] * (len(need) - 5 - n_in)
        if len(sides) == 2:
            dh, gp = sides[1].grad(h, dv, True, any(need[5 + n_in:]))
            grads_out = gp or grads_out
        else:
            dh = dv
        dw = None
        if need_w:
            if u is None:
                u = sides[0].rotate(x)
            dw = dh.reshape(-1, dh.shape[-1]).mT @ u.reshape(-1, u.shape[-1])
        du = torch.matmul(dh, weight)
        dx, gp = sides[0].grad(x, du, need_x, any(need[5:5 + n_in]))
        grads_in = gp or [None] * n_in
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0) if need_bias else None
        return (dx, dw, dbias, ds, None, *grads_in, *grads_out)


class _LeanLinear(torch.autograd.Function):
    """``F.linear(x, w, bias)`` for a bank weight ``w = diag(s) Q_out W Q_in`` that keeps
    only ``x`` for the backward pass, where ``w`` is recomputed with the rest of its
    chunk (see :class:`WeightBank`'s ``memory_efficient``)."""

    @staticmethod
    def forward(ctx, x, w, bias, chunk, mod):  # noqa: D401 - autograd API
        y = F.linear(x, w, bias)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            x = x.to(torch.get_autocast_dtype(dev))  # what F.linear keeps under autocast
        ctx.save_for_backward(x)
        ctx.chunk, ctx.mod, ctx.w_dtype = chunk, mod, w.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        dx = dw = dbias = None
        if ctx.needs_input_grad[1]:
            dw = (dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1]).to(dy.dtype)).to(ctx.w_dtype)
        if ctx.needs_input_grad[2]:
            dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
        if ctx.needs_input_grad[0]:
            dx = dy @ ctx.chunk.weight_for_backward(ctx.mod).to(dy.dtype)
        return dx, dw, dbias, None, None


class AdaptedConv2d(_AdaptedBase):
    """Conv2d whose weight, as the ``(out, in*kh*kw)`` matrix, is adapted like a Linear."""

    def __init__(self, base: nn.Conv2d, cfg: AdapterConfig):
        super().__init__()
        if base.groups != 1:
            raise ValueError("grouped convolutions are not supported")
        in_f = base.in_channels * base.kernel_size[0] * base.kernel_size[1]
        self._setup(base, base.out_channels, in_f, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        w = self._bank_weight_now()
        if w is not None:
            return self.base._conv_forward(x, w.reshape(self.base.weight.shape), self.base.bias)
        w = self.oft_in.apply_transpose(self._wmat())
        if self.oft_out is not None:
            w = self.oft_out(w.T).T
        w = w.reshape(self.base.weight.shape)
        h = self.base._conv_forward(x, w, None)
        if self.oft_scale is not None:
            h = h * self.oft_scale[:, None, None]
        if self.base.bias is not None:
            h = h + self.base.bias[:, None, None]
        return h


ADAPTED = (AdaptedLinear, AdaptedConv2d)


# --------------------------------------------------------------------------- weight bank


class WeightBank:
    """Computes every adapted weight of an injected model in a few batched operations.

    Without the bank each adapted layer builds its own Cayley blocks and rotates its own
    input: a dozen small operations per layer and per step, which on a GPU costs more in
    launches than the arithmetic. With it, a forward pre-hook on the model solves the
    Cayley blocks of *every* chain in one batched solve, and rotates the weights of all
    layers of one shape together (a stack, ``m`` gathers and ``m`` batched block products
    per side), so a layer's forward is a plain ``F.linear`` with ``diag(s) Q_out W Q_in``.
    The rotation of each shape group runs under activation checkpointing: only the
    blocks and the scales are kept for the backward pass, which recomputes the
    intermediate weight-sized tensors, so the bank adds one weight-sized tensor per layer
    (the adapted weight, which the layer's product keeps) to the memory of a step.

    Weight-centric rotation costs ``out*in*b`` multiply-adds per factor and a full weight
    gradient in the backward pass, against ``tokens*in*b`` for rotating the activations;
    :func:`inject` turns it on by default for CUDA models (where launches dominate) and off
    on CPU, and either path computes the same function (tests compare them).
    The bank is active only while the model it was installed on runs its forward; calling
    an adapted layer on its own uses the layer's own path.

    ``memory_efficient``: linear layers do not keep their adapted weight for the backward
    pass either. Each recomputes it there from the frozen weight and the blocks the bank
    keeps anyway (weight-sized temporaries, one layer at a time). The forward pass, too,
    holds only one chunk of adapted weights at a time: the layers of one transformer block
    (names up to their first numeric part, ``encoder.layer.3``), computed together when the
    block's first layer runs and dropped by each layer once used. This saves the adapted
    weights of every other block, at the price of a few more kernels per layer and block.
    """

    def __init__(self, model: nn.Module, memory_efficient: bool = False):
        self.model = model
        self.memory_efficient = memory_efficient
        named = adapted_modules(model)
        self.modules = [m for _, m in named]
        self.chunk_of = {id(m): _chunk_key(n) for n, m in named}
        self.handles = [model.register_forward_pre_hook(self._begin),
                        model.register_forward_hook(self._end, always_call=True)]

    def remove(self) -> None:
        """Uninstall the hooks (each layer goes back to its own path)."""
        for h in self.handles:
            h.remove()
        self.handles = []

    def _begin(self, _module, _args) -> None:
        mods = [m for m in self.modules if not m.merged]
        if not mods:
            return
        if not self.memory_efficient:
            for m, w in zip(mods, adapted_weights(mods)):
                m.bank_weight = w
            return
        # One solve for every chain; the weights chunk by chunk (one transformer block
        # each), on the chunk's first use, and dropped by each layer once used.
        keyed: dict[str, list[_AdaptedBase]] = {}
        for m in mods:
            keyed.setdefault(self.chunk_of[id(m)], []).append(m)
        chunks = list(keyed.values())
        for cmods, (groups, stacks) in zip(chunks, _solve_chunks(chunks)):
            chunk = _BankChunk(cmods, groups, stacks)
            for m in cmods:
                m.bank_chunk = chunk

    def _end(self, _module, _args, _output) -> None:
        for m in self.modules:
            m.bank_weight = None
            m.bank_chunk = None


def _chunk_key(name: str) -> str:
    """The dotted prefix of ``name`` up to its first numeric part (``encoder.layer.3``):
    the transformer block a layer belongs to, or ``""`` when the name has none."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return ""


class _BankChunk:
    """The adapted weights of one chunk of a memory-efficient bank's layers, computed
    together (batched per weight shape) when the chunk's first layer runs."""

    def __init__(self, mods: list[_AdaptedBase], groups: dict[tuple, list[int]], stacks: list[list[torch.Tensor]]):
        self.mods, self.groups, self.stacks = mods, groups, stacks
        self._for_backward: dict[int, torch.Tensor] = {}

    def materialize(self) -> None:
        for m, w in zip(self.mods, _rotate_groups(self.mods, self.groups, self.stacks)):
            m.bank_weight = w

    def weight_for_backward(self, mod: _AdaptedBase) -> torch.Tensor:
        """``mod``'s adapted weight again, without gradient, for its input gradient: the
        weights of its shape group recomputed together when the first of them is asked
        for (the backward pass visits a block's layers one after another), each handed
        out once, so at most one group's weights are held."""
        if id(mod) not in self._for_backward:
            i = self.mods.index(mod)
            g, (key, idx) = next((g, kv) for g, kv in enumerate(self.groups.items()) if i in kv[1])
            with torch.no_grad():
                stack = [t.detach() for t in self.stacks[g]]
                ws = _rotate_groups(self.mods, {key: idx}, [stack], checkpoint=False)
            self._for_backward = {id(self.mods[j]): ws[j] for j in idx}
        return self._for_backward.pop(id(mod))


def _chain_sides(mod: _AdaptedBase) -> list[OrthogonalChain]:
    return [mod.oft_in] + ([mod.oft_out] if mod.oft_out is not None else [])


def adapted_weights(mods: Sequence[_AdaptedBase]) -> list[torch.Tensor]:
    """``diag(s) Q_out W Q_in`` as an ``(out, in_flat)`` matrix for each module, batched:
    one Cayley solve for all chains, one rotation per group of equal weight shape."""
    groups, stacks = _solve_chunks([list(mods)])[0]
    return _rotate_groups(mods, groups, stacks)


def _solve_chunks(chunks: list[list[_AdaptedBase]]) -> list[tuple[dict[tuple, list[int]], list[list[torch.Tensor]]]]:
    """One batched Cayley solve for every chain of every chunk of modules. Per chunk: its
    shape groups (:func:`_shape_groups`) and, per group, its blocks side by side and
    factor by factor, each a ``(G, k, b, b)`` view of the solve's result (parameters are
    ordered chunk -> group -> side -> factor -> module, so no stacking is needed)."""
    b = _bank_block_size([m for mods in chunks for m in mods])
    plans = [_shape_groups(mods) for mods in chunks]
    params, sizes = [], []
    for mods, groups in zip(chunks, plans):
        for idx in groups.values():
            for side, c in enumerate(_chain_sides(mods[idx[0]])):
                for f in range(c.m):
                    params += [_chain_sides(mods[i])[side].params[f] for i in idx]
                    sizes.append(len(idx) * params[-1].shape[0])
    solved = cayley(torch.cat(params), b).split(sizes)
    out, pos = [], 0
    for mods, groups in zip(chunks, plans):
        stacks = []
        for idx in groups.values():
            stack = []
            for c in _chain_sides(mods[idx[0]]):
                stack += [blk.view(len(idx), c.k, b, b) for blk in solved[pos:pos + c.m]]
                pos += c.m
            stacks.append(stack)
        out.append((groups, stacks))
    return out


def _bank_block_size(mods: Sequence[_AdaptedBase]) -> int:
    b = mods[0].oft_in.b
    if any(c.b != b for m in mods for c in _chain_sides(m)):
        raise ValueError("a weight bank needs one block size for every chain")
    return b


def _shape_groups(mods: Sequence[_AdaptedBase]) -> dict[tuple, list[int]]:
    """Indices of the modules whose adapted weights one batched rotation computes together."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(mods):
        key = (tuple(m._wmat().shape), tuple((c.n, c.b, c.m, c.permutation) for c in _chain_sides(m)),
               m.oft_scale is not None, m.base.weight.dtype, m.base.weight.device)
        groups.setdefault(key, []).append(i)
    return groups


def _rotate_groups(mods: Sequence[_AdaptedBase], groups: dict[tuple, list[int]],
                   stacks: list[list[torch.Tensor]], checkpoint: bool = True) -> list[torch.Tensor]:
    """Each shape group's weights rotated by its stacked ``(G, k, b, b)`` blocks (side by
    side, factor by factor), with ``checkpoint`` under activation checkpointing: only the
    blocks and scales are kept for the backward pass, which recomputes the weight-sized
    intermediates."""
    out: list[torch.Tensor | None] = [None] * len(mods)
    for idx, flat_blocks in zip(groups.values(), stacks):
        first = mods[idx[0]]
        weights = [mods[i]._wmat() for i in idx]
        scales = [mods[i].oft_scale for i in idx] if first.oft_scale is not None else []
        rotate = functools.partial(_rotate_group, _chain_sides(first), len(flat_blocks), len(weights))
        if checkpoint:
            adapted = torch.utils.checkpoint.checkpoint(rotate, *flat_blocks, *weights, *scales,
                                                        use_reentrant=False, preserve_rng_state=False)
        else:
            adapted = rotate(*flat_blocks, *weights, *scales)
        for j, i in enumerate(idx):
            out[i] = adapted[j]
    return out  # type: ignore[return-value]


def _rotate_group(sides: list[OrthogonalChain], nblocks: int, nweights: int, *tensors: torch.Tensor) -> torch.Tensor:
    """``diag(s) Q_out W Q_in`` for a stack of equally shaped weights (see adapted_weights)."""
    blocks, weights, scales = tensors[:nblocks], tensors[nblocks:nblocks + nweights], tensors[nblocks + nweights:]
    # (G, in, out): Q_in^T applied to the columns of W^T is W Q_in, factor by factor.
    w = torch.stack([t.T for t in weights])
    w = _chain_along_rows(sides[0], w, blocks[:sides[0].m], transpose=True)
    w = w.mT  # (G, out, in), a view
    if len(sides) == 2:
        w = _chain_along_rows(sides[1], w, blocks[sides[0].m:], transpose=False)
    else:
        w = w.contiguous()
    if scales:
        w = w * torch.stack(scales)[:, :, None]
    return w


def _chain_along_rows(chain: OrthogonalChain, w: torch.Tensor, blocks: Sequence[torch.Tensor],
                      transpose: bool) -> torch.Tensor:
    """``Q w`` (or ``Q^T w``) for every column of each ``(n, cols)`` matrix of a stack
    ``(G, n, cols)``; ``blocks[f]`` is ``(G, k, b, b)``. Returns a contiguous stack."""
    g, n, cols = w.shape
    steps, last = chain._plan(transpose)
    for gather, f in steps:
        if gather is not None:
            w = w.index_select(1, gather)
        blk = blocks[f].to(w.dtype)
        if transpose:
            blk = blk.mT
        w = torch.matmul(blk, w.reshape(g, chain.k, chain.b, cols)).reshape(g, n, cols)
    if last is not None:
        w = w.index_select(1, last)
    return w.contiguous()


# --------------------------------------------------------------------------- inject


def _matches(name: str, targets) -> bool:
    if isinstance(targets, str):  # PEFT: a string is a regex that must match the full name
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def resolve_path(path: str | None, weight_bank: bool | None, memory_efficient: bool, cuda: bool) -> str:
    """The adapter path :func:`inject` uses (one of :data:`ADAPTER_PATHS`).

    An explicit ``path`` wins; then the older switches (``weight_bank`` not ``None`` or
    ``memory_efficient``: the bank, the memory-efficient bank, or ``lean_keep`` for
    ``weight_bank=False``); then the environment variable ``RIFFLE_ADAPTER_PATH``; then the
    device default: ``bank`` for CUDA models, ``lean_keep`` on CPU.
    """
    if path is None and weight_bank is None and not memory_efficient:
        path = os.environ.get(PATH_ENV) or None
        if path is not None and path not in ADAPTER_PATHS:
            raise ValueError(f"{PATH_ENV}={path!r}: expected one of {', '.join(ADAPTER_PATHS)}")
    if path is None:
        if weight_bank is None:
            weight_bank = cuda
        path = ("bank_lean" if memory_efficient else "bank") if weight_bank else "lean_keep"
    if path not in ADAPTER_PATHS:
        raise ValueError(f"unknown adapter path {path!r}: expected one of {', '.join(ADAPTER_PATHS)}")
    return path


def inject(model: nn.Module, target_modules, method: str = "gsoft", block_size: int = 8,
           factors: int | None = None, scale: bool = True,
           modules_to_save: Iterable[str] | None = None, weight_bank: bool | None = None,
           memory_efficient: bool = False, path: str | None = None) -> nn.Module:
    """Wrap matching ``nn.Linear`` / ``nn.Conv2d`` modules in place (like PEFT's
    ``get_peft_model``) and freeze everything else.

    ``target_modules``: list of names (exact or dotted suffix) or one regex string.
    ``modules_to_save``: modules that stay trainable as a whole (task heads); they are
    exported as replacement tensors.
    ``weight_bank``: compute all adapted weights per forward in batched operations
    (:class:`WeightBank`); ``None`` (default) turns it on when the model is on a CUDA device.
    ``memory_efficient``: with the bank, linear layers keep no adapted weight for the
    backward pass (less memory, more kernels; see :class:`WeightBank`).
    ``path``: how the unmerged layers compute, one of :data:`ADAPTER_PATHS` (``lean``,
    ``plain``, ``bank``, ``bank_lean``); ``None``: see :func:`resolve_path` (the environment
    variable ``RIFFLE_ADAPTER_PATH`` when neither ``weight_bank`` nor ``memory_efficient`` is
    given, else the bank on CUDA and ``lean`` on CPU). The paths compute the same function.
    The chosen one is ``model.riffle_adapter["path"]``.
    """
    cfg = AdapterConfig(method, block_size, factors, scale)
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, mod in model.named_modules()
             if n and _matches(n, target_modules) and isinstance(mod, (nn.Linear, nn.Conv2d))]
    if not names:
        raise ValueError(f"no module matches {target_modules!r}")
    save = list(modules_to_save or [])
    for n in names:
        mod = model.get_submodule(n)
        new = AdaptedLinear(mod, cfg) if isinstance(mod, nn.Linear) else AdaptedConv2d(mod, cfg)
        _set_submodule(model, n, new)
    for n, mod in model.named_modules():
        if n and save and _matches(n, save):
            for p in mod.parameters():
                p.requires_grad_(True)
    path = resolve_path(path, weight_bank, memory_efficient, any(p.is_cuda for p in model.parameters()))
    for _, mod in adapted_modules(model):
        mod.path = path if path in ("plain", "lean_keep") else "lean"
    old = getattr(model, "riffle_adapter", None)
    if old and old.get("bank") is not None:
        old["bank"].remove()
    bank = WeightBank(model, path == "bank_lean") if path.startswith("bank") else None
    model.riffle_adapter = {"config": cfg, "targets": names, "modules_to_save": save, "bank": bank, "path": path}
    return model


def adapted_modules(model: nn.Module) -> list[tuple[str, _AdaptedBase]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ADAPTED)]


def adapter_tensors(model: nn.Module, heads: Sequence[str] = (), dtype=None) -> list[tuple[str, "np.ndarray"]]:
    """format.md tensors of an injected model: ``T.oft_in.f``, ``T.oft_out.f`` and
    ``T.oft_scale`` per adapted layer in ``dtype`` (numpy, default float32), then each head's
    ``weight`` and ``bias`` in float32."""
    import numpy as np

    dtype = np.float32 if dtype is None else dtype
    out = []
    for mname, mod in adapted_modules(model):
        w = f"{mname}.weight"
        for f, p in enumerate(mod.oft_in.params):
            out.append((f"{w}.oft_in.{f}", p.detach().cpu().numpy().astype(dtype)))
        if mod.oft_out is not None:
            for f, p in enumerate(mod.oft_out.params):
                out.append((f"{w}.oft_out.{f}", p.detach().cpu().numpy().astype(dtype)))
        if mod.oft_scale is not None:
            out.append((f"{w}.oft_scale", mod.oft_scale.detach().cpu().numpy().astype(dtype)))
    for h in heads:
        head = model.get_submodule(h)
        out.append((f"{h}.weight", head.weight.detach().cpu().numpy().astype(np.float32)))
        out.append((f"{h}.bias", head.bias.detach().cpu().numpy().astype(np.float32)))
    return out


def merge_adapters(model: nn.Module) -> None:
    for _, m in adapted_modules(model):
        m.merge()


def unmerge_adapters(model: nn.Module) -> None:
    for _, m in adapted_modules(model):
        m.unmerge()


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
