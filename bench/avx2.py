"""MiniLM on the AVX2 path: what an x86-64 CPU without AVX-512 (most PCs) runs, measured
on this one, riffle against PyTorch side by side in one run.

riffle runs under `RIFFLE_KERNELS=avx2` (its AVX2 + FMA kernels, checked in its output);
PyTorch with every vector path it has capped at AVX2 (`ATEN_CPU_CAPABILITY=avx2`,
`ONEDNN_MAX_CPU_ISA=AVX2`, `MKL_ENABLE_INSTRUCTIONS=AVX2`, set before torch loads; checked
with `torch.backends.cpu.get_cpu_capability()`). ONNX Runtime has no such cap and is left
out. Both are timed on the same token ids (bench/common.py), at 1 and 2 threads, in
interleaved rounds (the order alternates); riffle's unmerged figure is `riffle bench`'s
median of interleaved base / unmerged pairs.

    $(scripts/bench-env) bench/avx2.py [--rounds 3] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for k, v in {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "RIFFLE_KERNELS": "avx2"}.items():
    os.environ[k] = v

import common as C  # noqa: E402

THREADS = (1, 2)


def riffle(adapter, seq: int, threads: int, budget: float) -> dict:
    row = C.riffle_json(["bench", "--model", str(C.MODEL_F32), "--adapter", str(adapter),
                         "--seq", str(seq), "--threads", str(threads), "--budget", str(budget),
                         "--json"])[0]
    if row["kernels"] != "avx2+fma":
        raise SystemExit(f"riffle ran {row['kernels']} kernels, not avx2+fma")
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--out", default=str(C.OUT / "avx2.json"))
    a = ap.parse_args()
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    if cap != "AVX2":
        raise SystemExit(f"PyTorch runs {cap}, not AVX2")
    from onnx_export import Pooled  # the mean-pooled model bench/run.py times

    hf = Pooled(C.hf_model()).eval()
    adapter = C.OUT / "adapters" / "minilm-gsoft-a-f16.gguf"
    if not adapter.exists():
        raise SystemExit(f"{adapter} missing: run ./scripts/bench once (it writes the adapters)")
    kv = C.gguf_kv(C.MODEL_F32)
    per: dict = {}
    for r in range(a.rounds):
        for seq in C.SEQS:
            ids = C.riffle_synthetic_ids(seq, kv)
            x = torch.tensor([ids])
            mask = torch.ones_like(x)
            for th in THREADS:
                p = per.setdefault(f"{seq}/{th}", {k: [] for k in (
                    "riffle_base", "riffle_unmerged", "riffle_merged", "unmerged_over_base",
                    "torch", "riffle_over_torch")})
                order = ("riffle", "torch") if (r + th) % 2 == 0 else ("torch", "riffle")
                for tool in order:
                    if tool == "riffle":
                        row = riffle(adapter, seq, th, a.budget)
                        p["riffle_base"].append(row["base_ms"])
                        p["riffle_unmerged"].append(row["unmerged_ms"])
                        p["riffle_merged"].append(row["merged_ms"])
                        p["unmerged_over_base"].append(row["unmerged_over_base"])
                    else:
                        torch.set_num_threads(th)
                        with torch.inference_mode():
                            hf(x, mask)
                            times = []
                            end = time.perf_counter() + a.budget
                            while len(times) < 5 or time.perf_counter() < end:
                                t = time.perf_counter()
                                hf(x, mask)
                                times.append(time.perf_counter() - t)
                        p["torch"].append(1e3 * C.median(times))
                p["riffle_over_torch"].append(p["riffle_base"][-1] / p["torch"][-1])
                C.log(f"round {r + 1} seq {seq} threads {th}: riffle {p['riffle_base'][-1]:.2f} ms "
                      f"(unmerged x{p['unmerged_over_base'][-1]:.3f}), torch {p['torch'][-1]:.2f} ms")
    summary = {k: {m: {"median": C.median(v), "min": min(v), "max": max(v)} for m, v in p.items()}
               for k, p in per.items()}
    out = {"rounds": a.rounds, "budget_s": a.budget, "torch": torch.__version__,
           "torch_capability": cap, "rows": summary, "raw": per}
    C.OUT.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("| tokens | threads | riffle base | riffle unmerged | riffle merged | PyTorch | riffle / PyTorch "
          "| unmerged / base |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, s in summary.items():
        seq, th = key.split("/")

        def f(m: str, d: int = 2, unit: str = " ms") -> str:
            return f"{s[m]['median']:.{d}f}{unit} ({s[m]['min']:.{d}f}–{s[m]['max']:.{d}f})"
        print(f"| {seq} | {th} | {f('riffle_base')} | {f('riffle_unmerged')} | {f('riffle_merged')} | "
              f"{f('torch')} | {f('riffle_over_torch', 2, 'x')} | {f('unmerged_over_base', 3, 'x')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
