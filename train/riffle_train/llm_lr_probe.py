"""Small CPU probe of Double GSOFT against GSOFT on one task (issue 20: Double GSOFT scored 43.5
against GSOFT's 71.0 on sentiment on the H200).

Each run trains one method at one learning rate from the same frozen base, on the same batches
(:func:`riffle_train.llm.make_batches`, seed 0), with the comparison's schedule (AdamW, 10% warm-up,
linear decay), then reports the training loss (first, mean of the last quarter), the relative
size of the learned change of the adapted weights ``||W' - W||_F / ||W||_F`` (median over the
adapted linears; how far the adapter moved the layer), and the held-out score of greedy answers on
``heldout`` chats evenly spaced over the task's committed held-out set (sorted by label), in fp32,
with how many answers start with each label.

``python -m riffle_train.llm_lr_probe --runs gsoft@3e-3,double_gsoft@3e-3,double_gsoft@1.5e-3``
writes ``train/results/llm/<name>.json`` and ``.md`` (``--name``, default ``double-gsoft-probe``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import llm
from .layers import adapted_modules, trainable_parameters
from .llama import SMOLLM2_Q4_1, llama_from_gguf
from .trainer import seed_everything


def weight_change(model) -> float:
    """Median over adapted linears of ``||W' - W||_F / ||W||_F``."""
    r = []
    with torch.no_grad():
        for _, mod in adapted_modules(model):
            w = mod._wmat()
            r.append(float((mod.adapted_weight() - w).norm() / w.norm()))
    return float(np.median(r))


def run(task: str, runs: list[tuple[str, float]], b: llm.Budget, heldout: int, base_path: str, log=print) -> dict:
    torch.set_num_threads(1)
    tok = llm.tokenizer_from_gguf(base_path)
    base, _ = llama_from_gguf(base_path)
    for p in base.parameters():
        p.requires_grad_(False)
    prep = llm.prepare(task, tok, b)
    recs = llm.read_heldout(task)
    # evenly spaced over the committed set (it is sorted by label): every class in proportion
    recs = [recs[i * len(recs) // heldout] for i in range(min(heldout, len(recs)))]
    chats = [r["messages"] for r in recs]
    expected = [r["answer"] for r in recs]
    labels = llm.task_labels(task)
    pad = tok.token_to_id(llm.IM_END)
    out = {"task": task, "budget": llm.budget_dict(b), "heldout": len(recs), "runs": []}
    for method, lr in runs:
        seed_everything(0)
        model = copy.deepcopy(base)
        wrapped = llm.apply_method(model, method, llm.targets(model, b.blocks), b)
        n = trainable_parameters(wrapped)
        batches = llm.make_batches(prep.rows, b.batch, b.steps, 0, b.max_prompt, pad)
        t0 = time.perf_counter()
        tr = llm.train_steps(wrapped, batches, b.steps, lr, torch.device("cpu"), False, log=log,
                             tag=f"{task}/{method}@{lr}")
        losses = tr["losses"]
        texts = llm.generate_texts(wrapped, tok, chats, llm.max_new_tokens(task), 16, False)
        sc = llm.score(task, texts, expected, labels)
        row = {"method": method, "lr": lr, "trainable": n, "first_loss": round(losses[0], 4),
               "last_quarter_loss": round(float(np.mean(losses[-max(1, len(losses) // 4):])), 4),
               "max_loss_after_first": round(float(max(losses[1:])), 4) if len(losses) > 1 else None,
               "weight_change": round(weight_change(wrapped), 5), "score": sc["score"],
               "well_formed": sc["well_formed"], "seconds": round(time.perf_counter() - t0, 1),
               "losses": [round(x, 4) for x in losses],
               "answers": {lab: sum(llm.first_word(t) == lab for t in texts) for lab in (labels or [])}}
        log(f"{method}@{lr}: loss {row['first_loss']} -> {row['last_quarter_loss']}, "
            f"|dW|/|W| {row['weight_change']}, score {sc['score']:.3f}", flush=True)
        out["runs"].append(row)
    return out


def markdown(res: dict, command: str) -> str:
    b = res["budget"]
    lines = ["# Double GSOFT against GSOFT: small CPU probe", "",
             f"Task {res['task']}; {b['steps']} steps x batch {b['batch']} (prompt cut to {b['max_prompt']} tokens), "
             f"up to {b['train']} training chats, AdamW with 10% warm-up and linear decay, seed 0, same batches "
             f"for every run; all 7 linears of blocks {b['blocks']}; b={b['block_size']}; fp32, CPU, one thread. "
             f"Held-out: {res['heldout']} chats evenly spaced over the committed set, greedy.",
             f"Command: `{command}`", "",
             "| method | lr | trainable | first loss | max loss after step 0 | last-quarter loss | "
             "median ‖W'−W‖/‖W‖ | held-out score | well-formed | answers by label |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['method']} | {r['lr']} | {r['trainable']} | {r['first_loss']} | {r['max_loss_after_first']} | "
                     f"{r['last_quarter_loss']} | {r['weight_change']} | {100 * r['score']:.1f} | "
                     f"{100 * r['well_formed']:.1f} | {', '.join(f'{k} {v}' for k, v in r['answers'].items())} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--runs", default="gsoft@3e-3,double_gsoft@3e-3,double_gsoft@1.5e-3")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--max-prompt", type=int, default=96)
    ap.add_argument("--heldout", type=int, default=60)
    ap.add_argument("--blocks", default=None, help="comma-separated block indices (default all)")
    ap.add_argument("--base", default=str(SMOLLM2_Q4_1))
    ap.add_argument("--out", default="train/results/llm")
    ap.add_argument("--name", default="double-gsoft-probe", help="output file stem")
    a = ap.parse_args(argv)
    runs = [(m, float(lr)) for m, lr in (x.split("@") for x in a.runs.split(","))]
    blocks = tuple(int(x) for x in a.blocks.split(",")) if a.blocks else None
    b = llm.Budget(train=a.train, heldout=a.heldout, steps=a.steps, batch=a.batch, max_prompt=a.max_prompt,
                   blocks=blocks)
    res = run(a.task, runs, b, a.heldout, a.base)
    cmd = "python -m riffle_train.llm_lr_probe " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps({**res, "command": cmd}, indent=1) + "\n")
    (out / f"{a.name}.md").write_text(markdown(res, cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
