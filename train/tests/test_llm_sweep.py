"""The sweep's bookkeeping: validation carve-out, lr choice on validation only, tables from a partial file."""
import json

import pytest

from riffle_train import llm_sweep
from riffle_train.llm import Example, Prepared


def _prep(n=20):
    tr = [Example(f"s{i}", f"text {i}", "positive", "positive") for i in range(n)]
    te = [Example(f"h{i}", f"held {i}", "negative", "negative") for i in range(5)]
    return Prepared("sentiment", ["negative", "neutral", "positive"], tr, te, [([i], [i]) for i in range(n)])


def test_carve_is_seeded_disjoint_and_keeps_rows_aligned():
    rest, val = llm_sweep.carve(_prep(), 6)
    again, val2 = llm_sweep.carve(_prep(), 6)
    assert [e.id for e in val] == [e.id for e in val2]
    assert len(val) == 6 and len(rest.train) == 14
    assert not {e.id for e in val} & {e.id for e in rest.train}
    # each training row still belongs to its example
    assert all(e.id == f"s{r[0][0]}" for e, r in zip(rest.train, rest.rows))
    assert rest.heldout == _prep().heldout
    with pytest.raises(ValueError):
        llm_sweep.carve(_prep(), 20)


def _job(task, method, lr, val, held):
    return {"kind": "job", "task": task, "method": method, "lr": lr, "trainable": 10, "bytes": 20,
            "val": {"score": val, "well_formed": 1.0}, "heldout": {"score": held, "well_formed": 1.0}}


def _write(jl, rows) -> None:
    """A sweep file of these rows (meta and jobs), one JSON object a line."""
    jl.write_text("\n".join(json.dumps(x) for x in rows) + "\n")


def test_choice_uses_validation_never_heldout(tmp_path):
    jobs = [_job("topic", "gsoft", 0.001, 0.9, 0.5), _job("topic", "gsoft", 0.003, 0.8, 0.99),
            _job("topic", "lora", 0.001, 0.7, 0.7), _job("topic", "lora", 0.003, 0.7, 0.9),
            {"kind": "job", "task": "topic", "method": "double_gsoft", "lr": 0.001, "error": "boom"}]
    best = llm_sweep.choose(jobs)
    assert best[("topic", "gsoft")]["lr"] == 0.001  # better on validation, worse on held-out
    assert best[("topic", "lora")]["lr"] == 0.001  # tie on validation: the smaller lr
    assert ("topic", "double_gsoft") not in best
    jl = tmp_path / "sweep.jsonl"
    _write(jl, [{"kind": "meta", "lrs": [0.001, 0.003], "budget": {}}] + jobs)
    md = llm_sweep.summarize(jl)
    assert "| GSOFT | 0.001 | 0.001: 90.0, 0.003: 80.0 | 50.0 |" in md
    assert "topic: GSOFT 50.0 vs LoRA 70.0: missed" in md
    assert "| Double GSOFT | | 0.001: failed | failed |" in md
    assert "Learning rates tried: GSOFT 0.001, 0.003; Double GSOFT 0.001; PEFT LoRA 0.001, 0.003;" in md
    # the device line says what ran it: a CPU run names the processor, its threads and fp32
    _write(jl, [{"kind": "meta", "lrs": [0.001], "budget": {}, "device": "cpu", "device_name": "Some CPU (2 cores)",
                 "workers": 2, "threads": 1}] + jobs)
    assert "Device: Some CPU (2 cores), torch ?; 2 runs at a time, 1 torch thread(s) each; fp32." in \
        llm_sweep.summarize(jl)
    # a second run appended to the file (the base's prompting alone): both commands are listed
    more = [{"kind": "meta", "lrs": [0.001], "budget": {}, "command": "sweep --methods ''"},
            {"kind": "job", "task": "topic", "method": "base",
             "rows": {"base zero-shot": {"score": 0.1, "well_formed": 0.5}}}]
    first = {"kind": "meta", "lrs": [0.001], "budget": {}, "command": "sweep A"}
    _write(jl, [first] + jobs + more)
    md = llm_sweep.summarize(jl)
    assert "Command: `sweep A`\nCommand: `sweep --methods ''`" in md
    assert "| base zero-shot | | | 10.0 | 50.0 | 0 | |" in md
    assert "topic: GSOFT 50.0 vs the base's best prompting 10.0: met" in md


