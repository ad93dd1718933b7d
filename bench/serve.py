"""`riffle serve` next to llama.cpp's `llama-server` on the same GGUF file, same threads:
throughput and p50/p95 latency of greedy chat completions at 1, 4 and 8 concurrent clients.

    python bench/serve.py --model M.gguf [--adapters DIR] [--threads 2] [--requests 16]
                          [--max-tokens 32] [--clients 1,4,8] [--rounds 1]
                          [--servers riffle,riffle-unbatched,llama-server]
                          [--riffle target/release/riffle]
                          [--llama-server $(scripts/llama-cpp)/llama-server]

`riffle-unbatched` is `riffle serve --no-batching` (each request decodes its own tokens), to
measure what decoding the running requests together buys within the same run. With
`--rounds R` every (clients, server) pair runs R times, the servers alternating within each
round, and a summary line per pair gives the median and range of the rounds.

riffle's clients cycle through the base and every adapter in DIR (`model` = task name,
made e.g. by scripts/serve-adapters.py); llama-server has no orthogonal adapters (its
per-request `lora` field takes LoRA adapters only), so it serves the base. Each server
gets one slot per client (`--parallel N` / `-np N`) with a 512-token context each.
Standard library only; every request goes to 127.0.0.1. Prints one JSON line per run.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Why is the sky blue?",
    "Write a haiku about rain.",
    "How many legs does a spider have?",
    "What does a compiler do?",
    "Give me a synonym for happy.",
    "What is 12 times 12?",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=600):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(url, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def run_load(url, models, clients, requests, max_tokens):
    latencies, tokens = [], []
    lock = threading.Lock()
    jobs = list(range(requests))

    def client():
        while True:
            with lock:
                if not jobs:
                    return
                k = jobs.pop()
            body = {"model": models[k % len(models)], "temperature": 0, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}]}
            t0 = time.perf_counter()
            r = post(url + "/v1/chat/completions", body)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                tokens.append(r["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]
    return {"clients": clients, "requests": len(lat), "wall_s": round(wall, 3),
            "requests_per_s": round(len(lat) / wall, 3),
            "completion_tokens_per_s": round(sum(tokens) / wall, 2),
            "completion_tokens": sum(tokens),
            "p50_s": round(pct(0.5), 3), "p95_s": round(pct(0.95), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapters")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--riffle", default="target/release/riffle")
    ap.add_argument("--llama-server", default=os.path.expanduser(
        "~/.cache/riffle/llama.cpp/build/bin/llama-server"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--servers", default="riffle,riffle-unbatched,llama-server")
    a = ap.parse_args()
    adapters = sorted(Path(a.adapters).glob("*.gguf")) if a.adapters else []
    runs = {}
    for rnd in range(a.rounds):
        for clients in [int(c) for c in a.clients.split(",")]:
            servers = a.servers.split(",")
            if rnd % 2 == 1:
                servers.reverse()
            for server in servers:
                r = run_server(a, server, clients, adapters)
                if r is None:
                    continue
                r["round"] = rnd
                print(json.dumps(r), flush=True)
                runs.setdefault((clients, server), []).append(r)
    if a.rounds > 1:
        for (clients, server), rs in runs.items():
            summary = {"summary": True, "clients": clients, "server": server, "rounds": len(rs)}
            for key in ("completion_tokens_per_s", "requests_per_s", "p50_s", "p95_s"):
                v = sorted(r[key] for r in rs)
                summary[key] = {"median": v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2,
                                "min": v[0], "max": v[-1]}
            print(json.dumps(summary), flush=True)


def run_server(a, server, clients, adapters):
    """One load run of `server` with `clients` concurrent clients, or None if absent."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if server.startswith("riffle"):
        cmd = [a.riffle, "--threads", str(a.threads), "serve", "--model", a.model,
               "--port", str(port), "--parallel", str(clients), "--ctx-size", "512"]
        if server == "riffle-unbatched":
            cmd.append("--no-batching")
        for f in adapters:
            cmd += ["--adapter", str(f)]
        models = ["base"] + [f.stem for f in adapters]
    else:
        if not Path(a.llama_server).exists():
            return None
        cmd = [a.llama_server, "-m", a.model, "--host", "127.0.0.1", "--port", str(port),
               "-t", str(a.threads), "-np", str(clients), "-c", str(512 * clients)]
        models = ["base"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, proc)
        # One warm-up request per model.
        for m in models:
            post(url + "/v1/chat/completions", {"model": m, "temperature": 0, "max_tokens": 4,
                 "messages": [{"role": "user", "content": "Hi"}]})
        r = run_load(url, models, clients, a.requests, a.max_tokens)
        r.update({"server": server, "model": Path(a.model).name, "threads": a.threads,
                  "adapters": len(models) - 1})
        return r
    finally:
        proc.terminate()
        proc.wait()

if __name__ == "__main__":
    main()
