"""Peak memory of one training step per method, each method in its own process (CPU).

The comparison's GPU peaks (``llm.md``) come from one process that trains every method in turn
with the base and evaluation copies resident. This measures each method alone: a fresh process
loads the Q4_1 base (dequantized, fp32), adapts all seven linears of every block with the method
(ours as :func:`riffle_train.llm.apply_method` does with the comparison's budget: b=8, BOFT b=8
m=2; PEFT LoRA r=4, within 1.4% of GSOFT's trainable parameters), then

* frees what loading left behind (``gc``, glibc ``malloc_trim``) and reads the resident set
  ``VmRSS`` (the baseline: base weights, adapter parameters);
* resets the kernel's high-water mark (``/proc/self/clear_refs`` ``5``, Linux), runs one AdamW
  step of :func:`riffle_train.llm.answer_loss` on one fixed batch (seeded random token ids,
  ``batch`` x ``tokens``, the loss on the last 8 positions as an answer would be) and reads
  ``VmHWM``: the first step's peak above the baseline (it also creates AdamW's state and pages in
  the kernels' code, the same for every method);
* then, from the new baseline (gradients and AdamW state resident), the same for ``steps`` more
  steps: the steady step peak, the number compared across methods.

``python -m riffle_train llm memory`` runs each method ``repeats`` times (each a new process, the
methods interleaved) and writes ``train/results/llm/memory.json`` and ``memory.md``. LoRA needs
PEFT: run it with ``train/peft-env``'s python.
"""

from __future__ import annotations

import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def _status(key: str) -> int:
    """A ``/proc/self/status`` value in bytes (``VmRSS``, ``VmHWM``)."""
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith(key + ":"):
            return int(ln.split()[1]) * 1024
    raise KeyError(key)


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _split(method: str) -> tuple[str, str | None]:
    """``gsoft+plain`` -> ``("gsoft", "plain")``: a method and, for ours, an explicit adapter path
    (``layers.ADAPTER_PATHS``); without ``+path`` ours take ``inject``'s default (on CPU ``lean``,
    or the environment variable ``RIFFLE_ADAPTER_PATH``)."""
    name, _, path = method.partition("+")
    return name, path or None


def _path_of(model) -> str | None:
    return getattr(model, "riffle_adapter", {}).get("path")


def measure_one(base: str, method: str, batch: int, tokens: int, steps: int, seed: int = 0) -> dict:
    """One method's step peak in this process (see the module docstring)."""
    from . import llm
    from .layers import trainable_parameters
    from .llama import llama_from_gguf

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model, _ = llama_from_gguf(base)
    for p in model.parameters():
        p.requires_grad_(False)
    name, path = _split(method)
    wrapped = llm.apply_method(model, name, llm.targets(model, None), llm.Budget(), path)
    n_train = trainable_parameters(wrapped)
    g = torch.Generator().manual_seed(seed)
    vocab = model.cfg.vocab
    ids = torch.randint(0, vocab, (batch, tokens), generator=g)
    lab = torch.full_like(ids, -100)
    lab[:, -8:] = ids[:, -8:]
    att = torch.ones_like(ids)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    wrapped.train()

    def step() -> float:
        loss = llm.answer_loss(wrapped, ids, lab, att)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def peak_of(n: int) -> tuple[int, int, float]:
        _trim()
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return before, _status("VmHWM"), (time.perf_counter() - t0) / n

    b0, h0, _ = peak_of(1)
    b1, h1, secs = peak_of(steps)
    mib = lambda x: round(x / 2**20, 1)  # noqa: E731
    return {"method": method, "adapter_path": _path_of(wrapped), "trainable": n_train, "batch": batch, "tokens": tokens, "steps": steps,
            "baseline_mib": mib(b0), "first_step_peak_mib": mib(h0 - b0), "after_first_baseline_mib": mib(b1),
            "step_peak_mib": mib(h1 - b1), "seconds_per_step": round(secs, 2)}


def saved_for_backward(base: str, methods, batch: int, tokens: int, seed: int = 0) -> dict[str, dict]:
    """Bytes autograd keeps for the backward pass in one forward of the loss, per method (one
    process, the base loaded once): every tensor ``saved_tensors_hooks`` sees, counted once per
    storage, leaving out storages that parameters own (the base's weights, the adapter's
    parameters: no new memory). ``methods`` may name adapter paths (``gsoft+plain``)."""
    import copy

    from . import llm
    from .llama import llama_from_gguf

    torch.set_num_threads(1)
    base_model, _ = llama_from_gguf(base)
    for p in base_model.parameters():
        p.requires_grad_(False)
    owned = {p.untyped_storage().data_ptr() for p in base_model.parameters()}
    out = {}
    for method in methods:
        model = copy.deepcopy(base_model)
        name, path = _split(method)
        wrapped = llm.apply_method(model, name, llm.targets(model, None), llm.Budget(), path)
        own = {p.untyped_storage().data_ptr() for p in wrapped.parameters()}  # base and adapter
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, model.cfg.vocab, (batch, tokens), generator=g)
        lab = torch.full_like(ids, -100)
        lab[:, -8:] = ids[:, -8:]
        seen: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            llm.answer_loss(wrapped, ids, lab, torch.ones_like(ids))
        new = sum(n for ptr, n in seen.items() if ptr not in own and ptr not in owned)
        out[method] = {"adapter_path": _path_of(wrapped), "saved_mib": round(new / 2**20, 1), "saved_bytes": new,
                       "saved_tensors": len(seen)}
        del model, wrapped
    return out


