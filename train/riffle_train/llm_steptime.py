"""Training-step time of several methods in one process, interleaved (CPU).

``llm memory`` times each method in its own process, two steps each, so on a shared machine its
seconds per step carry the load of whatever else ran at that moment. This loads the Q4_1 base
once, adapts a copy per method (``method+path`` names as ``llm memory`` takes them; PEFT LoRA r=4
needs ``train/peft-env``'s python), warms each up with one step, then runs ``rounds`` rounds of
one AdamW step per method in turn on one fixed batch (seeded random tokens, the answer loss on the
last 8 positions, as ``llm memory``). Each round's step time of every method is divided by the
reference method's time of the same round, so the load a round saw cancels out of its ratios;
``steptime.md`` gives the median ratio and its spread (smallest and largest round).

    $PP -m riffle_train.llm_steptime --methods gsoft+plain,gsoft+lean,lora --reference lora --rounds 8
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def run_steptime(base: str, methods: list[str], reference: str, rounds: int, batch: int = 2, tokens: int = 64,
                 seed: int = 0, threads: int = 1) -> dict:
    """Seconds of each round per method, and per-round ratios to ``reference``."""
    from . import llm
    from .llama import llama_from_gguf
    from .llm_memory import _path_of, _split

    if reference not in methods:
        raise ValueError(f"--reference {reference!r} is not among --methods")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    base_model, _ = llama_from_gguf(base)
    for p in base_model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, base_model.cfg.vocab, (batch, tokens), generator=g)
    lab = torch.full_like(ids, -100)
    lab[:, -8:] = ids[:, -8:]
    att = torch.ones_like(ids)
    steps, paths = {}, {}
    for m in methods:
        name, path = _split(m)
        model = copy.deepcopy(base_model)
        wrapped = llm.apply_method(model, name, llm.targets(model, None), llm.Budget(), path)
        paths[m] = _path_of(wrapped)
        opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
        wrapped.train()

        def step(wrapped=wrapped, opt=opt) -> None:
            loss = llm.answer_loss(wrapped, ids, lab, att)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up: AdamW state, kernels paged in
        steps[m] = step
    secs: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(rounds):
        for m in methods:
            t0 = time.perf_counter()
            steps[m]()
            secs[m].append(round(time.perf_counter() - t0, 3))
    ratios = {m: [round(a / b, 3) for a, b in zip(secs[m], secs[reference])] for m in methods}
    return {"seconds": secs, "ratios": ratios, "paths": paths}


def _threads(n: int) -> str:
    return "one thread" if n == 1 else f"{n} threads"


def markdown(res: dict, meta: dict) -> str:
    from .llm_memory import label

    ref = meta["reference"]
    lines = ["# Training-step time, methods interleaved in one process (CPU)", "",
             f"Base `{meta['base']}` dequantized to fp32, all 7 linears of all 30 blocks adapted (ours b=8, BOFT m=2; "
             f"LoRA r=4); one fixed batch of {meta['batch']} x {meta['tokens']} tokens, one AdamW step per method per "
             f"round, {meta['rounds']} rounds, {_threads(meta.get('threads', 1))}, torch {meta['torch']}. Ratio: a round's step time over "
             f"{label(ref, res['paths'].get(ref))}'s in the same round (median, and the smallest and largest "
             "round's).", f"Command: `{meta['command']}`", "",
             "| method | s/step (median) | s/step (each round) | ratio to reference (median) | ratio range |",
             "|---|---:|---|---:|---|"]
    for m, xs in res["seconds"].items():
        r = res["ratios"][m]
        lines.append(f"| {label(m, res['paths'].get(m))} | {statistics.median(xs):.2f} | {', '.join(f'{x:.2f}' for x in xs)} | "
                     f"{statistics.median(r):.2f} | {min(r):.2f} - {max(r):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="training-step time of several methods, interleaved in one process")
    ap.add_argument("--base", required=True)
    ap.add_argument("--methods", default="gsoft+plain,gsoft+lean,lora")
    ap.add_argument("--reference", default="lora")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (files steptime-t<N>.* when not 1)")
    ap.add_argument("--out", default="train/results/llm")
    a = ap.parse_args(argv)
    res = run_steptime(a.base, a.methods.split(","), a.reference, a.rounds, a.batch, a.tokens, threads=a.threads)
    from .llm import device_name

    meta = {"base": Path(a.base).name, "torch": torch.__version__, "cpu": device_name("cpu"),
            "batch": a.batch, "tokens": a.tokens, "rounds": a.rounds, "reference": a.reference, "threads": a.threads,
            "command": "python -m riffle_train.llm_steptime " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "steptime" if a.threads == 1 else f"steptime-t{a.threads}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, **res}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(res, meta))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
