"""The runtime's llama conformance fixture (``tests/data/llama/``) and the tiny random llama
the tests use.

``write_fixture(out)`` writes, deterministically from fixed seeds:

* ``tiny-llama-f32.gguf``: a random llama in llama.cpp's layout (2 blocks, hidden 64, 4 heads /
  2 KV heads, head dim 16, FFN 128, tied output head, rope base 10000, rms eps 1e-5), F32
  tensors, a small byte-level ``gpt2`` vocabulary with the ChatML control tokens, no
  ``riffle.model_id`` (like llama.cpp's files: the id is the SHA-256 of the data span);
* ``tiny-llama-gsoft.gguf``, ``tiny-llama-double_gsoft.gguf``, ``tiny-llama-oft.gguf``,
  ``tiny-llama-boft.gguf``: one adapter of each method (b=8, GSOFT/Double GSOFT/BOFT two
  factors, OFT one, scale) on all seven linears of both blocks, F16 parameters drawn at
  random (so each adapter visibly changes the logits), bound to the base's data span;
* ``tiny-llama.json``: two prompts (a chat with a system message, and bare text with digits
  and a merge) with their token ids, and the float64 logits of every position of each prompt
  without any adapter and with each adapter, from :mod:`riffle_train.llama` run in float64
  with the F16 adapter parameters widened exactly (written with 12 significant digits, far
  below any float32 runtime's error).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import gguf_io
from .gguf_io import F32, U32
from .llama import LINEARS, Llama, LlamaConfig, llama_from_gguf
from .llm import DEFAULT_SYSTEM, encode, render_chat

TINY = LlamaConfig(vocab=0, d=64, ff=128, layers=2, heads=4, kv_heads=2, rope_base=10000.0, eps=1e-5, ctx=256)
FIXTURE_CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the 42 tea"}]
FIXTURE_TEXT = "he said: the 1999 tea, the end"
# (method, seed of its random parameters); GSOFT's seed 1 keeps its file as first committed.
FIXTURE_ADAPTERS = (("gsoft", 1), ("double_gsoft", 2), ("oft", 3), ("boft", 4))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 single-character byte tokens, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, (chr(c) for c in cs)))
    return [table[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): the ChatML specials, the 256 byte symbols and two merges."""
    toks = SPECIALS + byte_symbols() + ["Ġt", "he"]
    types = [3] * len(SPECIALS) + [1] * (len(toks) - len(SPECIALS))
    return toks, types, ["Ġ t", "h e"]


def tiny_kv(cfg: LlamaConfig) -> dict:
    toks, types, merges = tiny_vocab()
    return {"general.type": "model", "general.name": "riffle tiny random llama",
            "llama.block_count": U32(cfg.layers), "llama.context_length": U32(cfg.ctx),
            "llama.embedding_length": U32(cfg.d), "llama.feed_forward_length": U32(cfg.ff),
            "llama.attention.head_count": U32(cfg.heads), "llama.attention.head_count_kv": U32(cfg.kv_heads),
            "llama.rope.freq_base": F32(cfg.rope_base), "llama.attention.layer_norm_rms_epsilon": F32(cfg.eps),
            "llama.rope.dimension_count": U32(cfg.head_dim), "llama.vocab_size": U32(len(toks)),
            "general.file_type": U32(0),
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": U32(1), "tokenizer.ggml.eos_token_id": U32(2),
            "tokenizer.ggml.padding_token_id": U32(2), "tokenizer.ggml.add_bos_token": False,
            "tokenizer.ggml.add_space_prefix": False, "tokenizer.chat_template": CHAT_TEMPLATE}