def run_memory(base: str, methods, out: str | Path, repeats: int = 3, batch: int = 2, tokens: int = 64,
               steps: int = 2, python: str | None = None, command: str = "", log=print) -> list[dict]:
    """Each method ``repeats`` times, each in a fresh process; writes memory.json / memory.md."""
    py = python or sys.executable
    rows: list[dict] = []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for r in range(repeats):
        for m in methods:
            cmd = [py, "-m", "riffle_train.llm_memory", "--base", str(base), "--method", m, "--batch", str(batch),
                   "--tokens", str(tokens), "--steps", str(steps)]
            p = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                raise RuntimeError(f"{m}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
            row = json.loads(p.stdout.strip().splitlines()[-1])
            row["repeat"] = r
            rows.append(row)
            log(f"[{r}] {m}: steady step peak {row['step_peak_mib']} MiB, first {row['first_step_peak_mib']} "
                f"(baseline {row['baseline_mib']}, {row['seconds_per_step']} s/step)", flush=True)
    from .llm import device_name

    meta = {"base": Path(base).name, "torch": torch.__version__, "cpu": device_name("cpu"),
            "batch": batch, "tokens": tokens, "steps": steps, "repeats": repeats, "command": command}
    (out / "memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "memory.md").write_text(markdown(rows, meta))
    return rows


LABELS = {"gsoft": "GSOFT", "double_gsoft": "Double GSOFT", "oft": "OFT", "boft": "BOFT", "lora": "PEFT LoRA"}


def label(method: str, path: str | None = None) -> str:
    """``GSOFT (lean)``: the method's name and, for ours, the adapter path it ran."""
    name, explicit = _split(method)
    path = explicit or path
    return LABELS.get(name, name) + (f" ({path})" if path else "")


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Peak memory of a training step, each method in its own process (CPU)", "",
             f"Base `{meta['base']}` dequantized to fp32, all 7 linears of all 30 blocks adapted (ours b=8, BOFT "
             f"m=2; LoRA r=4); one fixed batch of {meta['batch']} x {meta['tokens']} tokens, one thread, torch "
             f"{meta['torch']}; {meta['repeats']} fresh processes per method, interleaved. Peak = VmHWM during "
             "the step(s) (high-water mark reset by /proc/self/clear_refs) minus VmRSS just before (after gc and "
             "malloc_trim). First step: also creates AdamW's state and pages in kernel code. Steady: the next "
             f"{meta['steps']} steps, from a baseline that holds the gradients and AdamW state.",
             f"Command: `{meta['command']}`", "",
             "| method | trainable | steady step peak MiB (each run) | median | first step peak MiB (median) | "
             "baseline RSS MiB (median) | s/step (median) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    for m, rs in by.items():
        # The upper median: a value one of the runs measured.
        med = {k: statistics.median_high([r[k] for r in rs])
               for k in ("step_peak_mib", "first_step_peak_mib", "baseline_mib", "seconds_per_step")}
        lines.append(f"| {label(m, rs[0].get('adapter_path'))} | {rs[0]['trainable']} | "
                     f"{', '.join(str(r['step_peak_mib']) for r in rs)} | {med['step_peak_mib']} | "
                     f"{med['first_step_peak_mib']} | {med['baseline_mib']} | {med['seconds_per_step']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="one method's training-step peak memory (one process)")
    ap.add_argument("--base", required=True)
    ap.add_argument("--method", default="gsoft")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--saved", default=None, help="comma-separated methods: write memory-saved.{json,md} "
                                                   "(bytes autograd keeps for backward) into --out instead")
    ap.add_argument("--out", default="train/results/llm")
    a = ap.parse_args(argv)
    if a.saved:
        res = saved_for_backward(a.base, a.saved.split(","), a.batch, a.tokens)
        cmd = "python -m riffle_train.llm_memory " + " ".join(argv if argv is not None else sys.argv[1:])
        out = Path(a.out)
        (out / "memory-saved.json").write_text(json.dumps({"batch": a.batch, "tokens": a.tokens, "command": cmd,
                                                           "methods": res}, indent=1) + "\n")
        lines = ["# Tensors kept for the backward pass, per method", "",
                 f"One forward of the answer loss on the Q4_1 base (fp32), all 7 linears of all 30 blocks adapted, "
                 f"one fixed batch of {a.batch} x {a.tokens} tokens: every tensor autograd saves "
                 "(`torch.autograd.graph.saved_tensors_hooks`), counted once per storage, leaving out "
                 "parameters (the base's weights, the adapter's or LoRA's parameters).", f"Command: `{cmd}`", "",
                 "| method | saved for backward MiB | saved tensors |", "|---|---:|---:|"]
        lines += [f"| {label(m, r['adapter_path'])} | {r['saved_mib']} | {r['saved_tensors']} |" for m, r in res.items()]
        (out / "memory-saved.md").write_text("\n".join(lines) + "\n")
        print(json.dumps(res))
        return 0
    print(json.dumps(measure_one(a.base, a.method, a.batch, a.tokens, a.steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
