"""Perplexity of SmolLM2-135M-Instruct: `riffle perplexity` against llama.cpp's
`llama-perplexity`, side by side in one run, same file, same chunking, same threads.

For each weight type and thread count, interleaved rounds (which tool goes first swaps
every round) run

    llama-perplexity -m F -f TEXT -c C -b C --chunks K -t T
    riffle perplexity -m F -f TEXT --context C --chunks K --threads T --json

and record each tool's perplexity (which must not change from round to round: both are
deterministic) and its scoring throughput: tokens read per second of scoring, llama.cpp's
from the time stamps of its log between "calculating perplexity" and "Final estimate"
(`chunks x context` tokens), riffle's from its JSON `seconds` (`chunks x (context - 1)`:
the last token of a chunk is never read); model loading and tokenization are excluded on
both sides. The report gives the median over rounds with the
min-max, and riffle/llama.cpp throughput ratios per round.

    $(scripts/python-env) bench/perplexity.py --text FILE [--rounds 3] [--types Q4_1,Q4_0,F16]
        [--threads 1,2] [--context 512] [--chunks 8] [--out bench/out/perplexity.json]

llama-perplexity comes from scripts/llama-cpp's build (`cmake --build
~/.cache/riffle/llama.cpp/build --target llama-perplexity` adds it to an older build).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

from common import ROOT, median, riffle_json, spread


def sh(cmd: list[str], timeout: int = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


def llama(bin_dir: Path, model: Path, text: Path, ctx: int, chunks: int, t: int) -> dict:
    r = sh([str(bin_dir / "llama-perplexity"), "-m", str(model), "-f", str(text), "-c", str(ctx),
            "-b", str(ctx), "--chunks", str(chunks), "-t", str(t)])
    log = r.stdout + r.stderr
    # Log lines start with the time since start, minutes.seconds.milliseconds.microseconds.
    stamp = r"(\d+)\.(\d+)\.(\d+)\.(\d+) I "
    start = re.search(stamp + r"perplexity: calculating perplexity over", log)
    end = re.search(stamp + r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    if not start or not end:
        raise RuntimeError(f"llama-perplexity output not understood: {log[-600:]}")
    at = lambda m: int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 1e3 + int(m.group(4)) / 1e6  # noqa: E731
    return {"ppl": float(end.group(5)), "ppl_error": float(end.group(6)),
            "tokens_per_s": chunks * ctx / (at(end) - at(start))}


def riffle(model: Path, text: Path, ctx: int, chunks: int, t: int) -> dict:
    [o] = riffle_json(["perplexity", "-m", str(model), "-f", str(text), "--context", str(ctx),
                       "--chunks", str(chunks), "--threads", str(t), "--json"])
    read = o["chunks"] * (o["context"] - 1)
    return {"ppl": o["ppl"], "ppl_error": o["ppl_error"], "tokens_per_s": read / o["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--types", default="Q4_1,Q4_0,F16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "perplexity.json")
    a = ap.parse_args()
    bin_dir = Path(sh([str(ROOT / "scripts" / "llama-cpp")]).stdout.strip())
    if not (bin_dir / "llama-perplexity").exists():
        raise SystemExit(f"{bin_dir}/llama-perplexity missing: see this script's docstring")
    cache = Path.home() / ".cache" / "riffle" / "smollm2"
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for kind in a.types.split(","):
        model = cache / f"SmolLM2-135M-Instruct.{kind}.gguf"
        for t in (int(x) for x in a.threads.split(",")):
            rounds = []
            for r in range(a.rounds):
                order = ["llama", "riffle"] if r % 2 == 0 else ["riffle", "llama"]
                got = {}
                for tool in order:
                    got[tool] = (llama(bin_dir, model, a.text, a.context, a.chunks, t)
                                 if tool == "llama"
                                 else riffle(model, a.text, a.context, a.chunks, t))
                rounds.append(got)
                print(kind, t, r, json.dumps(got), flush=True)
            med = lambda tool, k: median([x[tool][k] for x in rounds])  # noqa: E731
            span = spread
            ratios = [x["riffle"]["tokens_per_s"] / x["llama"]["tokens_per_s"] for x in rounds]
            rows.append({
                "type": kind, "threads": t,
                "llama_ppl": rounds[0]["llama"]["ppl"], "riffle_ppl": rounds[0]["riffle"]["ppl"],
                "ppl_same_every_round": all(
                    x[k]["ppl"] == rounds[0][k]["ppl"] for x in rounds for k in ("llama", "riffle")),
                "llama_tokens_per_s": med("llama", "tokens_per_s"),
                "llama_span": span([x["llama"]["tokens_per_s"] for x in rounds]),
                "riffle_tokens_per_s": med("riffle", "tokens_per_s"),
                "riffle_span": span([x["riffle"]["tokens_per_s"] for x in rounds]),
                "ratio": median(ratios), "ratio_span": span(ratios),
            })
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"started": started, "text": str(a.text), "context": a.context,
                                 "chunks": a.chunks, "rows": rows}, indent=1))
    print("| type | threads | llama.cpp PPL | riffle PPL | llama.cpp tokens/s | riffle tokens/s "
          "| riffle / llama.cpp |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for x in rows:
        print(f"| {x['type']} | {x['threads']} | {x['llama_ppl']:.4f} | {x['riffle_ppl']:.4f} "
              f"| {x['llama_tokens_per_s']:.0f} ({x['llama_span'][0]:.0f}-{x['llama_span'][1]:.0f}) "
              f"| {x['riffle_tokens_per_s']:.0f} ({x['riffle_span'][0]:.0f}-{x['riffle_span'][1]:.0f}) "
              f"| {x['ratio']:.2f} ({x['ratio_span'][0]:.2f}-{x['ratio_span'][1]:.2f}) |")


if __name__ == "__main__":
    main()