def test_further_seeds_never_choose_and_are_averaged(tmp_path):
    jobs = [_job("topic", "gsoft", 0.001, 0.9, 0.5), _job("topic", "gsoft", 0.003, 0.8, 0.99),
            _job("topic", "lora", 0.001, 0.7, 0.7), _job("topic", "double_gsoft", 0.001, 0.6, 0.45)]
    # seeds run at each method's chosen lr, for the methods asked that have a choice
    assert llm_sweep.seed_jobs(jobs, ["topic"], ["gsoft", "lora", "oft"], [1, 2]) == [
        {"task": "topic", "method": "gsoft", "lr": 0.001, "seed": 1},
        {"task": "topic", "method": "gsoft", "lr": 0.001, "seed": 2},
        {"task": "topic", "method": "lora", "lr": 0.001, "seed": 1},
        {"task": "topic", "method": "lora", "lr": 0.001, "seed": 2}]
    seeded = [dict(_job("topic", "gsoft", 0.003, 1.0, 1.0), seed=1),  # better validation, seed 1: not a choice
              dict(_job("topic", "gsoft", 0.001, 0.5, 0.6), seed=1), dict(_job("topic", "gsoft", 0.001, 0.5, 0.7), seed=2),
              dict(_job("topic", "lora", 0.001, 0.5, 0.5), seed=1), dict(_job("topic", "lora", 0.001, 0.5, 0.6), seed=2),
              dict(_job("topic", "double_gsoft", 0.001, 0.5, 0.75), seed=1),
              dict(_job("topic", "double_gsoft", 0.001, 0.5, 0.9), seed=2)]
    best = llm_sweep.choose(jobs + seeded)
    assert best[("topic", "gsoft")]["lr"] == 0.001 and best[("topic", "gsoft")]["heldout"]["score"] == 0.5
    jl = tmp_path / "sweep.jsonl"
    _write(jl, [{"kind": "meta", "lrs": [0.001], "budget": {}}] + jobs + seeded)
    md = llm_sweep.summarize(jl)
    # the per-lr validation column and the seed-0 goals are the sweep's own
    assert "| GSOFT | 0.001 | 0.001: 90.0, 0.003: 80.0 | 50.0 |" in md
    assert "topic: GSOFT 50.0 vs LoRA 70.0: missed" in md
    # the means: GSOFT 50, 60, 70; LoRA 70, 50, 60; Double GSOFT 45, 75, 90 (the seed-1 run at
    # the other lr is left out)
    assert "| topic | GSOFT | 0.001 | 0: 50.0, 1: 60.0, 2: 70.0 | 60.0 | 10.0 |" in md
    assert "| topic | Double GSOFT | 0.001 | 0: 45.0, 1: 75.0, 2: 90.0 | 70.0 | 22.9 |" in md
    assert "topic: GSOFT mean 60.0 vs LoRA mean 60.0: met" in md
    assert "topic: Double GSOFT mean 70.0 vs GSOFT mean 60.0: met" in md


def test_device_name_names_the_cpu():
    from riffle_train.llm import device_name
    name = device_name("cpu")
    assert name.endswith(" cores)") and len(name) > len(" (1 cores)")


def test_job_list_runs_each_task_grid_together():
    jobs = llm_sweep.job_list(["a", "b"], ["gsoft", "lora"], [0.001, 0.003])
    assert [j["task"] for j in jobs] == ["a"] * 5 + ["b"] * 5
    assert jobs[0] == {"task": "a", "method": "base"}
    assert {(j["method"], j["lr"]) for j in jobs[1:5]} == {(m, lr) for m in ("gsoft", "lora") for lr in (0.001, 0.003)}
    assert llm_sweep.job_list(["a"], [], [0.001]) == [{"task": "a", "method": "base"}]


def _seeded(task, method, lr, seed, val, held, wf=1.0):
    j = _job(task, method, lr, val, held)
    j["val"]["well_formed"] = wf
    return dict(j, seed=seed)


