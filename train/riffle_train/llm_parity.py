"""Parity of the committed SmolLM2 adapters: the runtime's held-out score against the trainer's.

For each task, on its committed held-out chats (``models/smollm2-adapters/heldout``):

* the trainer answers with :func:`riffle_train.llama.greedy_generate` in fp32 on the CPU, on
  the Q4_1 file's weights dequantized exactly, the adapter file loaded (F16 parameters widened);
* the runtime answers each chat with ``riffle generate --model Q4_1 --adapter A --chat TEXT
  --temperature 0 --max-tokens N --json`` (one process per chat; ``--chat`` renders the file's
  own ``tokenizer.chat_template``, which adds SmolLM2's default system message exactly as
  :func:`riffle_train.llm.render_chat` does for the trainer);
* both are scored by :func:`riffle_train.llm.score`; the table gives both scores, their
  difference, and how many answers are token-for-token identical, with the differing answers.

``python -m riffle_train llm parity [--tasks ...] [--riffle target/release/riffle]`` writes
``train/results/llm/parity.json`` and ``parity.md``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import torch

from . import llm
from .llama import base_model_id, greedy_generate, llama_from_gguf

REPO = Path(__file__).resolve().parents[2]
ADAPTERS = REPO / "models" / "smollm2-adapters"


def trainer_answers(base: str | Path, adapter: str | Path, chats: list[list[dict]], max_new: int,
                    batch: int = 16) -> list[list[int]]:
    """The trainer's greedy answer ids (fp32, CPU) to each chat with ``adapter`` loaded."""
    model, _ = llama_from_gguf(base)
    llm.load_adapter(model, adapter, base_model_id(base))
    model.eval()
    tok = llm.tokenizer_from_gguf(base)
    prompts = [llm.encode(tok, llm.render_chat(c)) for c in chats]
    stop = tok.token_to_id(llm.IM_END)
    return greedy_generate(model, prompts, max_new, stop, batch=batch, pad=stop)


def runtime_answer(riffle: str | Path, base: str | Path, adapter: str | Path, text: str, max_new: int,
                   threads: int = 1) -> dict:
    """``riffle generate ... --json``'s final object for one user message."""
    cmd = [str(riffle), "generate", "--model", str(base), "--adapter", str(adapter), f"--chat={text}",
           "--temperature", "0", "--max-tokens", str(max_new), "--threads", str(threads), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ...: exit {r.returncode}: {r.stderr.strip()[:300]}")
    last = json.loads(r.stdout.strip().splitlines()[-1])
    if not last.get("done"):
        raise RuntimeError(f"riffle generate ended without its done line: {r.stdout[-300:]}")
    return last


def run_task(task: str, base: str | Path, riffle: str | Path, limit: int | None = None, log=print) -> dict:
    recs = llm.read_heldout(task)[:limit]
    adapter = ADAPTERS / f"smollm2-{task}.gguf"
    chats = [r["messages"] for r in recs]
    for c in chats:
        if len(c) != 1 or c[0]["role"] != "user":
            raise ValueError(f"{task}: a held-out chat is not one user message")
    expected = [r["answer"] for r in recs]
    labels = llm.task_labels(task)
    mx = llm.max_new_tokens(task)
    tok = llm.tokenizer_from_gguf(base)

    t0 = time.perf_counter()
    t_ids = trainer_answers(base, adapter, chats, mx)
    t_s = time.perf_counter() - t0
    t_texts = [tok.decode(i, skip_special_tokens=False) for i in t_ids]
    log(f"[{task}] trainer: {len(recs)} answers in {t_s:.0f} s", flush=True)

    t0 = time.perf_counter()
    r_out = [runtime_answer(riffle, base, adapter, c[0]["content"], mx) for c in chats]
    r_s = time.perf_counter() - t0
    r_ids = [o["tokens"] for o in r_out]
    r_texts = [o["text"] for o in r_out]
    log(f"[{task}] runtime: {len(recs)} answers in {r_s:.0f} s", flush=True)

    ts = llm.score(task, t_texts, expected, labels)
    rs = llm.score(task, r_texts, expected, labels)
    same = sum(a == b for a, b in zip(t_ids, r_ids))
    diffs = []
    for rec, a, b, e, ai, bi in zip(recs, t_texts, r_texts, expected, t_ids, r_ids):
        if ai == bi:
            continue
        one = lambda x: llm.score(task, [x], [e], labels)["score"]  # noqa: E731
        d = {"id": rec["id"], "trainer_correct": one(a), "runtime_correct": one(b)}
        if task in llm.LICENCE_FREE:  # the BBC articles' text (titles) is not committed
            d.update({"expected": e, "trainer": a, "runtime": b})
        diffs.append(d)
    res = {"task": task, "adapter": adapter.name, "n": len(recs), "trainer": ts, "runtime": rs,
           "difference_points": round(100 * (rs["score"] - ts["score"]), 2), "identical_answers": same,
           "trainer_seconds": round(t_s, 1), "runtime_seconds": round(r_s, 1), "differing": diffs}
    log(f"[{task}] trainer {100 * ts['score']:.1f} runtime {100 * rs['score']:.1f} "
        f"identical {same}/{len(recs)}", flush=True)
    return res


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Parity: runtime against trainer on the committed SmolLM2 adapters", "",
             f"Base: `{meta['base']}`. Trainer: PyTorch {meta['torch']} fp32 on the CPU, the Q4_1 weights "
             "dequantized exactly, greedy, batches of 16 left-padded. Runtime: `riffle generate --model Q4_1 "
             "--adapter A --chat TEXT --temperature 0 --max-tokens N --threads 1 --json` (release build), one "
             "process per chat. Both render the file's ChatML template with its default system message.",
             f"Command: `{meta['command']}`", "",
             "| task | adapter | held-out | trainer score | runtime score | runtime - trainer (points) | "
             "trainer well-formed | runtime well-formed | identical answers |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['task']} | `{r['adapter']}` | {r['n']} | {100 * r['trainer']['score']:.1f} | "
                     f"{100 * r['runtime']['score']:.1f} | {r['difference_points']:+.1f} | "
                     f"{100 * r['trainer']['well_formed']:.1f} | {100 * r['runtime']['well_formed']:.1f} | "
                     f"{r['identical_answers']}/{r['n']} |")
    lines.append("")
    for r in results:
        if r["differing"]:
            lines += [f"## {r['task']}: the {len(r['differing'])} answers that differ", "",
                      "| id | expected | trainer | runtime | trainer correct | runtime correct |",
                      "|---|---|---|---|---:|---:|"]
            esc = lambda s: json.dumps(s, ensure_ascii=False).replace("|", "\\|")  # noqa: E731
            for d in r["differing"]:
                txt = [esc(d[k]) if k in d else "(BBC text not committed)" for k in ("expected", "trainer", "runtime")]
                lines.append(f"| {d['id']} | {' | '.join(txt)} | {d['trainer_correct']} | {d['runtime_correct']} |")
            lines.append("")
    return "\n".join(lines)


def run_parity(base: str | Path, riffle: str | Path, tasks, out: str | Path, limit: int | None = None,
               threads: int = 1, command: str = "", log=print) -> list[dict]:
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"base": Path(base).name, "torch": torch.__version__, "command": command}
    results = []
    for task in tasks:
        results.append(run_task(task, base, riffle, limit, log))
        (out / "parity.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1,
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "parity.md").write_text(markdown(results, meta), encoding="utf-8")
    return results
