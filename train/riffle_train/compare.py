"""Per-task method comparison: GSOFT, Double GSOFT, OFT, BOFT (ours) against PEFT LoRA.

For every task all methods train on the same split, from the same seed, with the same
optimiser, schedule, batch size, step count and target layers; only the adapter differs.
Reported per method: trainable parameters, adapter file bytes, held-out accuracy, training
time (the optimisation loop only, wall clock on this machine).

* Ours: the adapter is exported as a riffle GGUF file (parameters F32, the head F32) and the
  accuracy is measured on the base reloaded with that file (``digits.adapted_model_from_gguf``
  / ``minilm.apply_text_adapter``), exactly as the runtime would see it.
* LoRA: PEFT ``LoraConfig`` injected into the same torch model (``get_peft_model``); its bytes
  are the size of the ``adapter_model.safetensors`` that PEFT's ``save_pretrained`` writes
  (F32, the head included through ``modules_to_save``); accuracy of the trained model in memory.

Digits tasks run on a committed base (``models/digits/mlp.gguf``); MiniLM tasks on the F32 base
GGUF, with the lower blocks frozen and cached as in ``minilm.train_text_adapter``. PEFT is
imported only for the LoRA rows: run under ``train/peft-env``.

    $PP -m riffle_train compare --tasks rotated,inverted,noisy,parity,sentiment,topic,language \
        --out train/results/compare
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import gguf_io
from .gguf_io import U32
from .layers import AdapterConfig, adapter_tensors, inject, trainable_parameters
from .trainer import accuracy, fit, seed_everything

DIGITS_TASKS = ("rotated", "inverted", "noisy", "parity")
TEXT_TASKS = ("sentiment", "topic", "language")
METHODS = ("gsoft", "double_gsoft", "oft", "boft", "lora")
# "head": the reference row of tasks with a new head (parity, text): the head alone on the frozen base
EXTRA_METHODS = ("head",)


@dataclass(frozen=True)
class MethodSpec:
    """One row of a table. ``block_size``/``factors`` for ours, ``rank``/``alpha`` for LoRA."""
    method: str
    block_size: int = 8
    factors: int | None = None
    rank: int = 4
    alpha: int = 8

    @property
    def ours(self) -> bool:
        return self.method not in ("lora", "head")

    def label(self) -> str:
        if self.method == "head":
            return "head only (frozen base)"
        if self.method == "lora":
            return f"PEFT LoRA r={self.rank} alpha={self.alpha}"
        cfg = AdapterConfig(self.method, self.block_size, self.factors)
        return f"{self.method} b={self.block_size} m={cfg.factor_count}"


def method_specs(methods, block_size: int = 8, boft_block_size: int = 8, boft_factors: int = 2,
                 lora_rank: int = 4, lora_alpha: int = 8) -> list[MethodSpec]:
    out = []
    for m in methods:
        if m == "lora":
            out.append(MethodSpec("lora", rank=lora_rank, alpha=lora_alpha))
        elif m == "head":
            out.append(MethodSpec("head"))
        elif m == "boft":
            out.append(MethodSpec("boft", boft_block_size, boft_factors))
        elif m in ("gsoft", "double_gsoft", "oft"):
            out.append(MethodSpec(m, block_size))
        else:
            raise ValueError(f"unknown method {m!r} (choose from {', '.join(METHODS + EXTRA_METHODS)})")
    return out


# --------------------------------------------------------------------------- adapters


def apply_method(model: nn.Module, spec: MethodSpec, targets: list[str], heads: list[str]):
    """Wrap ``targets`` in place; return the PEFT model for LoRA (else None). Only the adapter
    parameters and ``heads`` are trainable afterwards ("head": only ``heads``)."""
    if spec.method == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        for h in heads:
            for p in model.get_submodule(h).parameters():
                p.requires_grad_(True)
        return None
    if spec.ours:
        inject(model, targets, method=spec.method, block_size=spec.block_size, factors=spec.factors,
               scale=True, modules_to_save=heads or None)
        return None
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, bias="none",
                     target_modules=targets, modules_to_save=heads or None)
    return get_peft_model(model, cfg)


def ours_kv(spec: MethodSpec, arch_name: str, base_id: str, task: str, labels: list[str] | None) -> dict:
    cfg = AdapterConfig(spec.method, spec.block_size, spec.factors)
    kv = {"general.type": "adapter",
          "general.name": f"riffle compare {arch_name} {task} ({spec.method}, b={spec.block_size})",
          "adapter.type": "orthogonal", "adapter.orthogonal.method": spec.method,
          "adapter.orthogonal.block_size": U32(spec.block_size),
          "adapter.orthogonal.permutation": cfg.permutation,
          "adapter.orthogonal.factor_count": U32(cfg.factor_count),
          "adapter.base_model_id": base_id, "adapter.task_name": task}
    if labels is not None:
        kv["adapter.labels"] = labels
    return kv


def lora_bytes(peft_model, folder: Path) -> int:
    """Size of the adapter_model.safetensors PEFT writes (F32; modules_to_save included)."""
    peft_model.save_pretrained(str(folder))
    return (folder / "adapter_model.safetensors").stat().st_size


# --------------------------------------------------------------------------- digits


@dataclass
class DigitsBudget:
    epochs: dict
    batch_size: int = 64
    lr: float = 1e-2
    seed: int = 1
    threads: int = 1


DIGITS_EPOCHS = {"rotated": 60, "inverted": 60, "noisy": 30, "parity": 60}  # as models/digits


def compare_digits(task: str, specs: list[MethodSpec], base_path: str | Path, work: Path,
                   budget: DigitsBudget | None = None, log=print) -> dict:
    from . import digits

    budget = budget or DigitsBudget(dict(DIGITS_EPOCHS))
    torch.set_num_threads(budget.threads)
    base_path = Path(base_path)
    xtr, ytr, xte, yte = (torch.from_numpy(np.asarray(a)) for a in digits.task_data(task))
    probe, bkv = digits.model_from_gguf(base_path)
    n_layers = len(probe.layers)
    # every hidden layer; not the 10-way output layer (Double GSOFT's output side needs b | 10);
    # parity replaces it by a new 2-way head
    heads = [f"layers.{n_layers - 1}"] if task == "parity" else []
    targets = [f"layers.{i}" for i in range(n_layers - 1)]
    labels = digits.task_labels(task) if heads else None
    if heads:
        with torch.no_grad():
            base_acc = float(((probe(xte).argmax(-1) % 2) == yte).float().mean())
    else:
        base_acc = accuracy(probe, xte, yte)
    epochs = budget.epochs[task]
    rows = []
    for spec in specs:
        if spec.method == "head" and not heads:
            continue  # no new head on this task: nothing to train
        model, _ = digits.model_from_gguf(base_path)
        seed_everything(budget.seed)
        if heads:
            digits.replace_head(model, heads[0], len(labels), budget.seed)
        seed_everything(budget.seed)
        peft_model = apply_method(model, spec, targets, heads)
        ntrain = trainable_parameters(model)
        res = fit(model, xtr, ytr, epochs=epochs, batch_size=budget.batch_size, lr=budget.lr,
                  seed=budget.seed, device=torch.device("cpu"))
        acc_mem = accuracy(model, xte, yte)
        if spec.ours:
            path = work / f"{task}-{spec.method}.gguf"
            facts = gguf_io.write_gguf(path, bkv["general.architecture"],
                                       ours_kv(spec, "digits", bkv["riffle.model_id"], task, labels),
                                       adapter_tensors(model, heads), id_key="crc")
            nbytes, fmt = facts["bytes"], "riffle GGUF, F32"
            loaded, _ = digits.adapted_model_from_gguf(base_path, path)
            acc = accuracy(loaded, xte, yte)
        elif spec.method == "lora":
            nbytes, fmt = lora_bytes(peft_model, work / f"{task}-lora"), "PEFT safetensors, F32"
            acc = acc_mem
        else:
            nbytes, fmt, acc = None, "no adapter file", acc_mem
        row = {"method": spec.method, "label": spec.label(), "trainable": ntrain, "bytes": nbytes,
               "format": fmt, "accuracy": acc, "accuracy_in_memory": acc_mem,
               "train_seconds": round(res.seconds, 2), "steps": res.steps,
               "final_loss": round(res.losses[-1], 4)}
        rows.append(row)
        log(f"[{task}] {row['label']}: {ntrain} trainable, {nbytes} B, held-out {acc:.4f}, "
            f"{res.seconds:.1f}s ({res.steps} steps)", flush=True)
    return {"task": task, "kind": "digits", "base": str(base_path), "base_accuracy": base_acc,
            "targets": targets, "heads": heads, "train_examples": int(len(ytr)),
            "heldout_examples": int(len(yte)),
            "budget": {"epochs": epochs, "batch_size": budget.batch_size, "lr": budget.lr,
                       "optimiser": "Adam, cosine annealing over the epochs", "seed": budget.seed,
                       "threads": budget.threads},
            "rows": rows}


# --------------------------------------------------------------------------- MiniLM


@dataclass
class TextBudget:
    train_cap: int = 1500
    test_cap: int = 500
    max_length: int = 64
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-3
    adapt_layers: int = 2
    seed: int = 0
    threads: int = 1


def _train_text(enc, tr, split: int, budget: TextBudget) -> tuple[float, int]:
    from .minilm import top_logits

    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=budget.lr)
    steps = budget.epochs * len(tr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=budget.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(budget.seed)
    t1 = time.perf_counter()
    done = 0
    for _ in range(budget.epochs):
        enc.train()
        for bi in torch.randperm(len(tr), generator=gen).tolist():
            h, m, y = tr[bi]
            loss = F.cross_entropy(top_logits(enc, h, m, split), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
    enc.eval()
    return time.perf_counter() - t1, done


def compare_text(task_name: str, specs: list[MethodSpec], base_path: str | Path, work: Path,
                 budget: TextBudget | None = None, log=print) -> dict:
    from . import minilm

    budget = budget or TextBudget()
    torch.set_num_threads(budget.threads)
    base_path = Path(base_path)
    task = replace(minilm.TEXT_TASKS[task_name], train_cap=budget.train_cap, test_cap=budget.test_cap,
                   max_length=budget.max_length, epochs=budget.epochs, lr=budget.lr)
    enc, bkv = minilm.encoder_from_gguf(base_path)
    for p in enc.parameters():
        p.requires_grad_(False)
    (xtr, ytr), (xte, yte), labels = minilm.task_split(task, budget.seed)
    tok = minilm.tokenizer(max_length=budget.max_length)
    nl = len(enc.blk)
    split = nl - budget.adapt_layers
    t0 = time.perf_counter()
    tr = minilm.cache_lower(enc, minilm.batches_by_length(minilm.encode(tok, xtr), ytr, budget.batch_size), split)
    te = minilm.cache_lower(enc, minilm.batches_by_length(minilm.encode(tok, xte), yte, 64), split)
    t_cache = time.perf_counter() - t0
    log(f"[{task_name}] {len(ytr)} train / {len(yte)} held-out, lower {split} blocks cached in {t_cache:.1f}s",
        flush=True)
    targets = [f"blk.{i}.{w}" for i in range(split, nl) for w in minilm.LAYER_WEIGHTS]
    d = enc.token_embd.weight.shape[1]
    rows = []
    for spec in specs:
        e = copy.deepcopy(enc)
        seed_everything(budget.seed)
        e.cls = nn.Linear(d, len(labels))
        seed_everything(budget.seed)
        peft_model = apply_method(e, spec, targets, ["cls"])
        ntrain = trainable_parameters(e)
        secs, steps = _train_text(e, tr, split, budget)
        acc_mem = minilm.evaluate(e, te, split)
        if spec.ours:
            path = work / f"{task_name}-{spec.method}.gguf"
            kv = ours_kv(spec, "all-MiniLM-L6-v2", bkv["riffle.model_id"], task_name, labels)
            facts = gguf_io.write_gguf(path, "bert", kv, adapter_tensors(e, ["cls"]), id_key="crc")
            nbytes, fmt = facts["bytes"], "riffle GGUF, F32"
            e2, _ = minilm.encoder_from_gguf(base_path)
            minilm.apply_text_adapter(e2, path)
            acc = minilm.evaluate(e2, te, split)
        elif spec.method == "lora":
            nbytes, fmt = lora_bytes(peft_model, work / f"{task_name}-lora"), "PEFT safetensors, F32"
            acc = acc_mem
        else:
            nbytes, fmt, acc = None, "no adapter file", acc_mem
        row = {"method": spec.method, "label": spec.label(), "trainable": ntrain, "bytes": nbytes,
               "format": fmt, "accuracy": acc, "accuracy_in_memory": acc_mem, "train_seconds": round(secs, 1),
               "steps": steps}
        rows.append(row)
        log(f"[{task_name}] {row['label']}: {ntrain} trainable, {nbytes} B, held-out {acc:.4f}, "
            f"{secs:.1f}s ({steps} steps)", flush=True)
        del e
    return {"task": task_name, "kind": "minilm", "base": str(base_path), "labels": labels,
            "targets": f"the six linear layers of blocks {split}-{nl - 1}", "heads": ["cls"],
            "train_examples": len(ytr), "heldout_examples": len(yte), "cache_seconds": round(t_cache, 1),
            "budget": dict(asdict(budget), optimiser="Adam, one-cycle (10% warm-up)"),
            "rows": rows}


# --------------------------------------------------------------------------- tables


def _pct(a):
    return f"{100 * a:.1f}%"


def markdown(results: list[dict], command: str | None = None) -> str:
    L = []
    if command:
        L += [f"Produced by `{command}`.", ""]
    for r in results:
        b = r["budget"]
        if r["kind"] == "digits":
            head = f" + new head {', '.join(r['heads'])}" if r["heads"] else ""
            L += [f"### {r['task']} (digits MLP)", "",
                  f"Base `{Path(r['base']).name}`, frozen; adapted: {', '.join(r['targets'])}{head}. "
                  f"{r['train_examples']} train / {r['heldout_examples']} held-out examples; "
                  f"{b['epochs']} epochs, batch {b['batch_size']}, lr {b['lr']}, {b['optimiser']}, "
                  f"seed {b['seed']}, {b['threads']} thread. Frozen base on this task: {_pct(r['base_accuracy'])}"
                  + (" (digit prediction mod 2)" if r["heads"] else "") + ".", ""]
        else:
            L += [f"### {r['task']} (all-MiniLM-L6-v2)", "",
                  f"Adapted: {r['targets']} + new head `cls` ({len(r['labels'])} labels). "
                  f"{r['train_examples']} train / {r['heldout_examples']} held-out examples (stratified, "
                  f"seed {b['seed']}), at most {b['max_length']} tokens, {b['epochs']} epochs, batch "
                  f"{b['batch_size']}, lr {b['lr']}, {b['optimiser']}, {b['threads']} thread; lower "
                  f"blocks cached once ({r['cache_seconds']} s, shared by all rows).", ""]
        L += ["| method | trainable params | adapter bytes | held-out accuracy | train time | steps |",
              "|---|---|---|---|---|---|"]
        for row in r["rows"]:
            nb = "-" if row["bytes"] is None else f"{row['bytes']:,} ({row['format']})"
            L.append(f"| {row['label']} | {row['trainable']:,} | {nb} | "
                     f"{_pct(row['accuracy'])} | {row['train_seconds']} s | {row['steps']} |")
        L.append("")
    return "\n".join(L)


def run(tasks: list[str], out: str | Path, methods=METHODS, digits_base: str | Path = "models/digits/mlp.gguf",
        minilm_base: str | Path = "models/minilm/minilm-f32.gguf", text_budget: TextBudget | None = None,
        digits_budget: DigitsBudget | None = None, spec_kw: dict | None = None, command: str | None = None,
        log=print) -> list[dict]:
    specs = method_specs(methods, **(spec_kw or {}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "device": "cpu"}
    try:
        import peft
        import transformers
        env.update(peft=peft.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for t in tasks:
            try:
                load = os.getloadavg()[0]
            except OSError:
                load = None
            if t in DIGITS_TASKS:
                r = compare_digits(t, specs, digits_base, work, digits_budget, log=log)
            elif t in TEXT_TASKS:
                r = compare_text(t, specs, minilm_base, work, text_budget, log=log)
            else:
                raise ValueError(f"unknown task {t!r} (digits: {', '.join(DIGITS_TASKS)}; "
                                 f"text: {', '.join(TEXT_TASKS)})")
            r["load_average_before"] = load
            results.append(r)
            # written after every task so a long run leaves what it has measured
            (out / "compare.json").write_text(json.dumps({"env": env, "command": command, "tasks": results},
                                                         indent=1) + "\n")
            (out / "compare.md").write_text(markdown(results, command))
    return results
