"""Digits (scikit-learn 8x8): base MLP and CNN, four adapter tasks, GGUF export.

Everything is seeded; ``build_all(out_dir)`` rebuilds every file of ``models/digits/``.
Accuracies are measured after export, on models reloaded from the written GGUF files
(so f16 adapters are evaluated with their stored, rounded parameters).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import gguf_io
from .gguf_io import U32
from . import layers
from .layers import AdapterConfig, inject, trainable_parameters
from .trainer import accuracy, fit, seed_everything

SPLIT_SEED = 0
TEST_SIZE = 0.25
NOISE_SIGMA = 0.3
NOISY_TRAIN_COPIES = 5  # noisy task: the train split is seen with 5 independent noise draws
DIGIT_LABELS = [str(i) for i in range(10)]
PARITY_LABELS = ["even", "odd"]
TASKS = ("digits", "rotated", "inverted", "noisy", "parity")
INPUT_KIND = "digits8x8"


# --------------------------------------------------------------------------- data


def load_split():
    """(x_train, y_train, x_test, y_test): pixel/16 in [0, 1], rows of 64 (row-major)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.reshape(len(d.images), 64) / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return xtr, ytr, xte, yte


def transform(task: str, x: np.ndarray, y: np.ndarray, noise_seed: int):
    """Apply a task's input transform and label map. ``x`` is (N, 64) float32."""
    if task in ("digits", "parity"):
        xo = x.copy()
    elif task == "rotated":  # 90 degrees clockwise
        xo = np.rot90(x.reshape(-1, 8, 8), k=-1, axes=(1, 2)).reshape(-1, 64)
    elif task == "inverted":
        xo = 1.0 - x
    elif task == "noisy":
        rng = np.random.default_rng(noise_seed)
        xo = np.clip(x + rng.normal(0.0, NOISE_SIGMA, size=x.shape), 0.0, 1.0)
    else:
        raise ValueError(task)
    yo = y % 2 if task == "parity" else y.copy()
    return np.ascontiguousarray(xo, dtype=np.float32), yo.astype(np.int64)


def task_labels(task: str) -> list[str]:
    return PARITY_LABELS if task == "parity" else DIGIT_LABELS


def task_data(task: str):
    """(x_train, y_train, x_test, y_test) of a task. Noisy: the train split is repeated
    with noise seeds 100..104; the held-out set uses seed 2."""
    xtr, ytr, xte, yte = load_split()
    if task == "noisy":
        parts = [transform(task, xtr, ytr, noise_seed=100 + c) for c in range(NOISY_TRAIN_COPIES)]
        a = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    else:
        a = transform(task, xtr, ytr, noise_seed=1)
    b = transform(task, xte, yte, noise_seed=2)
    return a + b


# --------------------------------------------------------------------------- models


class MLP(nn.Module):
    """format.md's ``mlp``: ``layers.{i}``, ReLU between, logits out."""

    def __init__(self, sizes=(64, 64, 64, 10)):
        super().__init__()
        self.sizes = tuple(sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x


class CNN(nn.Module):
    """docs/models.md's ``cnn``: conv (same padding) -> ReLU -> 2x2 max pool, flatten
    (channel, row, col), dense layers with ReLU between."""

    def __init__(self, channels=(1, 8, 16), kernel=3, dense=(64, 32, 10), hw=(8, 8)):
        super().__init__()
        self.hw = hw
        self.conv = nn.ModuleList(nn.Conv2d(a, b, kernel, padding=(kernel - 1) // 2)
                                  for a, b in zip(channels[:-1], channels[1:]))
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dense[:-1], dense[1:]))
        self.in_channels = channels[0]

    def forward(self, x):
        x = x.reshape(-1, self.in_channels, *self.hw)
        for c in self.conv:
            x = F.max_pool2d(F.relu(c(x)), 2)
        x = x.flatten(1)
        for i, d in enumerate(self.dense):
            x = d(x)
            if i + 1 < len(self.dense):
                x = F.relu(x)
        return x


def base_tensors(model: nn.Module) -> list[tuple[str, np.ndarray]]:
    return [(k, v.detach().cpu().numpy().astype(np.float32)) for k, v in model.state_dict().items()]


def base_kv(arch: str, model: nn.Module, name: str) -> dict:
    kv = {"general.type": "model", "general.name": name, "riffle.labels": DIGIT_LABELS}
    if arch == "mlp":
        kv.update({"mlp.layer_count": U32(len(model.layers)), "mlp.activation": "relu",
                   "mlp.input_length": U32(model.layers[0].in_features)})
    else:
        kv.update({"cnn.input_channels": U32(model.in_channels), "cnn.input_height": U32(model.hw[0]),
                   "cnn.input_width": U32(model.hw[1]), "cnn.conv_count": U32(len(model.conv)),
                   "cnn.dense_count": U32(len(model.dense))})
    return kv


