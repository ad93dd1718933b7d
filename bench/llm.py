"""SmolLM2-135M-Instruct: riffle against llama.cpp, side by side in one run.

For each weight type (the file llama.cpp made, Q4_1, and its requantizations from
scripts/smollm2) and each thread count, interleaved rounds run `llama-bench -p P -n N -t T`
(llama.cpp's own benchmark, built from the llama-cpp-python 0.3.36 sdist by
scripts/llama-cpp) and `riffle bench --model F --prompt-tokens P --gen-tokens N --threads T
--json` (with a GSOFT adapter applied unmerged when one is given). Each round keeps each
tool's median; the report gives the median over rounds with the min-max of the round
values, and riffle/llama.cpp ratios per round. A type riffle cannot load yet is reported
as such, not skipped silently.

    $(scripts/python-env) bench/llm.py [--rounds 3] [--types Q4_1,Q4_0,Q8_0,F16]
        [--threads 1,2] [--prompt 128] [--gen 64] [--decode-at-depth] [--cache-type f32|f16]
        [--adapter Q8_0=A.gguf] [--out bench/out/llm.json] [--markdown FILE] [--avx2]

riffle's decode tokens follow its prompt (attention over `P .. P + N` positions);
`llama-bench -n N` decodes from an empty context unless `--decode-at-depth` asks for its
decode after `P` positions too (`-p 0 -n N -d P`, a second call), the like-for-like
comparison for long prompts. llama.cpp keeps its key/value cache in f16; `--cache-type f16`
has riffle do the same (its default is f32).

`--avx2` measures what an x86-64 CPU without AVX-512 runs, on this one: riffle under
`RIFFLE_KERNELS=avx2` against llama.cpp built for AVX2 + FMA + F16C (`scripts/llama-cpp
--avx2`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RIFFLE = ROOT / "target" / "release" / "riffle"
# The kernel family riffle is capped at (`--avx2`: "avx2+fma"), None for the default.
KERNELS: str | None = None


def sh(cmd: list[str], timeout: int = 900) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r.stdout


def llama_bench(bin_dir: Path, model: Path, p: int, n: int, t: int, reps: int,
                at_depth: bool = False) -> dict:
    base = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(t), "-r", str(reps),
            "-o", "json"]
    if at_depth:
        # The prompt from an empty context, then the decode after the prompt's positions.
        runs = [["-p", str(p), "-n", "0"], ["-p", "0", "-n", str(n), "-d", str(p)]]
    else:
        runs = [["-p", str(p), "-n", str(n)]]
    res = {}
    for extra in runs:
        for e in json.loads(sh(base + extra)):
            key = "prompt" if e["n_prompt"] else "decode"
            res[key] = e["avg_ts"]
    return res


def riffle_bench(model: Path, p: int, n: int, t: int, adapter: Path | None,
                 cache_type: str = "f32") -> dict:
    cmd = [str(RIFFLE), "bench", "--model", str(model), "--prompt-tokens", str(p),
           "--gen-tokens", str(n), "--threads", str(t), "--cache-type", cache_type, "--json"]
    if adapter:
        cmd += ["--adapter", str(adapter)]
    o = json.loads(sh(cmd))
    if KERNELS and o.get("kernels") not in (None, KERNELS):
        raise RuntimeError(f"riffle ran {o.get('kernels')} kernels, not {KERNELS}")
    res = {"prompt": o["base"]["prompt_tokens_per_s"], "decode": o["base"]["decode_tokens_per_s"]}
    if "unmerged" in o:
        res["unmerged_prompt"] = o["unmerged"]["prompt_tokens_per_s"]
        res["unmerged_decode"] = o["unmerged"]["decode_tokens_per_s"]
        res["unmerged_ratio"] = o.get("unmerged_decode_time_ratio")
    return res


def spread(v: list[float]) -> dict:
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--types", default="Q4_1,Q4_0,Q8_0,F16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--decode-at-depth", action="store_true",
                    help="llama.cpp's decode after the prompt's positions too (llama-bench -d P)")
    ap.add_argument("--cache-type", choices=["f32", "f16"], default="f32",
                    help="riffle's key/value cache (llama.cpp's is f16)")
    ap.add_argument("--adapter", action="append", default=[], metavar="TYPE=A.gguf",
                    help="a GSOFT adapter for the file of TYPE, applied unmerged (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "llm.json")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--avx2", action="store_true",
                    help="both tools on their AVX2 + FMA kernels (x86-64 without AVX-512)")
    a = ap.parse_args()
    global KERNELS
    if a.avx2:
        os.environ["RIFFLE_KERNELS"] = "avx2"
        KERNELS = "avx2+fma"
    bin_dir = Path(sh([str(ROOT / "scripts" / "llama-cpp"), *(["--avx2"] if a.avx2 else [])]).strip())
    smol = Path(sh([str(ROOT / "scripts" / "smollm2")]).strip())
    types = a.types.split(",")
    adapters = {k: Path(v) for k, v in (x.split("=", 1) for x in a.adapter)}
    threads = [int(t) for t in a.threads.split(",")]
    rows = {}
    for rnd in range(a.rounds):
        for ty in types:
            model = smol / f"SmolLM2-135M-Instruct.{ty}.gguf"
            for t in threads:
                key = f"{ty}/{t}"
                r = rows.setdefault(key, {"type": ty, "threads": t, "llama": [], "riffle": [], "error": None})
                # Alternate which tool goes first from round to round.
                order = ["llama", "riffle"] if rnd % 2 == 0 else ["riffle", "llama"]
                for tool in order:
                    try:
                        if tool == "llama":
                            r["llama"].append(llama_bench(bin_dir, model, a.prompt, a.gen, t, 3,
                                                          a.decode_at_depth))
                        elif r["error"] is None:
                            r["riffle"].append(riffle_bench(model, a.prompt, a.gen, t, adapters.get(ty),
                                                            a.cache_type))
                    except RuntimeError as e:
                        if tool == "riffle":
                            msg = str(e).splitlines()[-1]
                            r["error"] = msg[msg.find("riffle: ") + 8:] if "riffle: " in msg else msg[-200:]
                        else:
                            raise
                print(f"round {rnd + 1} {key}: llama {r['llama'][-1]} riffle "
                      f"{r['riffle'][-1] if r['riffle'] else r['error']}", file=sys.stderr, flush=True)
    summary = []
    for key, r in rows.items():
        s = {"type": r["type"], "threads": r["threads"], "error": r["error"]}
        for what in ("prompt", "decode"):
            s[f"llama_{what}"] = spread([x[what] for x in r["llama"]])
            if r["riffle"]:
                s[f"riffle_{what}"] = spread([x[what] for x in r["riffle"]])
                s[f"ratio_{what}"] = spread([x[what] / y[what] for x, y in zip(r["riffle"], r["llama"])])
        if r["riffle"] and "unmerged_decode" in r["riffle"][0]:
            s["unmerged_decode_time"] = spread([x.get("unmerged_ratio") or x["decode"] / x["unmerged_decode"]
                                                for x in r["riffle"]])
        summary.append(s)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg": os.getloadavg()},
        "prompt_tokens": a.prompt, "gen_tokens": a.gen, "rounds": a.rounds,
        "llama_decode_at_depth": a.decode_at_depth, "riffle_cache_type": a.cache_type,
        "kernels": "AVX2 + FMA (riffle RIFFLE_KERNELS=avx2, llama.cpp scripts/llama-cpp --avx2)"
        if a.avx2 else "native",
        "adapter": {k: str(v) for k, v in adapters.items()} or None,
        "rows": summary,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    md = markdown(result)
    if a.markdown:
        a.markdown.write_text(md)
    print(md)
    return 0


def fmt(s: dict | None, digits: int = 0) -> str:
    if not s:
        return "—"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def markdown(r: dict) -> str:
    lines = [
        f"SmolLM2-135M-Instruct, prompt {r['prompt_tokens']} tokens then {r['gen_tokens']} decoded "
        f"(tokens/s; median of {r['rounds']} interleaved rounds, min–max in brackets; "
        "ratio > 1: riffle faster). riffle's key/value cache: " + r.get("riffle_cache_type", "f32")
        + "; llama.cpp's decode: " + ("after the prompt (-d P)" if r.get("llama_decode_at_depth")
                                      else "from an empty context") + ".",
        "",
        "| type | threads | llama.cpp prompt | riffle prompt | ratio | llama.cpp decode | riffle decode | ratio |"
        + (" unmerged decode time |" if r["adapter"] else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if r["adapter"] else ""),
    ]
    for s in r["rows"]:
        if s["error"]:
            riffle_p = riffle_d = f"not loadable: {s['error']}"
            rp = rd = "—"
        else:
            riffle_p, riffle_d = fmt(s.get("riffle_prompt")), fmt(s.get("riffle_decode"))
            rp, rd = fmt(s.get("ratio_prompt"), 2), fmt(s.get("ratio_decode"), 2)
        row = (f"| {s['type']} | {s['threads']} | {fmt(s['llama_prompt'])} | {riffle_p} | {rp} | "
               f"{fmt(s['llama_decode'])} | {riffle_d} | {rd} |")
        if r["adapter"]:
            row += f" {fmt(s.get('unmerged_decode_time'), 3)} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
