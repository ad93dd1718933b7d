"""Browser anchors (issues 19, 21): riffle's wasm against onnxruntime-web (MiniLM) and
wllama (SmolLM2) at the same thread counts (1 and 2: the page is cross-origin isolated,
riffle's threaded modules run a Web Worker pool), in the same headless Chromium run
(bench/browser/anchors.mjs), rounds alternating.

    $(scripts/python-env) bench/anchors.py [--rounds 5] [--budget 2] [--threads 1,2] [--no-minilm] [--no-llm]

Needs scripts/build-www (www/pkg, and www/pkg-chat for the LLM part), playwright-core
(scripts/test-wasm installs it) and, in RIFFLE_BENCH_NPM_DIR (default
~/.cache/riffle/bench-npm), npm onnxruntime-web and @wllama/wllama:

    npm install --prefix ~/.cache/riffle/bench-npm onnxruntime-web@1.31.1 @wllama/wllama@3.13.0

MiniLM: the text of exactly 128 tokens that bench/run.py uses, its ids from the HF
tokenizer (riffle tokenizes the same text itself: the token counts are checked equal),
riffle's F32 GGUF against the ONNX export of the same F32 weights (bench/onnx_export.py);
the two sentence embeddings must agree (cosine > 0.9999) before anything is timed.
Needs the threaded modules for thread counts above 1 (scripts/build-www with nightly).
Writes bench/out/anchors.json and prints the medians over rounds (spread: min-max) and
the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import common as C

LLM_MODEL = Path.home() / ".cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of MiniLM samples per runtime and round")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--no-llm", action="store_true")
    ap.add_argument("--llm-model", default=os.environ.get("RIFFLE_ANCHOR_LLM", str(LLM_MODEL)))
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    cfg: dict = {"rounds": args.rounds, "budget_s": args.budget, "threads": counts, "minilm": None, "llm": None}
    if not args.no_minilm:
        from onnx_export import ONNX_PATH, export

        hf = C.hf_model()
        tok = C.hf_tokenizer()
        text, ids = C.texts_of_length(tok, (args.seq,))[args.seq]
        export(hf)
        cfg["minilm"] = {"text": text, "ids": list(ids),
                         "model": str(C.MODEL_F32.relative_to(C.ROOT)),
                         "onnx": str(ONNX_PATH.relative_to(C.ROOT))}
    if not args.no_llm:
        # The file is served from the page's origin: www/models/ (scripts/build-www links it).
        served = C.ROOT / "www" / "models" / "smollm2" / Path(args.llm_model).name
        if not served.exists():
            print(f"anchors: {served} is missing (scripts/build-www puts it there)", file=sys.stderr)
            return 1
        # The France question in the file's chat template, tokenized by llama.cpp itself
        # (riffle's byte-level BPE tokenizer is not in the chat module yet).
        text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence, then "
                "name two famous buildings there.<|im_end|>\n<|im_start|>assistant\n")
        bindir = subprocess.run([str(C.ROOT / "scripts" / "llama-cpp")], capture_output=True, text=True,
                                check=True).stdout.strip().splitlines()[-1]
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
            tpath = f.name
        out = subprocess.run([str(Path(bindir) / "llama-tokenize"), "-m", str(served), "-f", tpath, "--ids",
                              "--log-disable"], capture_output=True, text=True, check=True).stdout
        os.unlink(tpath)
        ids = json.loads(out.strip().splitlines()[-1])
        cfg["llm"] = {"model": str(served.relative_to(C.ROOT)), "prompt_text": text, "prompt_ids": ids,
                      "gen_tokens": args.gen_tokens}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
        path = f.name
    try:
        r = subprocess.run(["node", str(C.ROOT / "bench" / "browser" / "anchors.mjs"), path], cwd=C.ROOT,
                           capture_output=True, text=True, timeout=1800)
    finally:
        os.unlink(path)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        return r.returncode
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["load"] = os.getloadavg()
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / "anchors.json").write_text(json.dumps(res, indent=1) + "\n")
    span = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"  # noqa: E731
    spanx = lambda v: f"{statistics.median(v):.2f}x ({min(v):.2f}-{max(v):.2f})"  # noqa: E731
    print(f"Chromium {res['chromium']}, cross-origin isolated: {res['crossOriginIsolated']}, "
          f"hardwareConcurrency {res['hardwareConcurrency']}, {args.rounds} rounds alternating; "
          f"load average after: {' '.join(f'{x:.2f}' for x in res['load'])}")
    if "minilm" in res:
        m = res["minilm"]
        for n in map(str, counts):
            s_ = m["setup"][n]
            if s_["riffleTokens"] != m["tokens"] or s_["cosine"] < 0.9999:
                print(f"anchors: MiniLM outputs disagree at {n} threads: {s_['riffleTokens']} vs {m['tokens']} "
                      f"tokens, cosine {s_['cosine']}", file=sys.stderr)
                return 1
            if s_["riffleThreads"] != int(n):
                print(f"anchors: riffle ran {s_['riffleThreads']} thread(s), not {n} ({s_.get('threadError')})",
                      file=sys.stderr)
                return 1
            rf, ort = m["rows"][n]["riffle_ms"], m["rows"][n]["ort_ms"]
            ratios = [a / b for a, b in zip(rf, ort)]
            print(f"MiniLM {m['tokens']} tokens, {n} thread(s): riffle {span(rf)} ms, onnxruntime-web "
                  f"{res['onnxruntime_web']} {span(ort)} ms; riffle/ort {spanx(ratios)}; cosine {s_['cosine']:.7f}")
    if "llm" in res:
        l = res["llm"]
        name = Path(args.llm_model).name
        for n in map(str, counts):
            rows, st = l["rows"][n], l["setup"][n]
            if st["riffleThreads"] != int(n):
                print(f"anchors: riffle's chat ran {st['riffleThreads']} thread(s), not {n} ({st.get('threadError')})",
                      file=sys.stderr)
                return 1
            rp = [l["prompt_tokens"] / (row["riffle"]["promptMs"] / 1000) for row in rows]
            rd = [(l["gen_tokens"] - 1) / (row["riffle"]["decodeMs"] / 1000) for row in rows]
            wp = [row["wllama"]["timings"]["prompt_per_second"] for row in rows]
            wd = [row["wllama"]["timings"]["predicted_per_second"] for row in rows]
            wn = rows[0]["wllama"]["timings"]
            for who, p, d in (("riffle", rp, rd), (f"wllama {res['wllama']}", wp, wd)):
                print(f"SmolLM2 {name}, {n} thread(s): {who}: prompt {span(p)} tok/s, decode {span(d)} tok/s")
            print(f"  prompt {l['prompt_tokens']} tokens (wllama: {wn.get('prompt_n')}), {l['gen_tokens']} generated "
                  f"(wllama: {wn.get('predicted_n')}); wllama threads {st['wllamaThreads']}, multithread "
                  f"{st['wllamaMultithread']}")
            print(f"  riffle/wllama prompt tokens/s {spanx([a / b for a, b in zip(rp, wp)])}, "
                  f"decode {spanx([a / b for a, b in zip(rd, wd)])}")
            print(f"  riffle text:  {rows[0]['riffle']['text']!r}")
            print(f"  wllama text:  {rows[0]['wllama']['text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