def test_contenders_are_the_rates_near_the_best_and_choose_on_their_seeds_mean(tmp_path):
    jobs = [_job("topic", "gsoft", 0.001, 0.92, 0.90), _job("topic", "gsoft", 0.003, 0.91, 0.50),
            _job("topic", "gsoft", 0.0003, 0.84, 0.99),  # 8 points below: not a contender
            _job("topic", "lora", 0.01, 0.95, 0.80), _job("topic", "lora", 0.003, 0.89, 0.70),
            {**_job("topic", "double_gsoft", 0.001, 0.1, 0.1), "error": "boom"}]
    cont = llm_sweep.contenders(jobs, 0.02)
    assert [r["lr"] for r in cont[("topic", "gsoft")]] == [0.001, 0.003]
    assert [r["lr"] for r in cont[("topic", "lora")]] == [0.01]
    assert ("topic", "double_gsoft") not in cont  # its only run failed
    # a margin exactly at a score's distance keeps it (0.95 - 0.93 is not exactly 0.02 in floats)
    assert [r["lr"] for r in llm_sweep.contenders([_job("t", "gsoft", 0.1, 0.95, 0), _job("t", "gsoft", 0.2, 0.93, 0)],
                                                  0.02)[("t", "gsoft")]] == [0.1, 0.2]
    # every contender x seed, less what the file holds
    have = [_seeded("topic", "gsoft", 0.001, 1, 0.9, 0.9)]
    assert llm_sweep.contender_jobs(jobs + have, ["topic"], ["gsoft", "lora", "oft"], [1, 2], 0.02) == [
        {"task": "topic", "method": "gsoft", "lr": 0.001, "seed": 2},
        {"task": "topic", "method": "gsoft", "lr": 0.003, "seed": 1},
        {"task": "topic", "method": "gsoft", "lr": 0.003, "seed": 2},
        {"task": "topic", "method": "lora", "lr": 0.01, "seed": 1},
        {"task": "topic", "method": "lora", "lr": 0.01, "seed": 2}]
    # no choice until the contenders share a seed beyond 0
    assert ("topic", "gsoft") not in llm_sweep.choose_on_seeds(jobs + have, 0.02)
    more = have + [_seeded("topic", "gsoft", 0.001, 2, 0.88, 0.7), _seeded("topic", "gsoft", 0.001, 3, 0.99, 0.6),
                   _seeded("topic", "gsoft", 0.003, 1, 0.95, 0.4), _seeded("topic", "gsoft", 0.003, 2, 0.94, 0.3),
                   _seeded("topic", "lora", 0.01, 1, 0.9, 0.85), _seeded("topic", "lora", 0.01, 2, 0.9, 0.75)]
    c = llm_sweep.choose_on_seeds(jobs + more, 0.02)
    # seeds 0-2 are common (seed 3 at 0.001 alone is not read): means 0.9 against 0.9333
    g = c[("topic", "gsoft")]
    assert g["lr"] == 0.003 and g["seeds"] == [0, 1, 2]
    assert g["val"] == pytest.approx({0.001: 0.9, 0.003: 0.9333333})
    assert g["heldout"] == {0: 0.5, 1: 0.4, 2: 0.3}
    assert c[("topic", "lora")]["lr"] == 0.01
    # seed-0's choice is unchanged; further seeds at the new choice
    assert llm_sweep.choose(jobs + more)[("topic", "gsoft")]["lr"] == 0.001
    assert llm_sweep.seed_jobs(jobs + more, ["topic"], ["gsoft"], [3, 4], 0.02) == [
        {"task": "topic", "method": "gsoft", "lr": 0.003, "seed": 3},
        {"task": "topic", "method": "gsoft", "lr": 0.003, "seed": 4}]
    assert llm_sweep.seed_jobs(jobs + more, ["topic"], ["gsoft"], [3, 4]) == [
        {"task": "topic", "method": "gsoft", "lr": 0.001, "seed": 3},
        {"task": "topic", "method": "gsoft", "lr": 0.001, "seed": 4}]
    # the tables: only with a recorded margin; goals on the seeds both methods have
    jl = tmp_path / "sweep.jsonl"
    _write(jl, [{"kind": "meta", "lrs": [0.001], "budget": {}}] + jobs + more)
    assert "several seeds" not in llm_sweep.summarize(jl)
    # a later run that names no margin (run_sweep writes null) keeps the earlier one
    _write(jl, [{"kind": "meta", "lrs": [0.001], "budget": {}, "contender_margin": 0.02},
                {"kind": "meta", "lrs": [0.001], "budget": {}},
                {"kind": "meta", "lrs": [0.001], "budget": {}, "contender_margin": None}] + jobs + more)
    md = llm_sweep.summarize(jl)
    assert "| topic | GSOFT | 0.0003: 84.0" not in md
    assert "| topic | GSOFT | 0.001: 90.0, 0.003: 93.3 | 0, 1, 2 | 0.003 | 0: 50.0, 1: 40.0, 2: 30.0 | 40.0 | 10.0 |" in md
    assert "| topic | PEFT LoRA | 0.01: 91.7 | 0, 1, 2 | 0.01 | 0: 80.0, 1: 85.0, 2: 75.0 | 80.0 | 5.0 |" in md
    assert "- topic: GSOFT at least LoRA: 40.0 vs 80.0 (held-out means over seeds 0, 1, 2): missed" in md
    # per seed 50-80, 40-85, 30-75: mean -40, sd sqrt(75), s.e. 5
    assert "missed; paired difference -40.00 ± 5.00 (s.e.)" in md