def tiny_tensors(cfg: LlamaConfig, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Random weights in llama.cpp's tensor order (F32, PyTorch shapes)."""
    rng = np.random.default_rng(seed)
    hd = cfg.head_dim
    f = lambda *s, sd=0.08: (rng.standard_normal(s) * sd).astype(np.float32)  # noqa: E731
    out = [("token_embd.weight", f(cfg.vocab, cfg.d, sd=0.5))]
    for i in range(cfg.layers):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (1 + f(cfg.d, sd=0.1)).astype(np.float32)),
                (p + "attn_q.weight", f(cfg.heads * hd, cfg.d, sd=0.15)),
                (p + "attn_k.weight", f(cfg.kv_heads * hd, cfg.d, sd=0.15)),
                (p + "attn_v.weight", f(cfg.kv_heads * hd, cfg.d)),
                (p + "attn_output.weight", f(cfg.d, cfg.heads * hd)),
                (p + "ffn_norm.weight", (1 + f(cfg.d, sd=0.1)).astype(np.float32)),
                (p + "ffn_gate.weight", f(cfg.ff, cfg.d)),
                (p + "ffn_up.weight", f(cfg.ff, cfg.d)),
                (p + "ffn_down.weight", f(cfg.d, cfg.ff))]
    out.append(("output_norm.weight", (1 + f(cfg.d, sd=0.1)).astype(np.float32)))
    return out


def tiny_config() -> LlamaConfig:
    from dataclasses import replace

    return replace(TINY, vocab=len(tiny_vocab()[0]))


def write_tiny_llama(path: str | Path, seed: int = 0) -> dict:
    """Write the tiny random llama GGUF; returns the span facts (``model_id`` = its base id)."""
    cfg = tiny_config()
    return gguf_io.write_gguf(path, "llama", tiny_kv(cfg), tiny_tensors(cfg, seed))


def write_random_adapter(base: str | Path, path: str | Path, seed: int = 1, block_size: int = 8,
                         method: str = "gsoft") -> dict:
    """A random adapter (F16 parameters) on every linear of ``base`` bound to its data span."""
    from .layers import adapted_modules, inject
    from .llm import Budget, export_adapter
    from .llama import base_model_id

    model, _ = llama_from_gguf(base)
    names = [f"blk.{i}.{w}" for i in range(len(model.blk)) for w in LINEARS]
    inject(model, names, method=method, block_size=block_size, scale=True, weight_bank=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in adapted_modules(model):
            for ch in (mod.oft_in, mod.oft_out):
                if ch is not None:
                    for p in ch.params:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            mod.oft_scale.copy_(1 + torch.randn(mod.oft_scale.shape, generator=g) * 0.05)
    return export_adapter(model, method, Budget(block_size=block_size), "fixture", path, base_model_id(base), [])


@torch.no_grad()
def logits64(base: str | Path, adapter: str | Path | None, ids: list[int]) -> np.ndarray:
    """Float64 logits (T, vocab) of ``ids`` on ``base`` (optionally with ``adapter``)."""
    from .llm import load_adapter

    model, _ = llama_from_gguf(base, dtype=torch.float64)
    if adapter is not None:
        load_adapter(model, adapter)
        model.double()
    return model(torch.tensor([ids])).squeeze(0).numpy()


def _rows(m: np.ndarray) -> list[list[float]]:
    return [[float(f"{v:.12g}") for v in row] for row in m]


def write_fixture(out: str | Path) -> dict:
    """Write the tiny llama, one random adapter per method and their float64 logits into
    ``out``; returns the JSON document."""
    from .llama import base_model_id
    from .llm import tokenizer_from_gguf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "tiny-llama-f32.gguf"
    bf = write_tiny_llama(base)
    tok = tokenizer_from_gguf(base)
    prompts = [("chat", render_chat(FIXTURE_CHAT)), ("text", FIXTURE_TEXT)]
    ids = [encode(tok, text) for _, text in prompts]
    doc = {"about": "riffle_train.llm_fixture (python -m riffle_train llm fixture): float64 logits of every "
                    "position of two prompts on the tiny random llama, without and with one random adapter "
                    "of each method",
           "base": base.name, "base_model_id": base_model_id(base), "base_bytes": bf["bytes"],
           "vocab": len(tiny_vocab()[0]),
           "prompts": [{"name": n, "text": t, "tokens": i} for (n, t), i in zip(prompts, ids)],
           "logits": [_rows(logits64(base, None, i)) for i in ids],
           "adapters": []}
    for method, seed in FIXTURE_ADAPTERS:
        path = out / f"tiny-llama-{method}.gguf"
        af = write_random_adapter(base, path, seed=seed, method=method)
        doc["adapters"].append({"method": method, "file": path.name, "data_crc32": af["data_crc32"],
                                "bytes": af["bytes"], "logits": [_rows(logits64(base, path, i)) for i in ids]})
    (out / "tiny-llama.json").write_text(json.dumps(doc) + "\n")
    return doc