def model_from_gguf(path: str | Path) -> tuple[nn.Module, dict]:
    kv, t, _ = gguf_io.read_tensors(path, widen=False)
    arch = kv["general.architecture"]
    if arch == "mlp":
        L = kv["mlp.layer_count"]
        sizes = [t["layers.0.weight"].shape[1]] + [t[f"layers.{i}.weight"].shape[0] for i in range(L)]
        model = MLP(sizes)
    elif arch == "cnn":
        cc, dc = kv["cnn.conv_count"], kv["cnn.dense_count"]
        chans = [kv["cnn.input_channels"]] + [t[f"conv.{i}.weight"].shape[0] for i in range(cc)]
        dense = [t["dense.0.weight"].shape[1]] + [t[f"dense.{i}.weight"].shape[0] for i in range(dc)]
        model = CNN(chans, t["conv.0.weight"].shape[2], dense, (kv["cnn.input_height"], kv["cnn.input_width"]))
    else:
        raise ValueError(arch)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in t.items()})
    model.eval()
    return model, kv


# --------------------------------------------------------------------------- adapters


@dataclass
class AdapterSpec:
    arch: str
    task: str
    method: str
    block_size: int
    targets: list[str]
    factors: int | None = None
    scale: bool = True
    dtype: str = "f32"  # storage type of the orthogonal parameters and scale
    head: str | None = None  # module replaced by a new head (parity)
    lr: float = 1e-2
    epochs: int = 60

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.task}"


ADAPTERS = [
    AdapterSpec("mlp", "rotated", "gsoft", 8, ["layers.0", "layers.1", "layers.2"], dtype="f32"),
    AdapterSpec("mlp", "inverted", "double_gsoft", 8, ["layers.0", "layers.1"], dtype="f16"),
    AdapterSpec("mlp", "noisy", "oft", 8, ["layers.0", "layers.1", "layers.2"], dtype="f16", epochs=30),
    AdapterSpec("mlp", "parity", "boft", 4, ["layers.0", "layers.1"], factors=2, scale=False,
                dtype="f32", head="layers.2"),
    AdapterSpec("cnn", "rotated", "gsoft", 8, ["conv.1", "dense.0", "dense.1"], dtype="f16"),
    AdapterSpec("cnn", "inverted", "boft", 4, ["conv.1", "dense.0", "dense.1"], factors=2, dtype="f32"),
    AdapterSpec("cnn", "noisy", "double_gsoft", 8, ["conv.1", "dense.0"], dtype="f32", epochs=30),
    AdapterSpec("cnn", "parity", "oft", 4, ["conv.1", "dense.0"], dtype="f16", head="dense.1"),
]


def replace_head(model: nn.Module, name: str, n_labels: int, seed: int) -> None:
    old = model.get_submodule(name)
    torch.manual_seed(seed)
    new = nn.Linear(old.in_features, n_labels)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def apply_adapter_spec(model: nn.Module, spec: AdapterSpec, labels: list[str], seed: int = 0) -> nn.Module:
    if spec.head:
        replace_head(model, spec.head, len(labels), seed)
    inject(model, spec.targets, method=spec.method, block_size=spec.block_size, factors=spec.factors,
           scale=spec.scale, modules_to_save=[spec.head] if spec.head else None)
    return model


def adapter_tensors(model: nn.Module, spec: AdapterSpec) -> list[tuple[str, np.ndarray]]:
    return layers.adapter_tensors(model, [spec.head] if spec.head else [],
                                  np.float16 if spec.dtype == "f16" else np.float32)


def adapter_kv(spec: AdapterSpec, base_id: str, labels: list[str] | None) -> dict:
    cfg = AdapterConfig(spec.method, spec.block_size, spec.factors, spec.scale)
    kv = {
        "general.type": "adapter",
        "general.name": f"riffle digits {spec.name} ({spec.method}, b={spec.block_size})",
        "adapter.type": "orthogonal",
        "adapter.orthogonal.method": spec.method,
        "adapter.orthogonal.block_size": U32(spec.block_size),
        "adapter.orthogonal.permutation": cfg.permutation,
        "adapter.orthogonal.factor_count": U32(cfg.factor_count),
        "adapter.base_model_id": base_id,
        "adapter.task_name": spec.task,
    }
    if labels is not None:
        kv["adapter.labels"] = labels
    return kv


