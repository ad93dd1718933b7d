"""SmolLM2 adapters compared with the learning rate chosen per method on a validation slice.

``llm compare`` trains every method once at one learning rate. A method's best learning rate
depends on how its parameters move the weights (Double GSOFT at the same lr moves them about
√2 as far as GSOFT; see docs/training.md), so one shared lr favours some methods by accident.
``llm sweep`` trains each (task, method) at every lr of a grid, scores greedy answers on a
validation slice carved out of the training split, picks the lr with the best validation score
and reports that run's held-out score. The held-out set is never used to choose anything.

Runs are independent, so a pool of worker processes shares one GPU (or the CPU): each worker
gets the dequantised base from its parent (through shared memory), takes jobs from a queue and
sends each finished job back at once; the parent appends it to ``sweep.jsonl``, so a run cut
short keeps every finished job and :func:`summarize` makes the tables from whatever is there.
Concurrent runs distort step time and peak memory, so those come from a separate phase in which
each method trains alone (``timing``), before the pool starts.

One seed gives one draw of the training batches (and of LoRA's initialisation): on 200 held-out
chats a difference of a few chats is inside that noise. ``--seeds-at-chosen 1,2`` appends runs
of further seeds at each (task, method)'s chosen lr to a finished sweep's file; the choice still
reads seed 0's validation scores alone, and the tables add each method's mean over its seeds.

A validation slice of 100 chats separates two rates only by more than its own noise (one chat is
a point; the standard error of a 92% score is about 2.7), so seed 0's choice between rates a few
chats apart is a coin toss. ``--seeds-at-contenders 1,2`` trains those seeds at every *contender*
rate of each (task, method), the seed-0 runs within ``--contender-margin`` (default 0.02, two
validation chats) of its best validation score, and :func:`choose_on_seeds` chooses among them by
the mean validation score over the seeds every contender has (ties: mean well-formedness, then
the smaller rate). The held-out set still chooses nothing.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from . import llm
from .llm import OUR_METHODS, Budget, Prepared

LABELS = {"gsoft": "GSOFT", "double_gsoft": "Double GSOFT", "oft": "OFT", "boft": "BOFT", "lora": "PEFT LoRA"}


def carve(prep: Prepared, val: int, seed: int = 1) -> tuple[Prepared, list]:
    """Split ``val`` examples (seeded, without replacement) off the training examples: returns the
    task with the rest as training rows, and the validation examples."""
    if not 0 < val < len(prep.train):
        raise ValueError(f"{prep.task}: validation size {val} must be in 1..{len(prep.train) - 1}")
    pick = set(random.Random(seed).sample(range(len(prep.train)), val))
    keep = [i for i in range(len(prep.train)) if i not in pick]
    rest = Prepared(prep.task, prep.labels, [prep.train[i] for i in keep], prep.heldout,
                    [prep.rows[i] for i in keep])
    return rest, [prep.train[i] for i in sorted(pick)]


def job_list(tasks, methods, lrs, baselines: bool = True) -> list[dict]:
    """Every job, task by task (so a task's grid finishes early): its base prompting, then each lr of
    the grid for every method."""
    out = []
    for t in tasks:
        if baselines:
            out.append({"task": t, "method": "base"})
        for lr in lrs:
            for m in methods:
                out.append({"task": t, "method": m, "lr": lr})
    return out


def seed_jobs(jobs: list[dict], tasks, methods, seeds, margin: float | None = None) -> list[dict]:
    """Runs of further ``seeds`` at the lr each (task, method) chose on seed 0's validation
    (:func:`choose`), for the given tasks and methods that have a choice. With a contender
    ``margin``, at the lr chosen on several seeds (:func:`choose_on_seeds`) where there is one,
    leaving out the runs the file already holds."""
    best = {k: c["lr"] for k, c in choose(jobs).items()}
    have = set()
    if margin is not None:
        best.update({k: c["lr"] for k, c in choose_on_seeds(jobs, margin).items()})
        have = _finished(jobs)
    return [{"task": t, "method": m, "lr": best[(t, m)], "seed": s}
            for t in tasks for m in methods if (t, m) in best for s in seeds
            if (t, m, best[(t, m)], s) not in have]


def _trained(jobs: list[dict]) -> list[dict]:
    """The training runs that finished (no base prompting, no error)."""
    return [j for j in jobs if j["method"] != "base" and "error" not in j]


def _seed0_runs(jobs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Per (task, method) with at least one: its finished seed-0 runs (the sweep's own grid)."""
    by: dict[tuple[str, str], list[dict]] = {}
    for j in _trained(jobs):
        if j.get("seed", 0) == 0:
            by.setdefault((j["task"], j["method"]), []).append(j)
    return by


def contenders(jobs: list[dict], margin: float) -> dict[tuple[str, str], list[dict]]:
    """Per (task, method): its seed-0 runs (finished) whose validation score is within ``margin`` of
    the best seed-0 validation score, by lr."""
    out = {}
    for k, runs in _seed0_runs(jobs).items():
        top = max(r["val"]["score"] for r in runs)
        out[k] = sorted((r for r in runs if r["val"]["score"] >= top - margin - 1e-9), key=lambda r: r["lr"])
    return out


def _finished(jobs: list[dict]) -> set[tuple[str, str, float, int]]:
    """(task, method, lr, seed) of every training run that finished."""
    return {(j["task"], j["method"], j["lr"], j.get("seed", 0)) for j in _trained(jobs)}


def contender_jobs(jobs: list[dict], tasks, methods, seeds, margin: float) -> list[dict]:
    """Runs of further ``seeds`` at every contender rate (:func:`contenders`) of the given tasks and
    methods, leaving out the runs the file already holds."""
    have, cont = _finished(jobs), contenders(jobs, margin)
    return [{"task": t, "method": m, "lr": r["lr"], "seed": s}
            for t in tasks for m in methods for r in cont.get((t, m), []) for s in seeds
            if (t, m, r["lr"], s) not in have]


def choose_on_seeds(jobs: list[dict], margin: float) -> dict[tuple[str, str], dict]:
    """Per (task, method) whose contender rates (:func:`contenders`) share at least one seed beyond
    seed 0: the rate with the best mean validation score over the seeds they all have (ties: mean
    validation well-formedness, then the smaller lr). Each entry: ``lr``, ``seeds`` (those the
    choice read), ``val`` (lr -> mean validation score), ``heldout`` ({seed: held-out score} of
    every finished seed at the chosen lr, more seeds than the choice read where there are) and
    ``parts`` ({seed: the run's whole held-out dict}, with a task's sub-scores where it has them)."""
    runs: dict[tuple[str, str, float], dict[int, dict]] = {}
    for j in _trained(jobs):
        runs.setdefault((j["task"], j["method"], j["lr"]), {})[j.get("seed", 0)] = j
    out = {}
    for (t, m), cont in contenders(jobs, margin).items():
        common = set.intersection(*(set(runs[(t, m, r["lr"])]) for r in cont))
        if len(common) < 2:
            continue
        seeds = sorted(common)

        def mean(lr: float, key: str) -> float:
            return sum(runs[(t, m, lr)][s]["val"][key] for s in seeds) / len(seeds)

        val = {r["lr"]: mean(r["lr"], "score") for r in cont}
        lr = max(val, key=lambda x: (val[x], mean(x, "well_formed"), -x))
        at = sorted(runs[(t, m, lr)].items())
        out[(t, m)] = {"lr": lr, "seeds": seeds, "val": val, "heldout": {s: j["heldout"]["score"] for s, j in at},
                       "parts": {s: j["heldout"] for s, j in at}}
    return out


class _Worker:
    """One process's state: the base (on its device), the tokenizer and each task's data."""

    def __init__(self, base, tok, base_id: str, compatible: list[str], b: Budget, val: int, prepared_dir,
                 device: torch.device):
        self.base, self.tok, self.base_id, self.compatible = base, tok, base_id, compatible
        self.b, self.val, self.prepared_dir, self.dev = b, val, prepared_dir, device
        self.autocast = device.type == "cuda"
        self.tasks: dict[str, tuple[Prepared, list]] = {}
        self.work = Path(tempfile.mkdtemp(prefix="riffle-sweep-"))

    def task(self, name: str) -> tuple[Prepared, list]:
        if name not in self.tasks:
            self.tasks[name] = carve(llm.prepare(name, self.tok, self.b, prepared_dir=self.prepared_dir), self.val)
        return self.tasks[name]

    def _score(self, task: str, prep: Prepared, model, exs) -> tuple[dict, list[str]]:
        texts = llm.generate_texts(model, self.tok, [e.messages() for e in exs], llm.max_new_tokens(task),
                                   self.b.eval_batch, self.autocast)
        labels = prep.labels or llm.task_labels(task)
        return llm.score(task, texts, [e.answer for e in exs], labels), texts

    def baseline(self, job: dict) -> dict:
        """The base prompted zero-shot and few-shot (instruction in the user message) and given the bare text."""
        task = job["task"]
        prep, _ = self.task(task)
        labels = prep.labels or llm.task_labels(task)
        expected = [e.answer for e in prep.heldout]
        rows = {}
        for name, k in (("base zero-shot", 0), (f"base {self.b.few_shot}-shot", self.b.few_shot)):
            shots = llm.pick_shots(prep.train, k) if k else []
            texts = llm.generate_texts(self.base, self.tok, [llm.prompted_messages(task, e, shots) for e in prep.heldout],
                                       llm.max_new_tokens(task), self.b.eval_batch, self.autocast)
            rows[name] = llm.score(task, texts, expected, labels)
        rows["base, bare text"], _ = self._score(task, prep, self.base, prep.heldout)
        return {**job, "rows": rows}

    def train_one(self, job: dict) -> dict:
        """Train one method at one lr, then score its validation and held-out answers (ours after a
        round trip through the exported F16 file, as the runtime loads it)."""
        task, method, lr = job["task"], job["method"], job["lr"]
        prep, val = self.task(task)
        seed = job.get("seed", 0)
        llm.seed_everything(seed)
        model = copy.deepcopy(self.base)
        tg = llm.targets(model, self.b.blocks)
        wrapped = llm.apply_method(model, method, tg, self.b)
        n_train = llm.trainable_parameters(wrapped)
        pad = self.tok.token_to_id(llm.IM_END)
        batches = llm.make_batches(prep.rows, self.b.batch, self.b.steps, seed, self.b.max_prompt, pad)
        tr = llm.train_steps(wrapped, batches, self.b.steps, lr, self.dev, self.autocast, log=lambda *a, **k: None,
                             tag=f"{task}/{method}/{lr}")
        out = {**job, "trainable": n_train, "train_seconds": tr["train_seconds"],
               "first_loss": round(tr["losses"][0], 4), "last_loss": round(float(np.mean(tr["losses"][-10:])), 4),
               "loss_finite": all(math.isfinite(x) for x in tr["losses"])}
        if method in OUR_METHODS:
            path = self.work / f"{task}-{method}-{lr}.gguf"
            out["bytes"] = llm.export_adapter(wrapped, method, self.b, task, path, self.base_id, self.compatible,
                                              prep.labels)["bytes"]
            del model, wrapped
            scored = copy.deepcopy(self.base)
            llm.load_adapter(scored, path, self.base_id)
            path.unlink()
        else:
            out["bytes"] = llm.lora_bytes(wrapped, self.work / f"peft-{task}-{lr}")
            scored = wrapped
        out["val"], _ = self._score(task, prep, scored, val)
        out["heldout"], out["predictions"] = self._score(task, prep, scored, prep.heldout)
        del scored
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()
        return out

    def run(self, job: dict) -> dict:
        t0 = time.perf_counter()
        try:
            res = self.baseline(job) if job["method"] == "base" else self.train_one(job)
        except Exception as e:  # one failing job must not lose the others
            res = {**job, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        res["wall_seconds"] = round(time.perf_counter() - t0, 2)
        res["pid"] = os.getpid()
        return res


def _worker_main(rank: int, state: dict, jobs, results, threads: int) -> None:
    torch.set_num_threads(threads)
    dev = torch.device(state["device"])
    base = state["base"].to(dev)
    w = _Worker(base, state["tok"], state["base_id"], state["compatible"], state["budget"], state["val"],
                state["prepared_dir"], dev)
    while True:
        job = jobs.get()
        if job is None:
            break
        results.put(w.run(job))
    results.put({"worker_done": rank})


def timing(base, tok, prep: Prepared, methods, b: Budget, device: torch.device, steps: int,
           variants: dict[str, dict[str, str]] | None = None, log=print) -> list[dict]:
    """Each method trained alone for ``steps`` steps on one task's batches: median step time after
    three warm-up steps, and the peak of allocated device memory above the resident base.
    ``variants``: extra rows ``label -> {"method": m, "env": {VAR: value}}`` (environment set while
    that row runs, e.g. another adapter path)."""
    rows = []
    pad = tok.token_to_id(llm.IM_END)
    autocast = device.type == "cuda"
    todo = [(m, m, {}) for m in methods] + [(k, v["method"], v.get("env", {})) for k, v in (variants or {}).items()]
    for label, method, env in todo:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            llm.seed_everything(0)
            model = copy.deepcopy(base)
            if device.type == "cuda":
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
            wrapped = llm.apply_method(model, method, llm.targets(model, b.blocks), b)
            batches = llm.make_batches(prep.rows, b.batch, steps, 0, b.max_prompt, pad)
            tr = llm.train_steps(wrapped, batches, steps, b.lr, device, autocast, log=lambda *a, **k: None, tag=label)
            row = {"label": label, "method": method, "env": env, "trainable": llm.trainable_parameters(wrapped),
                   "step_ms": tr["step_ms"], "steps": steps}
            if device.type == "cuda":
                row["peak_total_mb"] = tr["peak_memory_mb"]
                row["peak_above_base_mb"] = round(tr["peak_memory_mb"] - before / 2**20, 1)
            rows.append(row)
            log(f"timing {label}: {row}", flush=True)
            del model, wrapped
        except Exception as e:
            rows.append({"label": label, "method": method, "error": f"{type(e).__name__}: {e}"})
            log(traceback.format_exc(), flush=True)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def run_sweep(base_path, tasks, methods, lrs, out, b: Budget, val: int = 100, workers: int = 4,
              threads: int = 1, device: str | None = None, compatible: list[str] | None = None,
              prepared_dir=None, timing_steps: int = 0, timing_variants: dict | None = None,
              baselines: bool = True, command: str = "", log=print, planned: list[dict] | None = None,
              contender_margin: float | None = None) -> Path:
    """The sweep: optional timing phase, then the pool (the ``planned`` jobs, or every job of
    the grid). ``contender_margin`` is recorded for the tables (:func:`choose_on_seeds`). Returns the
    jsonl path."""
    import torch.multiprocessing as mp

    from .llama import base_model_id, llama_from_gguf

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    tok = llm.tokenizer_from_gguf(base_path)
    base, _ = llama_from_gguf(base_path)  # on the CPU; children get it through shared memory
    for p in base.parameters():
        p.requires_grad_(False)
    base_id = base_model_id(base_path)
    log(f"base {base_id} loaded in {time.perf_counter() - t0:.1f}s", flush=True)
    # spawn, not fork: a child forked after the parent's OpenMP threads ran can hang in its first op
    ctx = mp.get_context("spawn")
    meta = {"kind": "meta", "base": Path(base_path).name, "base_model_id": base_id, "budget": llm.budget_dict(b),
            "lrs": list(lrs), "val": val, "workers": workers, "threads": threads, "device": dev,
            "torch": torch.__version__, "command": command, "contender_margin": contender_margin}
    jl = out / "sweep.jsonl"
    with jl.open("a", encoding="utf-8") as f:
        if timing_steps:
            q = ctx.Queue()
            p = ctx.Process(target=_timing_main, args=(base, tok, tasks[0], methods, b, dev, timing_steps,
                                                       timing_variants, prepared_dir, val, q))
            p.start()
            rows = q.get()
            p.join()
            f.write(json.dumps({"kind": "timing", "task": tasks[0], "rows": rows}) + "\n")
            f.flush()
        # CUDA's name from a child (this process must not initialise CUDA before it spawns)
        meta["device_name"] = _device_name_in_child(ctx) if dev.startswith("cuda") else llm.device_name(dev)
        f.write(json.dumps(meta) + "\n")
        f.flush()
        state = {"base": base, "tok": tok, "base_id": base_id, "compatible": compatible or [], "budget": b,
                 "val": val, "prepared_dir": prepared_dir, "device": dev}
        jobs, results = ctx.Queue(), ctx.Queue()
        todo = planned if planned is not None else job_list(tasks, methods, lrs, baselines)
        for j in todo:
            jobs.put(j)
        for _ in range(workers):
            jobs.put(None)
        procs = [ctx.Process(target=_worker_main, args=(r, state, jobs, results, threads)) for r in range(workers)]
        for p in procs:
            p.start()
        done = finished = 0
        while finished < workers:
            r = results.get()
            if "worker_done" in r:
                finished += 1
                continue
            done += 1
            r["kind"] = "job"
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            what = r.get("error") or (r.get("heldout") and f"val {r['val']['score']:.3f} held-out "
                                      f"{r['heldout']['score']:.3f}") or "baselines"
            seed = f" seed {r['seed']}" if "seed" in r else ""
            log(f"[{done}/{len(todo)} {time.perf_counter() - t0:.0f}s] {r['task']} {r['method']} "
                f"{r.get('lr', '')}{seed}: {what} ({r['wall_seconds']}s)", flush=True)
        for p in procs:
            p.join()
    return jl


def _put_device_name(q) -> None:
    q.put(llm.device_name("cuda"))


def _device_name_in_child(ctx) -> str:
    q = ctx.Queue()
    p = ctx.Process(target=_put_device_name, args=(q,))
    p.start()
    name = q.get()
    p.join()
    return name


def _timing_main(base, tok, task, methods, b, dev, steps, variants, prepared_dir, val, q) -> None:
    device = torch.device(dev)
    base = base.to(device)
    prep, _ = carve(llm.prepare(task, tok, b, prepared_dir=prepared_dir), val)
    q.put(timing(base, tok, prep, methods, b, device, steps, variants))


# --------------------------------------------------------------------------- tables


def load(jl: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """Meta (the last one written, with ``commands``: every run's command that appended to the
    file, in order, and ``contender_margin``: the last one any run named), timing rows and job
    results of a sweep file."""
    meta, timing_rows, jobs, commands, margin = {}, [], [], [], None
    for ln in Path(jl).read_text(encoding="utf-8").splitlines():
        r = json.loads(ln)
        if r.get("kind") == "meta":
            meta = r
            # A run that named no margin (null) keeps the one an earlier run named.
            if r.get("contender_margin") is not None:
                margin = r["contender_margin"]
            if r.get("command"):
                commands.append(r["command"])
        elif r.get("kind") == "timing":
            timing_rows = r["rows"]
        elif r.get("kind") == "job":
            jobs.append(r)
    meta["commands"] = commands
    meta["contender_margin"] = margin
    return meta, timing_rows, jobs


def choose(jobs: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (task, method) the run with the best validation score (ties: better validation
    well-formedness, then the smaller lr), among the finished seed-0 runs (further seeds never
    choose); only (task, method) pairs with at least one."""
    return {k: max(runs, key=lambda r: (r["val"]["score"], r["val"]["well_formed"], -r["lr"]))
            for k, runs in _seed0_runs(jobs).items()}


def seed_scores(jobs: list[dict]) -> dict[tuple[str, str], tuple[float, list[tuple[int, float]]]]:
    """Per (task, method) with runs of further seeds at its chosen lr: that lr and the held-out
    score of every seed there, seed 0 (the chosen run) first."""
    out = {}
    for (t, m), c in choose(jobs).items():
        more = [j for j in jobs if j["task"] == t and j["method"] == m and j.get("seed", 0) != 0
                and j.get("lr") == c["lr"] and "error" not in j]
        if more:
            runs = [(0, c["heldout"]["score"])] + sorted((j["seed"], j["heldout"]["score"]) for j in more)
            out[(t, m)] = (c["lr"], runs)
    return out


def _method_goals(t: str, scores: dict[str, float], kind: str = "") -> list[str]:
    """The issue's two goals between methods on task ``t``, from held-out scores in points (by
    method; ``kind`` names them, e.g. "mean"): GSOFT at least LoRA, Double GSOFT at least GSOFT."""
    g, lo, d = (scores.get(m) for m in ("gsoft", "lora", "double_gsoft"))
    k = f" {kind}" if kind else ""
    out = []
    if g is not None and lo is not None:
        out.append(f"- {t}: GSOFT{k} {g:.1f} vs LoRA{k} {lo:.1f}: {'met' if g >= lo else 'missed'}")
    if g is not None and d is not None:
        out.append(f"- {t}: Double GSOFT{k} {d:.1f} vs GSOFT{k} {g:.1f}: {'met' if d >= g else 'missed'}")
    return out


def _mean_sd(vals: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(vals) / len(vals)
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)


def _contender_section(jobs: list[dict], margin: float) -> list[str]:
    """The rate chosen on several seeds' validation (:func:`choose_on_seeds`), its held-out scores,
    and the issue's score goals, each pair of methods compared on the seeds both have (empty
    without such a choice)."""
    chosen = choose_on_seeds(jobs, margin)
    if not chosen:
        return []
    tasks, order = list(dict.fromkeys(j["task"] for j in jobs)), list(LABELS)
    lines = ["## Rate chosen on several seeds' validation", "",
             f"Contenders: each (task, method)'s seed-0 rates within {100 * margin:.0f} points of its best "
             "seed-0 validation score. Each contender trained with further seeds; the rate with the best "
             "mean validation score over the seeds every contender has is chosen (ties: mean "
             "well-formedness, then the smaller rate). Held-out: every seed trained at the chosen rate.", "",
             "| task | method | mean validation per contender lr | seeds read | chosen lr | held-out per seed "
             "| mean | sd |", "|---|---|---|---|---:|---|---:|---:|"]
    for (t, m), c in sorted(chosen.items(), key=lambda kv: (tasks.index(kv[0][0]), order.index(kv[0][1]))):
        val = ", ".join(f"{lr}: {100 * v:.1f}" for lr, v in sorted(c["val"].items()))
        per = ", ".join(f"{s}: {100 * v:.1f}" for s, v in c["heldout"].items())
        mean, sd = _mean_sd([100 * v for v in c["heldout"].values()])
        lines.append(f"| {t} | {LABELS.get(m, m)} | {val} | {', '.join(map(str, c['seeds']))} | {c['lr']} "
                     f"| {per} | {mean:.1f} | {sd:.1f} |")
    lines.append("")
    goals = []
    for t in tasks:
        for a, b, word in (("gsoft", "lora", "GSOFT at least LoRA"), ("double_gsoft", "gsoft", "Double GSOFT at least GSOFT")):
            if (t, a) in chosen and (t, b) in chosen:
                ha, hb = chosen[(t, a)]["heldout"], chosen[(t, b)]["heldout"]
                common = sorted(set(ha) & set(hb))
                if common:
                    ma = 100 * sum(ha[s] for s in common) / len(common)
                    mb = 100 * sum(hb[s] for s in common) / len(common)
                    # A seed fixes the batch order for every method, so the runs pair by seed.
                    diff, sd = _mean_sd([100 * (ha[s] - hb[s]) for s in common])
                    goals.append(f"- {t}: {word}: {ma:.1f} vs {mb:.1f} (held-out means over seeds "
                                 f"{', '.join(map(str, common))}): {'met' if ma >= mb else 'missed'}; "
                                 f"paired difference {diff:+.2f} ± {sd / math.sqrt(len(common)):.2f} (s.e.)"
                                 + _part_differences(chosen[(t, a)]["parts"], chosen[(t, b)]["parts"], common))
    if goals:
        lines += ["Goals on the means (each pair on the seeds both methods have):", ""] + goals + [""]
    return lines


PART_NAMES = {"topic": "topic correct", "title": "title exact"}


def _part_differences(pa: dict[int, dict], pb: dict[int, dict], seeds: list[int]) -> str:
    """The paired differences of a task's sub-scores (``llm.score``'s keys beyond the score, the
    well-formed share and the count; news_json's ``topic`` and ``title``), on the given seeds,
    where every run has them; empty otherwise."""
    keys = [k for k in pa[seeds[0]] if k not in ("score", "well_formed", "n")
            and all(k in pa[s] and k in pb[s] for s in seeds)]
    out = []
    for k in keys:
        diff, sd = _mean_sd([100 * (pa[s][k] - pb[s][k]) for s in seeds])
        out.append(f"{PART_NAMES.get(k, k)} {round(diff, 2) + 0.0:+.2f} ± {sd / math.sqrt(len(seeds)):.2f}")
    return f" ({'; '.join(out)})" if out else ""


def rescore(jobs: list[dict], prepared_dir: str | Path, heldout: int) -> None:
    """Score every run's held-out predictions again with :func:`llm.score` against the split in
    ``prepared_dir`` (``<task>.split.json`` of `llm prepare`, its first ``heldout`` chats), in
    place: runs written before ``llm.score`` returned a task's sub-scores get them. Raises
    ``ValueError`` when a score differs from the one the run recorded (not the same split)."""
    splits: dict[str, tuple[list[str], list[str] | None]] = {}
    for j in _trained(jobs):
        t = j["task"]
        if t not in splits:
            d = json.loads((Path(prepared_dir) / f"{t}.split.json").read_text(encoding="utf-8"))
            splits[t] = ([e["answer"] for e in d["heldout"][:heldout]], d["labels"] or llm.task_labels(t))
        expected, labels = splits[t]
        new = llm.score(t, j["predictions"], expected, labels)
        if abs(new["score"] - j["heldout"]["score"]) > 1e-9:
            raise ValueError(f"{t} {j['method']} lr {j['lr']} seed {j.get('seed', 0)}: held-out score "
                             f"{new['score']} from {prepared_dir}, {j['heldout']['score']} recorded")
        j["heldout"] = new


def _seed_section(jobs: list[dict]) -> list[str]:
    """The seeds table and the issue's score goals on the seeds' means (empty without seeds)."""
    seeds = seed_scores(jobs)
    if not seeds:
        return []
    lines = ["## Seeds at the chosen rate", "",
             "Held-out score of every seed trained at the rate seed 0's validation chose (seed 0 is "
             "the run in the tables above; a seed changes the order of the training batches and "
             "LoRA's initialisation, never the validation or held-out chats); mean and sample "
             "standard deviation.", "",
             "| task | method | lr | held-out per seed | mean | sd |", "|---|---|---:|---|---:|---:|"]
    means: dict[str, dict[str, float]] = {}
    tasks, order = list(dict.fromkeys(t for t, _ in seeds)), list(LABELS)
    for (t, m), (lr, runs) in sorted(seeds.items(), key=lambda kv: (tasks.index(kv[0][0]), order.index(kv[0][1]))):
        mean, sd = _mean_sd([100 * v for _, v in runs])
        means.setdefault(t, {})[m] = mean
        per = ", ".join(f"{s}: {100 * v:.1f}" for s, v in runs)
        lines.append(f"| {t} | {LABELS.get(m, m)} | {lr} | {per} | {mean:.1f} | {sd:.1f} |")
    lines.append("")
    goals = [line for t in tasks for line in _method_goals(t, means[t], "mean")]
    if goals:
        lines += ["Goals on the means:", ""] + goals + [""]
    return lines


def summarize(jl: str | Path, out_md: str | Path | None = None, prepared: str | Path | None = None) -> str:
    """Markdown tables from a sweep file (complete or cut short), with the issue's goals checked;
    with ``prepared`` (the split folder the runs used), the held-out predictions are scored again
    (:func:`rescore`), so runs recorded without a task's sub-scores show them too."""
    meta, trows, jobs = load(jl)
    b = meta.get("budget", {})
    if prepared is not None:
        rescore(jobs, prepared, b.get("heldout", 200))
    best = choose(jobs)
    # the rates each method was trained at (runs appended later may add rates for some methods)
    per_method = {m: sorted({j["lr"] for j in jobs if j["method"] == m}) for m in LABELS}
    grids = {tuple(v) for v in per_method.values() if v}
    if not grids:  # no training run finished yet: the grid asked for
        tried = ", ".join(str(x) for x in meta.get("lrs", []))
    elif len(grids) == 1:
        tried = ", ".join(str(x) for x in next(iter(grids))) + " for every method"
    else:
        tried = "; ".join(f"{LABELS[m]} {', '.join(str(x) for x in v)}" for m, v in per_method.items() if v)
    lines = ["# SmolLM2-135M-Instruct adapters: learning rate chosen on a validation slice", "",
             f"Device: {meta.get('device_name', meta.get('device', '?'))}, torch {meta.get('torch', '?')}; "
             f"{meta.get('workers', '?')} runs at a time"
             + (f", {meta['threads']} torch thread(s) each; fp32." if str(meta.get('device', '')).startswith('cpu')
                else "; bf16 autocast over fp32 weights."),
             f"Budget per run: {b.get('steps')} steps x batch {b.get('batch')} (AdamW, 10% warm-up, linear decay), "
             f"prompt cut to {b.get('max_prompt')} tokens, training split minus {meta.get('val')} validation "
             f"chats, {b.get('heldout')} held-out chats; all 7 linears of all 30 blocks; ours b={b.get('block_size')} "
             f"(BOFT b={b.get('boft_block_size')} m={b.get('boft_factors')}), LoRA r={b.get('lora_rank')} "
             f"alpha={b.get('lora_alpha')}. Learning rates tried: {tried}; "
             "the one with the best validation score is chosen, and its held-out score reported. Greedy decoding.",
             *(f"Command: `{c}`" for c in meta["commands"] or [""]), ""]
    tasks = list(dict.fromkeys(j["task"] for j in jobs))
    methods = [m for m in LABELS if any(j["method"] == m for j in jobs)]
    goal_lines = []
    for t in tasks:
        tj = [j for j in jobs if j["task"] == t]
        lines += [f"## {t}", "", "| method | chosen lr | validation score per lr | held-out score | well-formed | "
                  "trainable | file bytes |", "|---|---:|---|---:|---:|---:|---:|"]
        for j in tj:
            if j["method"] == "base" and "rows" in j:
                for name, r in j["rows"].items():
                    lines.append(f"| {name} | | | {100 * r['score']:.1f} | {100 * r['well_formed']:.1f} | 0 | |")
        for m in methods:
            runs = sorted((j for j in tj if j["method"] == m and j.get("seed", 0) == 0), key=lambda j: j["lr"])
            if not runs:
                continue
            per = ", ".join(f"{r['lr']}: " + ("failed" if "error" in r else f"{100 * r['val']['score']:.1f}")
                            for r in runs)
            c = best.get((t, m))
            if c is None:
                lines.append(f"| {LABELS[m]} | | {per} | failed | | | |")
                continue
            lines.append(f"| {LABELS[m]} | {c['lr']} | {per} | {100 * c['heldout']['score']:.1f} | "
                         f"{100 * c['heldout']['well_formed']:.1f} | {c['trainable']} | {c['bytes']} |")
        lines.append("")
        g, lo, d = best.get((t, "gsoft")), best.get((t, "lora")), best.get((t, "double_gsoft"))
        base_best = max((r["score"] for j in tj if j["method"] == "base" for r in j.get("rows", {}).values()),
                        default=None)
        if g:
            gs = g["heldout"]["score"]
            if base_best is not None:
                goal_lines.append(f"- {t}: GSOFT {100 * gs:.1f} vs the base's best prompting {100 * base_best:.1f}: "
                                  f"{'met' if gs > base_best else 'missed'}")
            goal_lines += _method_goals(t, {m: 100 * c["heldout"]["score"] for m, c in (("gsoft", g), ("lora", lo),
                                                                                       ("double_gsoft", d)) if c})
    if goal_lines:
        lines += ["## Goals (issue 20)", ""] + goal_lines + [""]
    lines += _seed_section(jobs)
    if meta.get("contender_margin") is not None:
        lines += _contender_section(jobs, meta["contender_margin"])
    if trows:
        lines += ["## Step time and memory, each method alone", "",
                  f"One process, methods in turn, {trows[0].get('steps', '?')} steps each on one task's batches; median "
                  "step after 3 warm-up steps; peak = the most device memory allocated during training above what "
                  "the resident base held.", "",
                  "| run | trainable | step ms | peak above base MiB | peak total MiB |", "|---|---:|---:|---:|---:|"]
        for r in trows:
            if "error" in r:
                lines.append(f"| {r['label']} | failed: {r['error'][:60]} | | | |")
            else:
                lines.append(f"| {r['label']} | {r['trainable']} | {r['step_ms']} | {r.get('peak_above_base_mb', '')} "
                             f"| {r.get('peak_total_mb', '')} |")
        lines.append("")
    text = "\n".join(lines) + "\n"
    if out_md:
        Path(out_md).write_text(text, encoding="utf-8")
    return text


def main(argv=None) -> int:
    import argparse
    import shlex
    import sys

    ap = argparse.ArgumentParser(prog="python -m riffle_train.llm_sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None, help="llama GGUF (default ~/.cache/riffle/smollm2/...Q4_1.gguf)")
    ap.add_argument("--tasks", default="sentiment,topic,language,news_json")
    ap.add_argument("--methods", default="gsoft,double_gsoft,lora,oft,boft")
    ap.add_argument("--lrs", default="0.001,0.003", help="learning rates tried for every method")
    ap.add_argument("--out", default="train/results/llm-sweep")
    ap.add_argument("--prepared", default=None, help="folder of <task>.split.json from `llm prepare`")
    ap.add_argument("--compatible-ids", default="train/results/llm/base-ids.json")
    ap.add_argument("--val", type=int, default=100, help="validation chats carved out of each training split")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-prompt", type=int, default=160)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4, help="runs at a time (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--timing-steps", type=int, default=0, help="steps of the alone-timing phase (0: none)")
    ap.add_argument("--timing-variants", default="",
                    help="extra timing rows LABEL=METHOD:VAR=VALUE,... e.g. gsoft-bank=gsoft:RIFFLE_ADAPTER_PATH=bank")
    ap.add_argument("--summarize", default=None,
                    help="only write the tables of this sweep.jsonl (with --prepared: its held-out answers scored "
                         "again, sub-scores included)")
    ap.add_argument("--seeds-at-chosen", default=None,
                    help="seeds (e.g. 1,2) to train at each (task, method)'s chosen lr in OUT/sweep.jsonl, "
                         "appended to it (the grid flags are then ignored); with --contender-margin, at the "
                         "lr chosen on several seeds where there is one")
    ap.add_argument("--seeds-at-contenders", default=None,
                    help="seeds (e.g. 1,2) to train at every contender lr (within --contender-margin of the best "
                         "seed-0 validation score) of each (task, method) in OUT/sweep.jsonl, appended to it")
    ap.add_argument("--contender-margin", type=float, default=None,
                    help="validation-score margin of the contender rates (0.02 with --seeds-at-contenders); the "
                         "tables then add the rate chosen on several seeds' mean validation")
    a = ap.parse_args(argv)
    if a.seeds_at_contenders and a.contender_margin is None:
        a.contender_margin = 0.02
    if a.seeds_at_contenders and a.seeds_at_chosen:
        ap.error("--seeds-at-contenders and --seeds-at-chosen: one at a time")
    if a.summarize:
        print(summarize(a.summarize, Path(a.summarize).with_suffix(".md"), a.prepared), end="")
        return 0
    variants = {}
    for item in filter(None, a.timing_variants.split(",")):
        label, rest = item.split("=", 1)
        method, _, env = rest.partition(":")
        variants[label] = {"method": method, "env": dict([env.split("=", 1)]) if env else {}}
    comp = []
    if a.compatible_ids and Path(a.compatible_ids).exists():
        comp = json.loads(Path(a.compatible_ids).read_text())["compatible_model_ids"]
    b = Budget(train=a.train, heldout=a.heldout, steps=a.steps, batch=a.batch, max_prompt=a.max_prompt,
               eval_batch=a.eval_batch)
    from .llama import SMOLLM2_Q4_1

    command = "python -m riffle_train.llm_sweep " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    methods = [m for m in a.methods.split(",") if m]
    jobs = None
    for flag, value in (("--seeds-at-chosen", a.seeds_at_chosen), ("--seeds-at-contenders", a.seeds_at_contenders)):
        if not value:
            continue
        _, _, done = load(Path(a.out) / "sweep.jsonl")
        seeds = [int(x) for x in value.split(",")]
        if 0 in seeds:
            ap.error(f"{flag}: seed 0 is the sweep's own run")
        if flag == "--seeds-at-chosen":
            jobs = seed_jobs(done, a.tasks.split(","), methods, seeds, a.contender_margin)
        else:
            jobs = contender_jobs(done, a.tasks.split(","), methods, seeds, a.contender_margin)
        if not jobs:
            ap.error(f"{flag}: no run left to train for those tasks and methods in {a.out}/sweep.jsonl")
    # `--methods ""` runs only the base's prompting (e.g. appended to a finished sweep's file)
    jl = run_sweep(a.base or SMOLLM2_Q4_1, a.tasks.split(","), methods,
                   [float(x) for x in a.lrs.split(",")], a.out, b, val=a.val, workers=a.workers, threads=a.threads,
                   device=a.device, compatible=comp, prepared_dir=a.prepared, timing_steps=a.timing_steps,
                   timing_variants=variants, baselines=not a.no_baselines, command=command, planned=jobs,
                   contender_margin=a.contender_margin)
    print(summarize(jl, jl.with_suffix(".md")), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
