"""Golden files for the Rust tests, computed in float64 from the GGUF files as stored.

For each digits base and adapter: 8 held-out inputs (the first 8 rows of the task's
``heldout-*.gguf``), the base's logits and the base+adapter logits (unmerged formula),
plus, for one small adapted layer per method, the dense ``Q_in`` (and ``Q_out``) and the
merged weight ``diag(s) Q_out W Q_in``. Everything comes from ``reference.py`` (numpy,
float64) with f16 parameters widened exactly, never from the training run's values.
Also a few synthetic cases from gs-math.md's worked examples.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np

from . import gguf_io, reference
from .digits import ADAPTERS, NOISE_SIGMA, NOISY_TRAIN_COPIES, SPLIT_SEED, TEST_SIZE

N_EXAMPLES = 8
TOLERANCE = {
    "logits_abs": 1e-4,
    "q_abs": 1e-5,
    "merged_weight_abs": 1e-5,
    "note": "f32 runtime vs this float64 reference: logits within 1e-4 absolute; "
            "dense Q entries and merged weights within 1e-5 absolute (gs-math.md section 9).",
}

# one small adapted layer per method: (adapter file stem, weight tensor)
MATRIX_CASES = {
    "gsoft": ("cnn-rotated", "dense.1.weight"),
    "double_gsoft": ("cnn-noisy", "dense.0.weight"),
    "oft": ("cnn-parity", "dense.0.weight"),
    "boft": ("cnn-inverted", "dense.1.weight"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _list(a: np.ndarray):
    return np.asarray(a, np.float64).tolist()


def _load_adapter(path: Path):
    kv, t, types = gguf_io.read_tensors(path)  # f16/f32 widened to float64, exactly
    t["__meta__"] = {"permutation": kv["adapter.orthogonal.permutation"],
                     "block_size": kv["adapter.orthogonal.block_size"]}
    return kv, t, types


def _forward(arch: str, kv: dict, tensors, ops, x):
    if arch == "mlp":
        return reference.mlp_forward(x, tensors, ops, kv["mlp.layer_count"])
    return reference.cnn_forward(x, tensors, ops, kv["cnn.conv_count"], kv["cnn.dense_count"],
                                 kv["cnn.input_channels"], kv["cnn.input_height"], kv["cnn.input_width"])


def _heldout(models: Path, task: str):
    kv, t, _ = gguf_io.read_tensors(models / f"heldout-{task}.gguf", widen=False)
    return np.asarray(t["inputs"][:N_EXAMPLES], np.float32), np.asarray(t["labels"][:N_EXAMPLES]).tolist(), kv


def synthetic_cases() -> list[dict]:
    """gs-math.md worked examples plus a few random chains, float64."""
    rng = np.random.default_rng(1234)
    cases = [
        {"name": "gsoft_n4_b2_worked_example", "permutation": "gs", "n": 4, "b": 2,
         "factors": [[[0.5], [1 / 3]], [[1 / 3], [0.5]]], "x": [1.0, 2.0, 3.0, 4.0]},
        {"name": "oft_b3_cayley_example", "permutation": "none", "n": 3, "b": 3,
         "factors": [[[1.0, 2.0, 3.0]]], "x": [1.0, 0.0, 0.0]},
    ]
    for name, perm, n, b, m in (("gs_n24_b4_m3", "gs", 24, 4, 3), ("boft_n16_b4_m3", "butterfly", 16, 4, 3),
                                ("boft_n8_b2_m2", "butterfly", 8, 2, 2), ("gsoft_n12_b3_m2", "gs", 12, 3, 2)):
        k, P = n // b, b * (b - 1) // 2
        cases.append({"name": name, "permutation": perm, "n": n, "b": b,
                      "factors": [rng.normal(0, 0.5, (k, P)).round(6).tolist() for _ in range(m)],
                      "x": rng.normal(0, 1, n).round(6).tolist()})
    for c in cases:
        q = reference.chain_dense([np.array(f) for f in c["factors"]], c["permutation"], c["n"], c["b"])
        c["pi"] = [reference.factor_permutation(c["permutation"], c["n"], c["b"], len(c["factors"]), f)
                   for f in range(len(c["factors"]))]
        c["q"] = _list(q)
        c["qx"] = _list(q @ np.array(c["x"]))
        c["qtx"] = _list(q.T @ np.array(c["x"]))
    return cases


def write_golden(models_dir: str | Path = "models/digits", out_dir: str | Path = "tests/data/golden") -> list[Path]:
    models, out = Path(models_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    files_used = {}
    rel = lambda p: f"models/digits/{p.name}"  # noqa: E731  paths as seen from the repo root

    bases = {}
    for arch in ("mlp", "cnn"):
        p = models / f"{arch}.gguf"
        kv, t, _ = gguf_io.read_tensors(p)
        bases[arch] = (kv, t)
        files_used[rel(p)] = _sha256(p)
        x, labels, _ = _heldout(models, "digits")
        tensors, ops = reference.effective_tensors(t, None)
        logits = _forward(arch, kv, tensors, ops, x)
        doc = {"kind": "base", "arch": arch, "base": rel(p), "dataset": "models/digits/heldout-digits.gguf",
               "model_id": kv["riffle.model_id"], "rows": list(range(N_EXAMPLES)), "tolerance": TOLERANCE,
               "inputs": _list(x), "labels": labels, "base_logits": _list(logits),
               "base_predictions": np.argmax(logits, 1).tolist()}
        written.append(_dump(out / f"{arch}.json", doc))

    for spec in ADAPTERS:
        p = models / f"{spec.name}.gguf"
        files_used[rel(p)] = _sha256(p)
        bkv, bt = bases[spec.arch]
        akv, at, types = _load_adapter(p)
        x, labels, dkv = _heldout(models, spec.task)
        files_used[f"models/digits/heldout-{spec.task}.gguf"] = _sha256(models / f"heldout-{spec.task}.gguf")
        t0, ops0 = reference.effective_tensors(bt, None)
        t1, ops1 = reference.effective_tensors(bt, at)
        base_logits = _forward(spec.arch, bkv, t0, ops0, x)
        ad_logits = _forward(spec.arch, bkv, t1, ops1, x)
        # the merged formula gives the same logits (checked here, float64)
        merged = dict(t1)
        for w, (qi, qo, s) in ops1.items():
            merged[w] = reference.adapted_matrix(t1[w], qi, qo, s).reshape(t1[w].shape)
        if spec.arch == "mlp":
            mlog = reference.mlp_forward(x, merged, {}, bkv["mlp.layer_count"])
        else:
            mlog = reference.cnn_forward(x, merged, {}, bkv["cnn.conv_count"], bkv["cnn.dense_count"])
        assert np.max(np.abs(mlog - ad_logits)) < 1e-9, spec.name
        doc = {"kind": "adapter", "arch": spec.arch, "task": spec.task, "method": spec.method,
               "permutation": akv["adapter.orthogonal.permutation"], "block_size": akv["adapter.orthogonal.block_size"],
               "factor_count": akv["adapter.orthogonal.factor_count"],
               "parameter_type": sorted({v for k, v in types.items() if ".oft_" in k}),
               "base": rel(models / f"{spec.arch}.gguf"), "adapter": rel(p),
               "dataset": f"models/digits/heldout-{spec.task}.gguf", "rows": list(range(N_EXAMPLES)),
               "labels_names": akv.get("adapter.labels") or bkv["riffle.labels"],
               "tolerance": TOLERANCE, "inputs": _list(x), "labels": labels,
               "base_logits": None if spec.head else _list(base_logits),
               "base_logits_note": "the base's own head (10 digits)" if not spec.head else
               "omitted: the adapter replaces the head; see base goldens for the base",
               "adapter_logits": _list(ad_logits), "adapter_predictions": np.argmax(ad_logits, 1).tolist(),
               "matrices": []}
        if spec.head:
            doc["base_logits_of_base_head"] = _list(base_logits)
        for method, (stem, wname) in MATRIX_CASES.items():
            if stem != spec.name:
                continue
            qi, qo, s = ops1[wname]
            m = {"tensor": wname, "method": method, "weight_shape": list(t1[wname].shape),
                 "q_in": _list(qi), "q_out": None if qo is None else _list(qo),
                 "scale": None if s is None else _list(s),
                 "merged_weight": _list(reference.adapted_matrix(t1[wname], qi, qo, s))}
            doc["matrices"].append(m)
        written.append(_dump(out / f"{spec.name}.json", doc))

    written.append(_dump(out / "chains.json", {"kind": "chains", "tolerance": TOLERANCE,
                                                "note": "q is dense Q (row-major), qx = Q x, qtx = Q^T x",
                                                "cases": synthetic_cases()}))
    import gguf as _gguf
    import sklearn
    try:
        import torch
        torch_v = torch.__version__
    except Exception:  # pragma: no cover
        torch_v = None
    manifest = {
        "generator": "riffle-train golden --models models/digits --out tests/data/golden "
                     "(train/riffle_train/golden.py); models from riffle-train digits --out models/digits",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "gguf": _gguf.__version__
                     if hasattr(_gguf, "__version__") else "0.19.0", "scikit-learn": sklearn.__version__,
                     "torch": torch_v},
        "seeds": {"split": SPLIT_SEED, "test_size": TEST_SIZE, "base_training": 0, "adapter_training": 1,
                  "noise_sigma": NOISE_SIGMA, "noise_heldout_seed": 2,
                  "noise_train_seeds": list(range(100, 100 + NOISY_TRAIN_COPIES)), "synthetic_chains": 1234},
        "examples_per_file": N_EXAMPLES, "tolerance": TOLERANCE,
        "inputs": files_used, "files": sorted(p.name for p in written),
    }
    written.append(_dump(out / "manifest.json", manifest))
    return written


def _dump(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    return path