def test_contender_ties_go_to_well_formedness_then_the_smaller_rate():
    jobs = [_seeded("t", "gsoft", 0.001, 0, 0.9, 0.1, 0.9), _seeded("t", "gsoft", 0.003, 0, 0.9, 0.2, 1.0),
            _seeded("t", "gsoft", 0.001, 1, 0.9, 0.1, 0.9), _seeded("t", "gsoft", 0.003, 1, 0.9, 0.2, 1.0),
            _seeded("t", "lora", 0.001, 0, 0.9, 0.1), _seeded("t", "lora", 0.003, 0, 0.9, 0.2),
            _seeded("t", "lora", 0.001, 1, 0.9, 0.1), _seeded("t", "lora", 0.003, 1, 0.9, 0.2)]
    c = llm_sweep.choose_on_seeds(jobs, 0.02)
    assert c[("t", "gsoft")]["lr"] == 0.003 and c[("t", "lora")]["lr"] == 0.001


def test_rescore_adds_news_json_sub_scores_and_the_goals_pair_them(tmp_path):
    exp = [{"topic": "sport", "title": "A"}, {"topic": "tech", "title": "B"}]
    (tmp_path / "news_json.split.json").write_text(json.dumps({"labels": None, "train": [], "heldout": [
        {"id": f"h{i}", "text": "t", "answer": json.dumps(e), "label": None} for i, e in enumerate(exp)]}))

    def run(method, seed, answers, score):
        j = _seeded("news_json", method, 0.001, seed, 0.9, score)
        j["predictions"] = [json.dumps(a) for a in answers]
        return j
    ok, wrong_topic, wrong_title = exp[0], {"topic": "tech", "title": "A"}, {"topic": "sport", "title": "x"}
    jobs = [run("gsoft", 0, [ok, exp[1]], 1.0), run("gsoft", 1, [ok, exp[1]], 1.0),
            run("double_gsoft", 0, [wrong_topic, exp[1]], 0.75), run("double_gsoft", 1, [wrong_title, exp[1]], 0.75)]
    jl = tmp_path / "sweep.jsonl"
    _write(jl, [{"kind": "meta", "lrs": [0.001], "budget": {"heldout": 2}, "contender_margin": 0.02}] + jobs)
    llm_sweep.rescore(jobs, tmp_path, 2)
    assert jobs[2]["heldout"] == {"score": 0.75, "well_formed": 1.0, "n": 2, "topic": 0.5, "title": 1.0}
    md = llm_sweep.summarize(jl, prepared=tmp_path)
    # topic: -50 and 0 points (mean -25, s.e. 25); title: 0 and -50
    assert ("missed; paired difference -25.00 ± 0.00 (s.e.) (topic correct -25.00 ± 25.00; "
            "title exact -25.00 ± 25.00)") in md
    # without the split the old runs have no sub-scores: no parenthesis
    assert "(topic correct" not in llm_sweep.summarize(jl)
    # a split that is not the runs' own is refused
    jobs[0]["heldout"]["score"] = 0.5
    with pytest.raises(ValueError, match="seed 0: held-out score 1.0"):
        llm_sweep.rescore(jobs, tmp_path, 2)
