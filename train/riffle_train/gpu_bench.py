"""Training-step benchmark: riffle's GSOFT, Double GSOFT and OFT against PEFT LoRA, OFT and BOFT.

One training step = forward of a sequence classifier (transformers ``BertForSequenceClassification``
/ ``RobertaForSequenceClassification``, random init), cross-entropy on random labels, backward,
AdamW step on the trainable parameters. Every method adapts the same linear layers (query, key,
value, attention output, FFN up, FFN down of every block) and trains the same classification head
(``modules_to_save=["classifier"]``); the base stays frozen.

Encoders (random init; speed and memory do not depend on the values):

* ``minilm``: all-MiniLM-L6-v2's shape (BERT, 6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522);
* ``roberta-base``: ``transformers.RobertaConfig()`` defaults (12 layers, hidden 768, 12 heads,
  FFN 3072, vocab 50265), about 125M parameters.

Measured per method: median and mean step time over ``--steps`` timed steps after ``--warmup``
steps (each step synchronised on CUDA), and peak memory: ``torch.cuda.max_memory_allocated()``
over warm-up and timed steps, reset after the model is built and moved (so it counts the frozen
weights, the adapter, optimiser states, activations and temporaries). On CPU the peak memory is
not measured (reported as ``null`` / n/a): PyTorch's CPU allocator keeps no peak statistic and a
process's RSS high-water mark does not separate one method from the next.

Imports: torch, transformers, peft and ``riffle_train.layers`` (torch only), so it runs where only
PyTorch, peft and transformers are installed: from the repository root,
``PYTHONPATH=train python -m riffle_train gpu-bench``.

PEFT BOFT uses more than one butterfly factor only when its ``fbd_cuda`` extension compiles
(CUDA toolkit and ninja); otherwise PEFT itself falls back to one factor with a warning. The
factor count PEFT actually built is read back from the model and reported with each BOFT row.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

OURS = ("gsoft", "double_gsoft", "oft")
PEFT_METHODS = ("lora", "peft_oft", "peft_boft")
ALL_METHODS = OURS + PEFT_METHODS
MODELS = ("minilm", "roberta-base")
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000)


@dataclass
class BenchConfig:
    models: tuple = MODELS
    methods: tuple = ALL_METHODS
    batch: int = 32
    seq: int = 128
    steps: int = 10
    warmup: int = 3
    block_size: int = 8          # ours (gsoft, double_gsoft, oft) and PEFT OFT
    boft_block_size: int = 8
    boft_factors: int = 2
    lora_rank: int = 4
    lora_alpha: int = 8
    lr: float = 1e-4
    tiny: bool = False
    autocast: str | None = None  # "bf16" or "fp16"
    device: str | None = None
    seed: int = 0
    boft_cuda_ext: bool = True   # let PEFT try to compile fbd_cuda (False: PEFT's 1-factor fallback)
    threads: int | None = None
    weight_bank: bool | None = None  # ours: layers.WeightBank (None: inject's default, on for CUDA)
    memory_efficient: bool = False   # ours: the bank's memory-efficient linears


def make_model(name: str, tiny: bool):
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    extra = dict(TINY) if tiny else {}
    if name == "minilm":
        base = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512)
        base.update(extra)
        cfg = BertConfig(num_labels=2, **base)
        return BertForSequenceClassification(cfg), cfg
    if name == "roberta-base":
        cfg = RobertaConfig(num_labels=2, **extra)
        return RobertaForSequenceClassification(cfg), cfg
    raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")


def apply_method(model, method: str, c: BenchConfig):
    """Adapt ``model`` in place; returns the model to call (the PEFT wrapper for PEFT methods) and
    notes about what was built."""
    notes = {}
    if method in OURS:
        from .layers import inject

        inject(model, TARGETS, method=method, block_size=c.block_size, scale=True,
               modules_to_save=["classifier"], weight_bank=c.weight_bank, memory_efficient=c.memory_efficient)
        notes["weight_bank"] = model.riffle_adapter["bank"] is not None
        if c.memory_efficient:
            notes["memory_efficient"] = True
        return model, notes
    from peft import BOFTConfig, LoraConfig, OFTConfig, get_peft_model

    if method == "lora":
        pc = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=0.0, target_modules=TARGETS,
                        modules_to_save=["classifier"])
    elif method == "peft_oft":
        pc = OFTConfig(r=0, oft_block_size=c.block_size, target_modules=TARGETS, module_dropout=0.0,
                       modules_to_save=["classifier"])
        notes["use_cayley_neumann"] = pc.use_cayley_neumann
    elif method == "peft_boft":
        if not c.boft_cuda_ext:
            import peft.tuners.boft.layer as bl

            bl._FBD_CUDA = False  # PEFT's own "extension unavailable" state
        pc = BOFTConfig(boft_block_size=c.boft_block_size, boft_n_butterfly_factor=c.boft_factors,
                        boft_dropout=0.0, target_modules=TARGETS, modules_to_save=["classifier"])
    else:
        raise ValueError(f"unknown method {method!r} (choose from {', '.join(ALL_METHODS)})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = get_peft_model(model, pc)
    if method == "peft_boft":
        rs = [m.boft_R["default"] for m in pm.modules() if hasattr(m, "boft_R") and "default" in m.boft_R]
        notes["boft_factors_built"] = sorted({int(r.shape[0]) for r in rs})
        notes["fbd_cuda"] = any(getattr(m, "fbd_cuda_available", False) for m in pm.modules())
    msgs = sorted({str(w.message)[:160] for w in caught})
    if msgs:
        notes["warnings"] = msgs
    return pm, notes


def method_label(method: str, c: BenchConfig) -> str:
    return {"gsoft": f"riffle GSOFT b={c.block_size} m=2",
            "double_gsoft": f"riffle Double GSOFT b={c.block_size} m=2",
            "oft": f"riffle OFT b={c.block_size}",
            "lora": f"PEFT LoRA r={c.lora_rank}",
            "peft_oft": f"PEFT OFT b={c.block_size}",
            "peft_boft": f"PEFT BOFT b={c.boft_block_size} m={c.boft_factors}"}[method]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(model_name: str, method: str, c: BenchConfig, device: torch.device) -> dict:
    torch.manual_seed(c.seed)
    model, mcfg = make_model(model_name, c.tiny)
    total_params = sum(p.numel() for p in model.parameters())
    model.to(device)
    model, notes = apply_method(model, method, c)
    model.to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=c.lr)
    g = torch.Generator().manual_seed(c.seed)
    low = 5 if mcfg.vocab_size > 10 else 0
    ids = torch.randint(low, mcfg.vocab_size, (c.batch, c.seq), generator=g).to(device)
    mask = torch.ones(c.batch, c.seq, dtype=torch.long, device=device)
    labels = torch.randint(0, 2, (c.batch,), generator=g).to(device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[c.autocast]
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 and device.type == "cuda" else None

    def step() -> float:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return float(loss.detach())

    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(c.warmup):
        step()
    times = []
    loss = float("nan")
    for _ in range(c.steps):
        _sync(device)
        t = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    label = method_label(method, c)
    if notes.get("boft_factors_built", [c.boft_factors]) != [c.boft_factors]:
        label += f" (PEFT built m={','.join(map(str, notes['boft_factors_built']))})"
    row = {"model": model_name, "method": method, "label": label,
           "model_params": total_params, "trainable": n_train,
           "step_ms_median": round(1000 * statistics.median(times), 3),
           "step_ms_mean": round(1000 * statistics.fmean(times), 3),
           "peak_mem_bytes": peak, "loss": loss, "notes": notes}
    del model, opt, trainable
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def ratios(rows: list[dict]) -> dict:
    """Per model: GSOFT step time / LoRA's and / PEFT BOFT's, GSOFT peak memory / LoRA's (the issue's
    targets are at most 1.1, at most 1/3, at most 1)."""
    out = {}
    for m in sorted({r["model"] for r in rows}):
        by = {r["method"]: r for r in rows if r["model"] == m}
        g = by.get("gsoft")
        if not g:
            continue
        d = {}
        if "lora" in by:
            d["gsoft_over_lora_step"] = round(g["step_ms_median"] / by["lora"]["step_ms_median"], 3)
            if g["peak_mem_bytes"] and by["lora"]["peak_mem_bytes"]:
                d["gsoft_over_lora_peak_mem"] = round(g["peak_mem_bytes"] / by["lora"]["peak_mem_bytes"], 3)
        if "peft_boft" in by:
            d["gsoft_over_peft_boft_step"] = round(g["step_ms_median"] / by["peft_boft"]["step_ms_median"], 3)
        out[m] = d
    return out


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import peft
        import transformers

        env.update(peft=peft.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def run(c: BenchConfig, log=print) -> dict:
    if c.threads:
        torch.set_num_threads(c.threads)
    device = torch.device(c.device) if c.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for m in c.models:
        for meth in c.methods:
            r = bench_one(m, meth, c, device)
            rows.append(r)
            mem = "n/a" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.0f} MiB"
            notes = {k: v for k, v in r["notes"].items() if k != "warnings"}
            log(f"{m:12s} {r['label']:28s} trainable {r['trainable']:>11,}  step {r['step_ms_median']:9.2f} ms "
                f"(mean {r['step_ms_mean']:.2f})  peak {mem}" + (f"  {notes}" if notes else ""), flush=True)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.__dict__.items()}
    return {"env": environment(device), "config": cfg, "rows": rows, "ratios": ratios(rows)}


def markdown(res: dict, command: str | None = None) -> str:
    env, c = res["env"], res["config"]
    dev = env.get("gpu", "CPU") + f" ({env['device']})"
    L = []
    if command:
        L += [f"Produced by `{command}` on {dev}; torch {env['torch']}, peft {env.get('peft', '-')}, "
              f"transformers {env.get('transformers', '-')}.", ""]
    L += [f"Batch {c['batch']}, sequence {c['seq']}, {c['warmup']} warm-up + {c['steps']} timed steps, AdamW, "
          f"autocast {c['autocast'] or 'off (f32)'}{', tiny encoders' if c['tiny'] else ''}. Peak memory: "
          + ("`torch.cuda.max_memory_allocated`." if env["device"].startswith("cuda") else "not measured on CPU (n/a)."),
          "", "| encoder | method | trainable | step ms (median) | step ms (mean) | peak memory | notes |",
          "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        mem = "n/a" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:,.0f} MiB"
        notes = {k: v for k, v in r["notes"].items() if k != "warnings"}
        L.append(f"| {r['model']} | {r['label']} | {r['trainable']:,} | {r['step_ms_median']:.2f} | "
                 f"{r['step_ms_mean']:.2f} | {mem} | {json.dumps(notes) if notes else ''} |")
    L.append("")
    for m, d in res["ratios"].items():
        L.append(f"- {m}: " + ", ".join(f"{k} = {v}" for k, v in d.items()))
    L.append("")
    return "\n".join(L)


def write(res: dict, out: str | Path, command: str | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-bench.json").write_text(json.dumps(dict(res, command=command), indent=1) + "\n")
    (out / "gpu-bench.md").write_text(markdown(res, command))