def adapted_model_from_gguf(base_path, adapter_path) -> tuple[nn.Module, dict]:
    """Base + adapter (unmerged) rebuilt from GGUF files; f16 parameters widened."""
    model, bkv = model_from_gguf(base_path)
    kv, t, _ = gguf_io.read_tensors(adapter_path, widen=False)
    if kv["adapter.base_model_id"] != bkv["riffle.model_id"]:
        raise ValueError("adapter.base_model_id does not match the base")
    method, b = kv["adapter.orthogonal.method"], kv["adapter.orthogonal.block_size"]
    m = kv["adapter.orthogonal.factor_count"]
    targets = sorted({n.split(".weight.oft_")[0] for n in t if ".weight.oft_" in n})
    has_scale = any(n.endswith(".oft_scale") for n in t)
    heads = sorted({n.rsplit(".", 1)[0] for n in t if ".oft_" not in n})
    labels = kv.get("adapter.labels")
    for h in heads:
        replace_head(model, h, t[f"{h}.weight"].shape[0], 0)
    inject(model, targets, method=method, block_size=b, factors=m, scale=has_scale,
           modules_to_save=heads)
    sd = {}
    for n, v in t.items():
        v = torch.from_numpy(np.asarray(v, np.float32))
        if ".oft_in." in n or ".oft_out." in n:
            w, side, f = n.rsplit(".", 2)
            sd[f"{w[:-len('.weight')]}.{side}.params.{f}"] = v
        elif n.endswith(".oft_scale"):
            sd[f"{n[:-len('.weight.oft_scale')]}.oft_scale"] = v
        else:
            sd[n] = v
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(f"unexpected tensors {unexpected}")
    model.eval()
    return model, kv


# --------------------------------------------------------------------------- build


@dataclass
class BuildReport:
    rows: list[dict] = field(default_factory=list)
    bases: dict = field(default_factory=dict)


def _t(a):
    return torch.from_numpy(np.asarray(a))


def train_base(arch: str, seed: int = 0, log=print):
    seed_everything(seed)
    xtr, ytr, xte, yte = task_data("digits")
    model = MLP() if arch == "mlp" else CNN()
    res = fit(model, _t(xtr), _t(ytr), epochs=80, batch_size=64, lr=3e-3, weight_decay=1e-4,
              seed=seed, device=torch.device("cpu"))
    acc = accuracy(model, _t(xte), _t(yte))
    log(f"[{arch}] base trained in {res.seconds:.1f}s, final loss {res.losses[-1]:.4f}, held-out {acc:.4f}")
    return model


def build_all(out_dir: str | Path, log=print) -> BuildReport:
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = BuildReport()
    data = {t: task_data(t) for t in TASKS}

    for task in TASKS:
        _, _, xte, yte = data[task]
        labels = np.asarray(yte, np.int32)
        facts = gguf_io.write_gguf(out / f"heldout-{task}.gguf", INPUT_KIND, {
            "general.type": "dataset", "general.name": f"digits 8x8 held-out, task {task}",
            "dataset.task_name": task, "dataset.labels": task_labels(task),
            "dataset.split_seed": U32(SPLIT_SEED),
            "dataset.description": DATASET_DESCRIPTIONS[task],
        }, [("inputs", xte.astype(np.float32)), ("labels", labels)], id_key="crc")
        log(f"heldout-{task}.gguf: {len(yte)} examples, {facts['bytes']} bytes")

    for arch in ("mlp", "cnn"):
        model = train_base(arch, seed=0, log=log)
        facts = gguf_io.write_gguf(out / f"{arch}.gguf", arch,
                                   base_kv(arch, model, f"riffle digits {arch}"),
                                   base_tensors(model), id_key="model_id")
        reloaded, kv = model_from_gguf(out / f"{arch}.gguf")
        accs = {t: accuracy(reloaded, _t(data[t][2]), _t(data[t][3])) for t in TASKS if t != "parity"}
        rep.bases[arch] = {"file": f"{arch}.gguf", "bytes": facts["bytes"], "model_id": facts["model_id"],
                           "params": sum(p.numel() for p in model.parameters()), "accuracy": accs}
        log(f"{arch}.gguf: {facts['bytes']} bytes, id {facts['model_id'][:16]}..., accuracy {accs}")

    for spec in ADAPTERS:
        base_path = out / f"{spec.arch}.gguf"
        model, bkv = model_from_gguf(base_path)
        xtr, ytr, xte, yte = data[spec.task]
        if spec.head:  # parity: the base's digit prediction taken mod 2
            with torch.no_grad():
                base_acc = float(((model(_t(xte)).argmax(-1) % 2) == _t(yte)).float().mean())
        else:
            base_acc = accuracy(model, _t(xte), _t(yte))
        labels = task_labels(spec.task) if spec.head else None
        seed_everything(1)
        apply_adapter_spec(model, spec, task_labels(spec.task), seed=1)
        ntrain = trainable_parameters(model)
        res = fit(model, _t(xtr), _t(ytr), epochs=spec.epochs, batch_size=64, lr=spec.lr, seed=1,
                  device=torch.device("cpu"))
        train_acc = accuracy(model, _t(xte), _t(yte))
        facts = gguf_io.write_gguf(out / f"{spec.name}.gguf", spec.arch,
                                   adapter_kv(spec, bkv["riffle.model_id"], labels),
                                   adapter_tensors(model, spec), id_key="crc")
        loaded, _ = adapted_model_from_gguf(base_path, out / f"{spec.name}.gguf")
        acc = accuracy(loaded, _t(xte), _t(yte))
        cfg = AdapterConfig(spec.method, spec.block_size, spec.factors, spec.scale)
        row = {"file": f"{spec.name}.gguf", "arch": spec.arch, "task": spec.task, "method": spec.method,
               "b": spec.block_size, "m": cfg.factor_count, "permutation": cfg.permutation,
               "dtype": spec.dtype.upper(), "scale": spec.scale, "targets": spec.targets,
               "head": spec.head, "params": ntrain, "bytes": facts["bytes"],
               "base_acc": base_acc, "adapter_acc": acc, "adapter_acc_f32_training": train_acc,
               "final_loss": round(res.losses[-1], 4)}
        rep.rows.append(row)
        log(f"{spec.name}.gguf: {spec.method} b={spec.block_size} m={cfg.factor_count} "
            f"{spec.dtype} params={ntrain} bytes={facts['bytes']} base={base_acc} adapter={acc:.4f} "
            f"({res.seconds:.1f}s)")
    (out / "build-report.json").write_text(json.dumps(
        {"bases": rep.bases, "adapters": rep.rows, "torch": torch.__version__,
         "python": platform.python_version()}, indent=1) + "\n")
    write_readme(out, rep)
    return rep


