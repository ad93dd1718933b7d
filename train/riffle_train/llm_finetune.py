"""Train an orthogonal adapter on your own chats: ``python -m riffle_train llm train``.

The data is a JSONL file, one conversation per line, in either of the two formats people
already have for fine-tuning chat models:

* ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`` (the
  chat fine-tuning format of OpenAI's API and of Hugging Face TRL). Every assistant message
  is trained on, but one with ``"weight": 0`` (it stays in the context, as the earlier
  turns of a conversation the model should continue).
* ``{"prompt": "...", "completion": "..."}``: a user message and the assistant's answer.

Each conversation is rendered by the base file's own chat template
(``tokenizer.chat_template``, a Jinja template rendered as the runtime renders it: no
``trim_blocks``, the same ``bos_token`` / ``eos_token``), so the adapter learns on exactly
the text ``riffle chat``, ``riffle generate --chat`` and ``riffle serve`` give the model. The
loss covers each trained answer's tokens and the end-of-turn token that closes it (where the
runtime stops), nothing else. The base is the GGUF file itself, dequantized exactly: the
adapter is trained on the weights it will run on, and its file is bound to that base
(``adapter.base_model_id``, plus ``adapter.compatible_model_ids`` for other files of the same
weights).

Bad input (a line that is not a conversation, a file without a chat template, sizes that do
not fit) raises :class:`DataError`, whose message names the file and line; the command
prints it on one line and exits 2. The adapter is written under a temporary name and
renamed (``gguf_io.write_gguf``): an existing file is replaced whole or not at all.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import gguf_io, llm
from .layers import trainable_parameters
from .llama import Llama, base_model_id, greedy_generate, llama_from_gguf
from .trainer import seed_everything

ROLES = ("system", "user", "assistant")
# The runtime's end-of-turn tokens besides eos and eot (host/src/text.rs): control tokens
# with these texts end an answer.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
# Most characters read from a data file (a larger file is refused before it is read).
MAX_DATA_BYTES = 1 << 30


class DataError(ValueError):
    """Input the command cannot train on; the message names the file and line."""


@dataclass
class Chat:
    """One conversation: its messages, and which of them are trained on."""
    messages: list[dict]
    trained: list[bool]
    where: str  # "FILE:LINE", for messages about it


@dataclass
class Settings:
    """What ``llm train`` trains with (the command's flags)."""
    method: str = "gsoft"
    block_size: int = 8
    boft_factors: int = 2
    blocks: tuple[int, ...] | None = None
    epochs: float = 3.0
    steps: int | None = None
    batch: int = 8
    lr: float = 1e-3
    max_length: int = 512
    validation_split: float = 0.1
    eval_limit: int = 50
    max_new_tokens: int = 256
    seed: int = 0


# --------------------------------------------------------------------------- data


def _message(v, where: str, k: int) -> dict:
    if not isinstance(v, dict):
        raise DataError(f"{where}: message {k} is not an object")
    role, content = v.get("role"), v.get("content")
    if role not in ROLES:
        raise DataError(f"{where}: message {k} has role {role!r} (expected one of {', '.join(ROLES)})")
    if not isinstance(content, str):
        raise DataError(f"{where}: message {k} has no text `content`")
    w = v.get("weight", 1)
    if role == "assistant" and w not in (0, 1):
        raise DataError(f"{where}: message {k} has weight {w!r} (0 or 1)")
    return {"role": role, "content": content}


def parse_chat(line: str, where: str) -> Chat:
    """One JSONL line as a :class:`Chat` (see the module's text for the formats)."""
    try:
        v = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(v, dict):
        raise DataError(f"{where}: not a JSON object")
    if "messages" in v:
        raw = v["messages"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where}: `messages` is not a non-empty list")
        msgs = [_message(m, where, k) for k, m in enumerate(raw)]
        trained = [m["role"] == "assistant" and raw[k].get("weight", 1) == 1 for k, m in enumerate(msgs)]
    elif "prompt" in v or "completion" in v:
        p, c = v.get("prompt"), v.get("completion")
        if not isinstance(p, str) or not isinstance(c, str):
            raise DataError(f"{where}: `prompt` and `completion` must both be strings")
        msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
        trained = [False, True]
    else:
        raise DataError(f"{where}: expected `messages`, or `prompt` and `completion`")
    if not any(trained):
        raise DataError(f"{where}: no assistant message to train on")
    return Chat(msgs, trained, where)


def read_chats(path: str | Path) -> list[Chat]:
    """Every conversation of a JSONL file (blank lines skipped)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"{path}: {e.strerror or e}") from None
    if size > MAX_DATA_BYTES:
        raise DataError(f"{path}: {size} bytes, more than the {MAX_DATA_BYTES} this command reads")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: {e.strerror or e}") from None
    chats = [parse_chat(ln, f"{path}:{i}") for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not chats:
        raise DataError(f"{path}: no conversations")
    return chats


# --------------------------------------------------------------------------- template and tokens


class ChatTemplate:
    """The base file's ``tokenizer.chat_template``, rendered as the runtime renders it
    (``host/src/chat.rs``: Jinja without ``trim_blocks``, ``raise_exception``, the file's
    ``bos_token`` and ``eos_token`` texts), sandboxed."""

    def __init__(self, kv: dict, where: str):
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = kv.get("tokenizer.chat_template")
        if not isinstance(source, str):
            raise DataError(f"{where}: has no chat template (`tokenizer.chat_template`)")
        toks = kv.get("tokenizer.ggml.tokens") or []

        def text_of(key: str) -> str:
            i = kv.get(key)
            return toks[i] if isinstance(i, int) and 0 <= i < len(toks) else ""

        def raise_exception(msg):
            raise TemplateError(msg)

        env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        try:
            self._t = env.from_string(source)
        except TemplateError as e:
            raise DataError(f"{where}: chat template does not parse: {e}") from None
        self.bos, self.eos, self.where = text_of("tokenizer.ggml.bos_token_id"), text_of(
            "tokenizer.ggml.eos_token_id"), where

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self._t.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                  bos_token=self.bos, eos_token=self.eos)
        except TemplateError as e:
            raise DataError(f"{self.where}: chat template: {e}") from None


def stop_ids(kv: dict, tok) -> set[int]:
    """The ids that end an answer in the runtime: eos, eot, and the end-of-turn control tokens."""
    ids = {kv[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if isinstance(kv.get(k), int)}
    types = kv.get("tokenizer.ggml.token_type") or []
    for s in END_OF_TURN:
        i = tok.token_to_id(s)
        if i is not None and i < len(types) and types[i] == 3:
            ids.add(i)
    return ids


def encode_chat(tok, template: ChatTemplate, chat: Chat, stops: set[int]) -> tuple[list[int], list[int]]:
    """(ids, labels) of a conversation as the template renders it, up to its last trained
    token: labels are ``-100`` except on each trained answer's tokens up to and including the
    first end-of-turn token in it. The text is encoded in pieces cut where answers begin and
    end (the runtime encodes a prompt, which ends where an answer begins, as a whole)."""
    msgs = chat.messages
    full = template.render(msgs, False)
    cuts: list[tuple[int, int]] = []
    for k, m in enumerate(msgs):
        if not chat.trained[k]:
            continue
        before = template.render(msgs[:k], True)
        upto = template.render(msgs[:k + 1], False)
        if not (upto.startswith(before) and full.startswith(upto) and len(upto) > len(before)):
            raise DataError(f"{chat.where}: the chat template does not render message {k} as a continuation "
                            "of the conversation before it, so its answer tokens cannot be told apart")
        cuts.append((len(before), len(upto)))
    ids: list[int] = []
    labels: list[int] = []
    at = 0
    for a, b in cuts:
        piece = llm.encode(tok, full[at:a])
        ids += piece
        labels += [-100] * len(piece)
        answer = llm.encode(tok, full[a:b])
        end = next((j + 1 for j, t in enumerate(answer) if t in stops), len(answer))
        ids += answer
        labels += answer[:end] + [-100] * (len(answer) - end)
        at = b
    # Nothing after the last trained token is trained on or predicts one: left out.
    end = max(j for j, x in enumerate(labels) if x != -100) + 1 if any(x != -100 for x in labels) else 0
    return ids[:end], labels[:end]


def fit(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int]] | None:
    """The last ``max_length`` tokens (the answers are at the end), or ``None`` when no trained
    token is left in them."""
    ids, labels = ids[-max_length:], labels[-max_length:]
    if all(x == -100 for x in labels[1:]):
        return None
    return ids, labels


# --------------------------------------------------------------------------- training


def _last_answer(chat: Chat) -> tuple[list[dict], str]:
    """The conversation before its last trained answer, and that answer."""
    k = max(i for i, t in enumerate(chat.trained) if t)
    return chat.messages[:k], chat.messages[k]["content"]


@torch.no_grad()
def answer_loss_mean(model, rows: list[tuple[list[int], list[int]]], pad: int, batch: int = 8) -> float:
    """Mean cross-entropy over every trained token of ``rows``."""
    total, count = 0.0, 0
    dev = next(llm.unwrap(model).parameters()).device
    for s in range(0, len(rows), batch):
        ids, lab, att = llm.collate(rows[s:s + batch], pad)
        n = int((lab[:, 1:] != -100).sum())
        total += float(llm.answer_loss(model, ids.to(dev), lab.to(dev), att.to(dev))) * n
        count += n
    return total / max(count, 1)


def exact_answers(model: Llama, tok, template: ChatTemplate, chats: list[Chat], stop: int, max_new: int,
                  batch: int = 16) -> tuple[float, list[str]]:
    """Greedy answers to each conversation's last trained turn, and the share equal to the
    expected answer (surrounding white space ignored)."""
    if not chats:
        return float("nan"), []
    parts = [_last_answer(c) for c in chats]
    prompts = [llm.encode(tok, template.render(m, True)) for m, _ in parts]
    outs = greedy_generate(model, prompts, max_new, stop, batch=batch, pad=stop)
    texts = [tok.decode(o, skip_special_tokens=True) for o in outs]
    hits = sum(t.strip() == want.strip() for t, (_, want) in zip(texts, parts))
    return hits / len(chats), texts


def refuse_overwriting(outputs: dict, inputs: dict) -> None:
    """:class:`DataError` when an output path (flag -> path) is a folder, or the same file as
    an input or as another output: the command never writes over what it reads."""
    seen = {k: Path(p) for k, p in inputs.items() if p is not None}
    for flag, p in outputs.items():
        if p is None:
            continue
        p = Path(p)
        if p.is_dir():
            raise DataError(f"{flag} {p} is a folder")
        for what, q in seen.items():
            if p.exists() and q.exists() and q.samefile(p):
                raise DataError(f"{flag} {p} is the {what} file")
        seen[flag] = p


def run_train(base: str | Path, data: str | Path, out: str | Path, task: str, s: Settings,
              validation: str | Path | None = None, compatible: list[str] = (), device: str | None = None,
              log=print) -> dict:
    """Train an adapter on ``data`` over the GGUF ``base`` and write it to ``out``; returns the
    report (also what the command prints)."""
    if s.method not in llm.OUR_METHODS:
        raise DataError(f"method {s.method!r} is not one of {', '.join(llm.OUR_METHODS)}")
    if not task or any(c.isspace() for c in task):
        raise DataError(f"task name {task!r} must be one word (it is what `:use`, `--task` and `model` name)")
    for name, v in (("batch", s.batch), ("max-length", s.max_length), ("block-size", s.block_size)):
        if v < 1:
            raise DataError(f"--{name} must be at least 1 (got {v})")
    for name, v in (("lr", s.lr), ("epochs", s.epochs)):
        if not (v > 0 and math.isfinite(v)):
            raise DataError(f"--{name} must be a positive number (got {v})")
    if not 0 <= s.validation_split < 1:
        raise DataError(f"--validation-split must be at least 0 and below 1 (got {s.validation_split})")
    if s.steps is not None and s.steps < 1:
        raise DataError(f"--steps must be at least 1 (got {s.steps})")
    base = Path(base)
    if not base.is_file():
        raise DataError(f"{base}: no such file")
    refuse_overwriting({"--out": out}, {"--base": base, "--data": data, "--validation": validation})
    seed_everything(s.seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kv = gguf_io.read_kv_only(base)
    try:
        tok = llm.tokenizer_from_gguf(base)
    except (ValueError, KeyError) as e:
        raise DataError(f"{base}: its tokenizer is not one this command reads ({e})") from None
    template = ChatTemplate(kv, str(base))
    stops = stop_ids(kv, tok)
    if not stops:
        raise DataError(f"{base}: the vocabulary names no end-of-turn token")
    chats = read_chats(data)
    if validation is not None:
        held = read_chats(validation)
    else:
        g = torch.Generator().manual_seed(s.seed)
        order = torch.randperm(len(chats), generator=g).tolist()
        k = int(len(chats) * s.validation_split) if len(chats) >= 20 else 0
        held = [chats[i] for i in sorted(order[:k])]
        chats = [chats[i] for i in sorted(order[k:])]
    rows, skipped = [], 0
    for c in chats:
        r = fit(*encode_chat(tok, template, c, stops), s.max_length)
        if r is None:
            skipped += 1
        else:
            rows.append(r)
    if not rows:
        raise DataError(f"{data}: no conversation keeps a trained token within --max-length {s.max_length}")
    held_rows = [r for r in (fit(*encode_chat(tok, template, c, stops), s.max_length) for c in held) if r]
    steps = s.steps if s.steps is not None else max(1, math.ceil(s.epochs * len(rows) / s.batch))
    model, _ = llama_from_gguf(base)
    model.to(dev)
    if s.blocks is not None and any(not 0 <= i < len(model.blk) for i in s.blocks):
        raise DataError(f"--blocks {','.join(map(str, s.blocks))}: the base has blocks 0 to {len(model.blk) - 1}")
    pad = max(stops)
    stop = _answer_stop(rows, stops)
    limit = held[: s.eval_limit]
    # The bare base, kept for scoring (before training) and for the adapter read back (after).
    base_copy = copy.deepcopy(model) if (held_rows or limit) else None
    b = llm.Budget(block_size=s.block_size, boft_block_size=s.block_size, boft_factors=s.boft_factors,
                   blocks=s.blocks)
    try:
        llm.apply_method(model, s.method, llm.targets(model, s.blocks), b)
    except ValueError as e:
        raise DataError(f"{s.method} with block size {s.block_size}: {e}") from None
    log(f"{len(rows)} training conversations ({skipped} skipped: no answer within --max-length), "
        f"{len(held)} held out; {steps} steps of {s.batch} on {llm.device_name(dev)}", flush=True)

    max_new = _max_new(tok, limit, s.max_new_tokens)
    report_val: dict = {"conversations": len(held_rows), "generated": len(limit)}
    if held_rows:
        report_val["base_loss"] = round(answer_loss_mean(base_copy, held_rows, pad), 4)
    if limit:
        report_val["base_exact"], _ = exact_answers(base_copy, tok, template, limit, stop, max_new)

    trainable = trainable_parameters(model)
    batches = (llm.collate([rows[i] for i in take], pad) for take in llm.batch_order(len(rows), s.batch, steps, s.seed))
    t0 = time.perf_counter()
    tr = llm.train_steps(model, batches, steps, s.lr, dev, False, log=log, tag=f"{s.method} {task}")
    seconds = time.perf_counter() - t0

    base_id = base_model_id(base)
    comp = sorted({c for c in compatible if c != base_id})
    name = kv.get("general.name") if isinstance(kv.get("general.name"), str) else base.stem
    facts = llm.export_adapter(model, s.method, b, task, out, base_id, comp, base_name=name)
    del model
    if base_copy is not None:
        # Scored as the runtime runs it: the F16 file, reloaded.
        llm.load_adapter(base_copy, out, base_id)
        if held_rows:
            report_val["adapter_loss"] = round(answer_loss_mean(base_copy, held_rows, pad), 4)
        if limit:
            report_val["adapter_exact"], texts = exact_answers(base_copy, tok, template, limit, stop, max_new)
            report_val["examples"] = [{"expected": _last_answer(c)[1], "answer": t} for c, t in zip(limit[:3], texts)]
    return {
        "adapter": str(out), "task": task, "bytes": facts["bytes"], "base": str(base), "base_model_id": base_id,
        "compatible_model_ids": comp, "trainable_parameters": trainable, "device": llm.device_name(dev),
        "train_conversations": len(rows), "skipped": skipped, "steps": steps, "train_seconds": round(seconds, 2),
        "loss_first": round(tr["losses"][0], 4),
        "loss_last_10": round(sum(tr["losses"][-10:]) / len(tr["losses"][-10:]), 4),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
        "validation": report_val,
    }


def _answer_stop(rows: list[tuple[list[int], list[int]]], stops: set[int]) -> int:
    """The end-of-turn token the answers end with (the most common), for greedy generation."""
    seen: dict[int, int] = {}
    for _, lab in rows:
        for t in lab:
            if t in stops:
                seen[t] = seen.get(t, 0) + 1
    return max(seen, key=seen.get) if seen else min(stops)


def _max_new(tok, chats: list[Chat], cap: int) -> int:
    """Tokens to generate for the held-out answers: the longest expected one plus 8, at most ``cap``."""
    if not chats:
        return 1
    return min(cap, max(len(llm.encode(tok, _last_answer(c)[1])) for c in chats) + 8)
