"""A llama-architecture decoder (SmolLM2) in PyTorch, loaded from a llama.cpp GGUF.

The model keeps the GGUF's own layout: modules are named after the GGUF tensors
(``blk.N.attn_q``, ``blk.N.ffn_down``, ``token_embd``, ``output_norm``), so an adapter
injected with ``layers.inject(model, ["blk.3.attn_q", ...])`` exports tensors named
``blk.3.attn_q.weight.oft_in.0`` exactly as format.md wants, and the rows of ``attn_q`` /
``attn_k`` are in llama.cpp's order. llama.cpp's converter permutes those rows so that its
"normal" RoPE (rotating adjacent pairs ``(x[2i], x[2i+1])``) computes what Hugging Face's
half-split RoPE computes on the original rows; this module applies the adjacent-pair
rotation to the rows as stored, so its logits equal transformers' (which un-permutes the
rows when it loads a GGUF) while every adapted weight is the very matrix the runtime
multiplies. Quantised tensors (Q4_1, Q8_0, ...) are dequantised exactly by gguf-py.

A tied output head (no ``output.weight`` tensor) reuses ``token_embd``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SMOLLM2_Q4_1 = Path.home() / ".cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters read from a GGUF's ``llama.*`` keys."""
    vocab: int
    d: int
    ff: int
    layers: int
    heads: int
    kv_heads: int
    rope_base: float = 10000.0
    eps: float = 1e-5
    ctx: int = 2048

    @property
    def head_dim(self) -> int:
        return self.d // self.heads

    @classmethod
    def from_kv(cls, kv: dict, vocab: int) -> "LlamaConfig":
        a = kv.get("general.architecture", "llama")
        return cls(vocab=vocab, d=int(kv[f"{a}.embedding_length"]), ff=int(kv[f"{a}.feed_forward_length"]),
                   layers=int(kv[f"{a}.block_count"]), heads=int(kv[f"{a}.attention.head_count"]),
                   kv_heads=int(kv.get(f"{a}.attention.head_count_kv", kv[f"{a}.attention.head_count"])),
                   rope_base=float(kv.get(f"{a}.rope.freq_base", 10000.0)),
                   eps=float(kv[f"{a}.attention.layer_norm_rms_epsilon"]),
                   ctx=int(kv.get(f"{a}.context_length", 2048)))


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * w`` computed in float32 (float64 for float64 input)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ct = _compute_dtype(x)
        xf = x.to(ct)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(ct)).to(x.dtype)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rope_tables(pos: torch.Tensor, hd: int, base: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``pos * base^(-2i/hd)`` (angles in float64), shaped (B, 1, T, hd/2)."""
    inv = base ** (-torch.arange(0, hd, 2, device=pos.device, dtype=torch.float64) / hd)
    ang = (pos.to(torch.float64)[..., None] * inv)[:, None]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope_adjacent(x: torch.Tensor, cs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """llama.cpp's normal RoPE: rotate the pairs ``(x[..., 2i], x[..., 2i+1])`` by the angles of
    ``cs`` (:func:`rope_tables`). ``x``: (B, H, T, hd)."""
    cos, sin = cs
    hd = x.shape[-1]
    xf = x.to(cos.dtype).reshape(*x.shape[:-1], hd // 2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.reshape(x.shape).to(x.dtype)


class Block(nn.Module):
    """One pre-norm decoder block: grouped-query attention and a SwiGLU MLP."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        hd = cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(cfg.d, cfg.eps)
        self.attn_q = nn.Linear(cfg.d, cfg.heads * hd, bias=False)
        self.attn_k = nn.Linear(cfg.d, cfg.kv_heads * hd, bias=False)
        self.attn_v = nn.Linear(cfg.d, cfg.kv_heads * hd, bias=False)
        self.attn_output = nn.Linear(cfg.heads * hd, cfg.d, bias=False)
        self.ffn_norm = RMSNorm(cfg.d, cfg.eps)
        self.ffn_gate = nn.Linear(cfg.d, cfg.ff, bias=False)
        self.ffn_up = nn.Linear(cfg.d, cfg.ff, bias=False)
        self.ffn_down = nn.Linear(cfg.ff, cfg.d, bias=False)

    def forward(self, x, cs, mask, cache=None):
        """``cs``: RoPE tables of these positions; ``mask``: (B, 1, T, S) boolean, True where a query may attend. ``cache``: None or a
        (k, v) pair of earlier keys/values (B, kvh, S-T, hd); returns (x, (k, v))."""
        c = self.cfg
        b, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.attn_q(h).view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = self.attn_k(h).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.attn_v(h).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q = rope_adjacent(q, cs)
        k = rope_adjacent(k, cs)
        if cache is not None:
            k = torch.cat((cache[0], k), dim=2)
            v = torch.cat((cache[1], v), dim=2)
        a = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask,
                                           enable_gqa=c.heads != c.kv_heads)
        x = x + self.attn_output(a.transpose(1, 2).reshape(b, t, c.heads * c.head_dim))
        h = self.ffn_norm(x)
        x = x + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h))
        return x, (k, v)