DATASET_DESCRIPTIONS = {
    "digits": "scikit-learn load_digits, pixel/16, 25% stratified held-out split (seed 0)",
    "rotated": "images rotated 90 degrees clockwise, same labels",
    "inverted": "1 - x, same labels",
    "noisy": f"x + N(0, {NOISE_SIGMA}^2) noise, clipped to [0, 1] (numpy default_rng seed 2; the train split: {NOISY_TRAIN_COPIES} draws, seeds 100..)",
    "parity": "original images, labels 0 = even, 1 = odd",
}


def _fmt(a):
    return "-" if a is None else f"{100 * a:.1f}%"


def write_readme(out: Path, rep: BuildReport) -> None:
    L = ["# models/digits: 8x8 digits bases, adapters and held-out sets", "",
         "Produced by `riffle-train digits --out models/digits` (from the repository root:",
         "`$(scripts/python-env) -m riffle_train digits --out models/digits`). Seeds are fixed;",
         "accuracies are measured on models reloaded from these GGUF files (f16 adapters with",
         "their stored parameters). Formats: `docs/format.md`, `docs/models.md`.", "",
         "## Bases (F32)", "",
         "| file | architecture | parameters | bytes | digits | rotated | inverted | noisy |",
         "|---|---|---|---|---|---|---|---|"]
    for arch, b in rep.bases.items():
        a = b["accuracy"]
        L.append(f"| `{b['file']}` | `{arch}` | {b['params']} | {b['bytes']} | {_fmt(a['digits'])} | "
                 f"{_fmt(a['rotated'])} | {_fmt(a['inverted'])} | {_fmt(a['noisy'])} |")
    L += ["", "## Adapters", "",
          "`base` is the frozen base's held-out accuracy on the task (parity: the base's digit",
          "prediction taken mod 2; the adapter itself brings a new 2-way head); `adapter` is",
          "base + adapter, unmerged, reloaded from the file.", "",
          "| file | method | perm. | b | m | params | dtype | scale | targets | head | bytes | base | adapter |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep.rows:
        L.append(f"| `{r['file']}` | {r['method']} | {r['permutation']} | {r['b']} | {r['m']} | {r['params']} | "
                 f"{r['dtype']} | {'yes' if r['scale'] else 'no'} | {', '.join(r['targets'])} | "
                 f"{r['head'] or '-'} | {r['bytes']} | {_fmt(r['base_acc'])} | {_fmt(r['adapter_acc'])} |")
    L += ["", "`params` counts trainable parameters (packed skew parameters, scales, and the new",
          "head for parity).", "",
          "## Held-out sets", "",
          "`heldout-{digits,rotated,inverted,noisy,parity}.gguf`: `general.type = \"dataset\"`,",
          "`general.architecture = \"digits8x8\"`, tensors `inputs` F32 (N, 64) already transformed",
          "and `labels` I32 (N); 450 examples each (25% stratified split, seed 0).", "",
          "| task | transform |", "|---|---|"]
    for t in TASKS:
        L.append(f"| {t} | {DATASET_DESCRIPTIONS[t]} |")
    L.append("")
    (out / "README.md").write_text("\n".join(L))
