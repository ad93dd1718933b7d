"""Side-by-side benchmarks of riffle against ONNX Runtime, PyTorch and PEFT (issue 10).

Run by ./scripts/bench (which builds the CLI and the environments first); writes
bench/out/results.json, from which bench/report.py writes docs/benchmarks.md and the
plots. Every figure is measured in this run, on this machine.

Method (the machine is shared and noisy): the systems are measured in interleaved
rounds (each round times every system at one sequence length, in a rotated order), each
round keeps the median of its samples, and the page reports the median over rounds with
the min-max of the round medians. Ratios are taken per round, then their median.
Instruction counts (valgrind --tool=callgrind) back the riffle-only ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common as C
from common import OUT, RIFFLE, ROOT, SEQS, log


# --------------------------------------------------------------------------- helpers


def samples(fn, budget: float, min_n: int = 5, max_n: int = 500, warm: int = 1) -> list[float]:
    """Seconds per call of ``fn`` for about ``budget`` seconds (at least ``min_n`` calls)."""
    for _ in range(warm):
        fn()
    out: list[float] = []
    t_end = time.perf_counter() + budget
    while len(out) < min_n or (time.perf_counter() < t_end and len(out) < max_n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def sh(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw).stdout


def summary(v: list[float]) -> dict:
    return {"median": C.median(v), "min": min(v), "max": max(v), "n": len(v)}


def machine() -> dict:
    lscpu = sh(["lscpu"])
    get = lambda k: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(k + ":")), "?")  # noqa: E731
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    flags = get("Flags").split()
    return {"cpu": get("Model name"), "cpus": int(get("CPU(s)")), "threads_per_core": get("Thread(s) per core"),
            "sockets": get("Socket(s)"), "l2": get("L2 cache"), "l3": get("L3 cache"),
            "hypervisor": get("Hypervisor vendor"), "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx_vnni") if f in flags],
            "mem_gib": round(int(mem) / 2**20, 1), "kernel": platform.release(), "os": _os_name()}


def _os_name() -> str:
    try:
        return next(l.split("=", 1)[1].strip('"') for l in Path("/etc/os-release").read_text().splitlines()
                    if l.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        return platform.platform()


def versions() -> dict:
    import onnx
    import onnxruntime
    import peft
    import torch
    import transformers

    def cmd(c):
        try:
            lines = sh(c).strip().splitlines()
            return lines[0] if lines else ""
        except (OSError, subprocess.CalledProcessError):
            return "?"

    commit = cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = cmd(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "core", "cli"])
    return {"riffle": cmd([str(RIFFLE), "--version"]), "riffle_commit": commit,
            "riffle_tree": "modified core/cli" if dirty not in ("", "?") else "clean core/cli",
            "rustc": cmd(["rustc", "--version"]), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads_default": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "numpy": np.__version__,
            "valgrind": cmd(["valgrind", "--version"])}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --------------------------------------------------------------------------- systems


class Systems:
    """ONNX Runtime sessions (1 and 2 intra-op threads) and the PyTorch eager model."""

    def __init__(self, hf):
        import onnxruntime as ort
        import torch

        from onnx_export import ONNX_PATH, Pooled

        self.torch = torch
        self.eager = Pooled(hf).eval()
        self.ort = {}
        for th in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads = th
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.ort[th] = ort.InferenceSession(str(ONNX_PATH), so, providers=["CPUExecutionProvider"])

    def ort_fn(self, th: int, ids: list[int]):
        x = np.asarray([ids], np.int64)
        feed = {"input_ids": x, "attention_mask": np.ones_like(x)}
        s = self.ort[th]
        return lambda: s.run(None, feed)[0]

    def torch_fn(self, th: int, ids: list[int]):
        torch = self.torch
        x = torch.tensor([ids])
        mask = torch.ones_like(x)
        eager = self.eager

        def f():
            torch.set_num_threads(th)
            with torch.inference_mode():
                return eager(x, mask).numpy()
        return f


# --------------------------------------------------------------------------- checks


def check_outputs(sysm: Systems, tok, texts, kv, gsoft_a: Path) -> dict:
    """Outputs equal (cosine >= 0.9999 of the pooled embeddings) before any timing."""
    res = {"threshold": 0.9999, "text": {}, "timed_ids": {}, "adapters": {},
           "synthetic_ids_match_cli": C.synthetic_ids_match_cli()}
    if not res["synthetic_ids_match_cli"]:
        log("WARNING: cli/src/cmd/bench.rs `synthetic_tokens` changed: update bench/common.py "
            "riffle_synthetic_ids (the systems may be timed on different ids than riffle)")
    ok = True
    for L in SEQS:
        text, ids = texts[L]
        ref = sysm.torch_fn(1, ids)()[0]
        o = sysm.ort_fn(1, ids)()[0]
        r = C.riffle_embed(text)
        row = {"tokens_hf": len(ids), "tokens_riffle": r["tokens"], "ort_vs_torch": C.cosine(o, ref),
               "riffle_vs_torch": C.cosine(r["output"], ref), "riffle_vs_ort": C.cosine(r["output"], o)}
        ok &= row["tokens_riffle"] == L and min(row["ort_vs_torch"], row["riffle_vs_torch"]) >= 0.9999
        res["text"][L] = row
        sid = C.riffle_synthetic_ids(L, kv)
        a = sysm.ort_fn(1, sid)()[0]
        b = sysm.torch_fn(1, sid)()[0]
        res["timed_ids"][L] = {"ort_vs_torch": C.cosine(a, b), "ort2_vs_ort1": C.cosine(sysm.ort_fn(2, sid)()[0], a),
                               "torch2_vs_torch1": C.cosine(sysm.torch_fn(2, sid)()[0], b)}
        ok &= min(res["timed_ids"][L].values()) >= 0.9999
        log(f"check seq {L}: riffle tokens {r['tokens']}, cos riffle/torch {row['riffle_vs_torch']:.7f}, "
            f"ort/torch {row['ort_vs_torch']:.7f}")
    text = texts[64][0]
    u = C.riffle_embed(text, gsoft_a)["output"]
    m = C.riffle_embed(text, gsoft_a, merge=True)["output"]
    base = C.riffle_embed(text)["output"]
    res["adapters"]["gsoft_unmerged_vs_merged"] = C.cosine(u, m)
    res["adapters"]["gsoft_vs_base"] = C.cosine(u, base)
    ok &= res["adapters"]["gsoft_unmerged_vs_merged"] >= 0.9999
    res["ok"] = bool(ok)
    return res


# --------------------------------------------------------------------------- latency


THREADS = (1, 2)  # thread counts every system is timed at


def riffle_bench(adapter: Path, seq: int, budget: float, threads: int | None = None) -> dict:
    """One `riffle bench --json` row; ``threads`` sets `--threads` (None: riffle's default,
    every available core)."""
    extra = [] if threads is None else ["--threads", str(threads)]
    rows = C.riffle_json(["bench", "--model", str(C.MODEL_F32), "--adapter", str(adapter), "--seq", str(seq),
                          "--budget", str(budget), *extra, "--json"])
    return rows[0]


def latency(sysm: Systems, kv, gsoft_a: Path, rounds: int, budget: float) -> dict:
    """Interleaved rounds; per round and system the median of the samples (ms). Every system
    runs at 1 and 2 threads (riffle `--threads N`, ONNX Runtime `intra_op_num_threads`,
    `torch.set_num_threads`); the order of the six rotates from round to round."""
    names = [f"{s}{th}" for s in ("riffle", "ort", "torch") for th in THREADS]
    keys = [f"riffle{th}_{k}" for th in THREADS
            for k in ("base", "unmerged", "merged", "activate_us", "swap_ms", "paired")]
    per: dict = {L: {k: [] for k in (*keys, *(n for n in names if not n.startswith("riffle")))} for L in SEQS}
    loads = []
    for r in range(rounds):
        for L in SEQS:
            ids = C.riffle_synthetic_ids(L, kv)
            order = names[r % len(names):] + names[:r % len(names)]
            for sname in order:
                th = int(sname[-1])
                if sname.startswith("riffle"):
                    row = riffle_bench(gsoft_a, L, budget, th)
                    p = per[L]
                    p[f"riffle{th}_base"].append(row["base_ms"])
                    p[f"riffle{th}_unmerged"].append(row["unmerged_ms"])
                    p[f"riffle{th}_merged"].append(row["merged_ms"])
                    p[f"riffle{th}_activate_us"].append(row["activate_us"])
                    p[f"riffle{th}_swap_ms"].append(row["swap_merged_ms"])
                    # riffle bench's median of unmerged / base over forwards interleaved
                    # one by one (a drifting machine moves both alike).
                    p[f"riffle{th}_paired"].append(row["unmerged_over_base"])
                else:
                    fn = sysm.ort_fn(th, ids) if sname.startswith("ort") else sysm.torch_fn(th, ids)
                    per[L][sname].append(1e3 * C.median(samples(fn, budget)))
            loads.append(loadavg()[0])
        log(f"latency round {r + 1}/{rounds}: " + ", ".join(
            f"seq {L} riffle {per[L]['riffle1_base'][-1]:.1f}/{per[L]['riffle2_base'][-1]:.1f}, "
            f"ort {per[L]['ort1'][-1]:.1f}/{per[L]['ort2'][-1]:.1f} ms (1/2 threads)" for L in SEQS))
    out = {"rounds": rounds, "budget_s": budget, "threads": list(THREADS), "load_1min": summary(loads), "seq": {}}
    for L in SEQS:
        p = per[L]
        ratio = lambda a, b: [x / y for x, y in zip(p[a], p[b])]  # noqa: E731
        # scaling efficiency: time at 1 thread / (2 x time at 2 threads); 1 = perfect, 0.5 = no gain
        eff = lambda one, two: [x / (2 * y) for x, y in zip(p[one], p[two])]  # noqa: E731
        row = {"raw": p, **{k: summary(v) for k, v in p.items()}}
        for th in THREADS:
            rb = f"riffle{th}_base"
            row[f"ratio_riffle{th}_over_ort{th}"] = summary(ratio(rb, f"ort{th}"))
            row[f"ratio_riffle{th}_over_torch{th}"] = summary(ratio(rb, f"torch{th}"))
            row[f"ratio_riffle{th}_unmerged_over_base"] = summary(p[f"riffle{th}_paired"])
            row[f"ratio_riffle{th}_merged_over_base"] = summary(ratio(f"riffle{th}_merged", rb))
        row["scaling"] = {"riffle": summary(eff("riffle1_base", "riffle2_base")),
                          "riffle_unmerged": summary(eff("riffle1_unmerged", "riffle2_unmerged")),
                          "ort": summary(eff("ort1", "ort2")), "torch": summary(eff("torch1", "torch2"))}
        out["seq"][L] = row
    return out


# --------------------------------------------------------------------------- callgrind


def _callgrind_instr(args: list[str], stdin: str) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cg.out"
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(RIFFLE), *args],
                           input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind failed: {r.stderr[-400:]}")
        m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
        return int(m.group(1))


def instructions(texts, gsoft_a: Path) -> dict:
    """Instructions per inference: callgrind on `riffle run --threads 1 --stdin` with 3 lines
    minus 1 line, divided by 2 (start-up, file checks, adapter preparation and the merge cancel)."""
    out = {}
    for L in SEQS:
        text = texts[L][0]
        row = {}
        for name, extra in (("base", []), ("unmerged", ["--adapter", str(gsoft_a)]),
                            ("merged", ["--adapter", str(gsoft_a), "--merge"])):
            args = ["run", "--threads", "1", "--model", str(C.MODEL_F32), *extra, "--stdin", "--json"]
            one = _callgrind_instr(args, text + "\n")
            three = _callgrind_instr(args, (text + "\n") * 3)
            row[name] = (three - one) / 2
        row["unmerged_over_base"] = row["unmerged"] / row["base"]
        row["merged_over_base"] = row["merged"] / row["base"]
        out[L] = row
        log(f"callgrind seq {L}: base {row['base'] / 1e6:.0f} M, unmerged x{row['unmerged_over_base']:.4f}, "
            f"merged x{row['merged_over_base']:.4f}")
    return out


# --------------------------------------------------------------------------- adapter ops

_DUR = re.compile(r"([0-9.]+)\s*(ns|µs|us|ms|s)\b")
_UNIT = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(s: str) -> float:
    m = _DUR.search(s)
    if not m:
        raise ValueError(f"no duration in {s!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def riffle_swaps(a: Path, b: Path, task_a: str, task_b: str, reps: int) -> dict:
    """Merged-mode switches timed by riffle itself (`riffle repl` reports each switch's
    duration when stderr is a terminal: run under `script` for a pseudo-terminal)."""
    cmds = [":merge on"]
    kinds = ["enable"]
    for _ in range(reps):
        cmds += [f":use {task_b}", f":use {task_a}"]
        kinds += ["swap", "swap"]
    for _ in range(reps):
        cmds += [":base", f":use {task_a}"]
        kinds += ["unmerge", "merge"]
    cmds.append(":quit")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(cmds) + "\n")
        inp = f.name
    try:
        inner = (f"{RIFFLE} repl --threads 1 --model {C.MODEL_F32} --adapter {a} --adapter {b} < {inp}")
        r = subprocess.run(["script", "-qec", inner, "/dev/null"], capture_output=True, text=True)
    finally:
        os.unlink(inp)
    lines = [l for l in r.stdout.replace("\r", "\n").splitlines()
             if "in-place swap in" in l or "base active (" in l or "merged mode on (" in l]
    if len(lines) != len(kinds):
        raise RuntimeError(f"riffle repl: expected {len(kinds)} timings, got {len(lines)}: {r.stdout[-600:]}")
    res: dict = {"swap": [], "merge": [], "unmerge": [], "enable": []}
    for k, l in zip(kinds, lines):
        res[k].append(_ms(l.split(">")[-1]))
    return {k: summary(v) for k, v in res.items() if v}


def riffle_adapter_ops(man: dict, reps: int) -> dict:
    out = {}
    specs = {m: (ROOT / man["peft"][m]["adapters"]["a"]["riffle"]["f32"]["path"],
                 ROOT / man["peft"][m]["adapters"]["b"]["riffle"]["f32"]["path"]) for m in ("oft", "boft")}
    specs["gsoft"] = (ROOT / man["gsoft"]["a"]["path"], ROOT / man["gsoft"]["b"]["path"])
    for m, (a, b) in specs.items():
        ta, tb = ("gsoft-a", "gsoft-b") if m == "gsoft" else ("a", "b")
        bench = riffle_bench(a, 16, 0.5, 1)
        sw = riffle_swaps(a, b, ta, tb, reps)
        out[m] = {"activate_us": bench["activate_us"], "bench_swap_merged_ms": bench["swap_merged_ms"], **sw}
        log(f"riffle {m}: activate {bench['activate_us']} us, A->B merged swap {sw['swap']['median']:.1f} ms, "
            f"merge {sw['merge']['median']:.1f} ms, unmerge {sw['unmerge']['median']:.1f} ms")
    return out


def peft_adapter_ops(hf, reps: int, threads=(1,)) -> dict:
    """PEFT on CPU: set_adapter (unmerged switch), merge_adapter, unmerge_adapter, a merged
    A->B swap (unmerge_adapter + set_adapter + merge_adapter) and merge_and_unload."""
    import copy
    import warnings

    import torch

    import adapters as A

    out: dict = {}
    for method in ("oft", "boft"):
        pm = A.peft_model(hf, method)
        out[method] = {}
        for th in threads:
            torch.set_num_threads(th)
            r: dict = {}
            names = iter(["b", "a"] * 1000)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                r["set_adapter_us"] = summary([1e6 * x for x in samples(lambda: pm.set_adapter(next(names)), 0.3,
                                                                        min_n=20)])
                pm.set_adapter("a")
                mer, unm, swp = [], [], []
                for _ in range(reps):
                    t = time.perf_counter(); pm.merge_adapter(); mer.append(time.perf_counter() - t)  # noqa: E702
                    t = time.perf_counter(); pm.unmerge_adapter(); unm.append(time.perf_counter() - t)  # noqa: E702
                pm.merge_adapter()
                cur = "a"
                for _ in range(reps):
                    nxt = "b" if cur == "a" else "a"
                    t = time.perf_counter()
                    pm.unmerge_adapter()
                    pm.set_adapter(nxt)
                    pm.merge_adapter()
                    swp.append(time.perf_counter() - t)
                    cur = nxt
                pm.unmerge_adapter()
                pm.set_adapter("a")
                mau = []
                for _ in range(2):
                    c = copy.deepcopy(pm)
                    t = time.perf_counter()
                    c.merge_and_unload()
                    mau.append(time.perf_counter() - t)
                    del c
            r["merge_ms"] = summary([1e3 * x for x in mer])
            r["unmerge_ms"] = summary([1e3 * x for x in unm])
            r["swap_ms"] = summary([1e3 * x for x in swp])
            r["merge_and_unload_ms"] = summary([1e3 * x for x in mau])
            out[method][th] = r
            log(f"peft {method} {th} thread(s): set_adapter {r['set_adapter_us']['median']:.0f} us, merge "
                f"{r['merge_ms']['median']:.1f} ms, unmerge {r['unmerge_ms']['median']:.1f} ms, swap "
                f"{r['swap_ms']['median']:.1f} ms, merge_and_unload {r['merge_and_unload_ms']['median']:.1f} ms")
        del pm
    torch.set_num_threads(1)
    return out


# --------------------------------------------------------------------------- memory


def peak_rss(texts, gsoft_a: Path, reps: int = 3) -> dict:
    text = texts[128][0]
    out = {"model_bytes": C.MODEL_F32.stat().st_size, "text_tokens": 128, "cases": {}}
    for name, extra in (("base", []), ("unmerged", ["--adapter", str(gsoft_a)]),
                        ("merged", ["--adapter", str(gsoft_a), "--merge"])):
        v = []
        for _ in range(reps):
            r = subprocess.run(["/usr/bin/time", "-v", str(RIFFLE), "run", "--threads", "1", "--model", str(C.MODEL_F32),
                                *extra, "--text", text, "--json"], capture_output=True, text=True, check=True)
            m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", r.stderr)
            v.append(int(m.group(1)) * 1024)
        out["cases"][name] = {"max_rss_bytes": int(statistics.median(v)), "all": v,
                              "over_file_bytes": int(statistics.median(v)) - out["model_bytes"]}
        log(f"peak RSS {name}: {statistics.median(v) / 2**20:.1f} MiB (file {out['model_bytes'] / 2**20:.1f} MiB)")
    return out


# --------------------------------------------------------------------------- extras


def apply_bench() -> dict | None:
    """riffle-core's apply benchmark (issue 3): its Markdown table, as printed."""
    if os.environ.get("RIFFLE_BENCH_SKIP_APPLY") == "1":
        return None
    try:
        r = subprocess.run(["cargo", "bench", "-q", "-p", "riffle-core", "--bench", "apply"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    if r.returncode != 0:
        return {"error": r.stderr[-800:]}
    table = [l for l in r.stdout.splitlines() if l.startswith("|")]
    notes = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("|")]
    return {"table": table, "notes": notes}


def _playwright_dir() -> Path | None:
    for d in (os.environ.get("PLAYWRIGHT_CORE_DIR"), Path.home() / ".cache/riffle/npm",
              Path.home() / ".cache/riffle/bench-npm"):
        if d and (Path(d) / "node_modules" / "playwright-core").is_dir():
            return Path(d)
    return None


def wasm(texts, gsoft_a: Path, rounds: int, budget: float) -> dict:
    """The browser build (www/pkg from scripts/build-www) in headless Chromium against
    native, interleaved (bench/browser/bench.mjs), and the module's size."""
    wasm_file = ROOT / "www" / "pkg" / "riffle_wasm_bg.wasm"
    res: dict = {"present": wasm_file.exists()}
    if os.environ.get("RIFFLE_BENCH_WWW_FAILED") == "1":
        res["present"] = False
        res["why"] = "scripts/build-www failed in this run, so the wasm build of this riffle is not available"
        return res
    if not wasm_file.exists():
        res["why"] = "www/pkg/riffle_wasm_bg.wasm is missing (scripts/build-www did not run or failed)"
        return res
    import gzip

    res["wasm_bytes"] = wasm_file.stat().st_size
    res["wasm_gzip_bytes"] = len(gzip.compress(wasm_file.read_bytes(), 9))
    js = wasm_file.with_name("riffle_wasm.js")
    res["js_bytes"] = js.stat().st_size if js.exists() else None
    pw = _playwright_dir()
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if pw is None or not Path(chromium).exists() or not shutil.which("node"):
        res["why"] = "headless Chromium, node or playwright-core is missing"
        return res
    cfg = {"texts": {str(L): texts[L][0] for L in SEQS}, "rounds": rounds, "budget_s": budget,
           "riffle": str(RIFFLE), "model": str(C.MODEL_F32.relative_to(ROOT)), "adapter": str(gsoft_a.relative_to(ROOT))}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
        cfg_path = f.name
    try:
        r = subprocess.run(["node", str(ROOT / "bench" / "browser" / "bench.mjs"), cfg_path], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "PLAYWRIGHT_CORE_DIR": str(pw)},
                           timeout=900)
    finally:
        os.unlink(cfg_path)
    if r.returncode != 0:
        res["why"] = f"browser run failed: {r.stderr.strip()[-500:]}"
        return res
    b = json.loads(r.stdout.strip().splitlines()[-1])
    res["chromium"] = b["chromium"]
    res["load_ms"] = b["loadMs"]
    res["wasm_memory_bytes"] = b["info"].get("wasmMemoryBytes")
    res["seq"] = {}
    for L in SEQS:
        rows = b["rows"][str(L)]
        nat = C.riffle_embed(texts[L][0])["output"]
        out = b["outputs"][str(L)]
        res["seq"][L] = {
            "tokens": out["tokens"], "cosine_vs_native": C.cosine(out["output"], nat),
            **{k: summary(v) for k, v in rows.items()},
            "ratio_wasm_over_native": summary([w / n for w, n in zip(rows["wasm_wall_ms"], rows["native_base_ms"])]),
            "ratio_wasm_unmerged_over_native_unmerged": summary(
                [w / n for w, n in zip(rows["wasm_unmerged_ms"], rows["native_unmerged_ms"])]),
            "raw": rows}
        log(f"wasm seq {L}: {res['seq'][L]['wasm_wall_ms']['median']:.1f} ms vs native "
            f"{res['seq'][L]['native_base_ms']['median']:.1f} ms, cos {res['seq'][L]['cosine_vs_native']:.7f}")
    return res


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("RIFFLE_BENCH_ROUNDS", 5)))
    ap.add_argument("--budget", type=float, default=0.3, help="seconds of samples per system and round")
    ap.add_argument("--swap-reps", type=int, default=6)
    ap.add_argument("--peft-reps", type=int, default=3)
    ap.add_argument("--no-callgrind", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    res: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_start": loadavg()}
    res["machine"] = machine()
    res["versions"] = versions()
    import torch

    torch.set_num_threads(1)
    log("loading all-MiniLM-L6-v2 (transformers, offline)")
    hf = C.hf_model()
    tok = C.hf_tokenizer()
    texts = C.texts_of_length(tok)
    kv = C.gguf_kv(C.MODEL_F32)
    import adapters as A
    from onnx_export import export

    log("adapters: PEFT OFT/BOFT (converted to riffle files) and GSOFT timing adapters")
    man = A.build(hf, tok, texts)
    res["adapters"] = man
    gsoft_a = ROOT / man["gsoft"]["a"]["path"]
    res["onnx"] = export(hf)
    sysm = Systems(hf)
    log("checking outputs")
    res["checks"] = check_outputs(sysm, tok, texts, kv, gsoft_a)
    res["texts"] = {L: texts[L][0] for L in SEQS}
    if not res["checks"]["ok"]:
        (OUT / "results.json").write_text(json.dumps(res, indent=1) + "\n")
        log("outputs differ: see bench/out/results.json 'checks'; not timing")
        return 1
    log(f"latency: {args.rounds} interleaved rounds")
    res["latency"] = latency(sysm, kv, gsoft_a, args.rounds, args.budget)
    if not args.no_callgrind and shutil.which("valgrind"):
        log("instruction counts (callgrind)")
        res["instructions"] = instructions(texts, gsoft_a)
    log("adapter operations")
    res["riffle_ops"] = riffle_adapter_ops(man, args.swap_reps)
    peft_threads = tuple(int(x) for x in os.environ.get("RIFFLE_BENCH_PEFT_THREADS", "1").split(","))
    res["peft_ops"] = peft_adapter_ops(hf, args.peft_reps, peft_threads)
    log("peak resident memory")
    res["memory"] = peak_rss(texts, gsoft_a)
    log("riffle-core apply benchmark")
    res["apply"] = apply_bench()
    if os.environ.get("RIFFLE_BENCH_SKIP_WASM") == "1":
        res["wasm"] = {"present": False, "why": "skipped (RIFFLE_BENCH_SKIP_WASM=1)"}
    else:
        log("wasm in headless Chromium against native")
        res["wasm"] = wasm(texts, gsoft_a, max(3, args.rounds // 2 + 1), args.budget)
    res["load_end"] = loadavg()
    res["seconds"] = round(time.time() - t0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    log(f"done in {res['seconds']} s: bench/out/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