class Llama(nn.Module):
    """Decoder-only llama model in llama.cpp's tensor layout (see the module docstring)."""

    def __init__(self, cfg: LlamaConfig, tied: bool = True):
        super().__init__()
        self.cfg = cfg
        self.token_embd = nn.Embedding(cfg.vocab, cfg.d)
        self.blk = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.output_norm = RMSNorm(cfg.d, cfg.eps)
        self.output = None if tied else nn.Linear(cfg.d, cfg.vocab, bias=False)

    def head_weight(self) -> torch.Tensor:
        return self.token_embd.weight if self.output is None else self.output.weight

    def forward(self, ids: torch.Tensor, attn: torch.Tensor | None = None, caches=None,
                pos: torch.Tensor | None = None, hidden_only: bool = False):
        """Logits (B, T, vocab) of ``ids`` (B, T).

        ``attn``: (B, S) 1 for real tokens, 0 for (left) padding, over the cached tokens and
        these; positions count real tokens only. ``caches``: per-block (k, v) from an earlier
        call (then ``pos`` gives these tokens' positions). With ``caches`` not None (a list,
        possibly empty) returns ``(logits, new_caches)``.
        """
        b, t = ids.shape
        dev = ids.device
        past = 0 if not caches else caches[0][0].shape[2]
        s = past + t
        if attn is None:
            attn = torch.ones(b, s, dtype=torch.long, device=dev)
        if pos is None:
            pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, past:]
        qi = torch.arange(past, s, device=dev)[:, None]
        ki = torch.arange(s, device=dev)[None, :]
        mask = (ki <= qi)[None, None] & attn.bool()[:, None, None, :]
        # a padded query row with no visible key would give NaN: let it see itself
        mask = mask | (ki == qi)[None, None]
        x = self.token_embd(ids)
        cs = rope_tables(pos, self.cfg.head_dim, self.cfg.rope_base, _compute_dtype(x))
        new = []
        for i, blk in enumerate(self.blk):
            x, kv = blk(x, cs, mask, caches[i] if caches else None)
            new.append(kv)
        x = self.output_norm(x)
        if hidden_only:
            return x
        logits = F.linear(x, self.head_weight().to(x.dtype))
        return (logits, new) if caches is not None else logits


def read_llama_gguf(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict[str, str]]:
    """(kv, float32 tensors in PyTorch shape order, ggml type names) of a llama GGUF; quantised
    tensors are dequantised with ``gguf.quants.dequantize`` (exact)."""
    from . import gguf_io

    return gguf_io.read_tensors(path, widen=False)


def llama_from_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Llama, dict]:
    """The model of a llama GGUF with dequantised weights, and the file's key/values."""
    kv, t, _ = read_llama_gguf(path)
    cfg = LlamaConfig.from_kv(kv, vocab=t["token_embd.weight"].shape[0])
    model = Llama(cfg, tied="output.weight" not in t)
    sd = {}
    for name, arr in t.items():
        key = name
        if name.startswith("blk.") or name in ("token_embd.weight", "output_norm.weight", "output.weight"):
            sd[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(dtype).eval(), kv


def base_model_id(path: str | Path) -> str:
    """The base's model id: ``riffle.model_id`` when present, else the SHA-256 of the data span."""
    from . import gguf_io

    kv = gguf_io.read_kv_only(path)
    return kv.get("riffle.model_id") or gguf_io.verify_span(path)["model_id"]


@torch.no_grad()
def greedy_generate(model: Llama, prompts: list[list[int]], max_new: int, stop: int,
                    batch: int = 32, pad: int = 0) -> list[list[int]]:
    """Greedy continuations (token ids, without ``stop``) of each prompt, with a KV cache and
    left padding; stops at ``stop`` or after ``max_new`` tokens."""
    dev = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        n = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), n), dtype=torch.long)
        for r, i in enumerate(idx):
            p = prompts[i]
            ids[r, n - len(p):] = torch.tensor(p)
            attn[r, n - len(p):] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        logits, caches = model(ids, attn, caches=[])
        pos = attn.sum(-1, keepdim=True) - 1
        done = torch.zeros(len(idx), dtype=torch.bool, device=dev)
        gen = []
        for _ in range(max_new):
            nxt = logits[:, -1].float().argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
            gen.append(nxt)
            done |= nxt == stop
            if bool(done.all()):
                break
            attn = torch.cat((attn, torch.ones_like(attn[:, :1])), dim=1)
            pos = pos + 1
            logits, caches = model(nxt[:, None], attn, caches=caches, pos=pos)
        g = torch.stack(gen, 1).cpu().tolist() if gen else [[] for _ in idx]
        for r, i in enumerate(idx):
            seq = g[r]
            out[i] = seq[:seq.index(stop)] if stop in seq else seq
    return out
