"""Golden logits of the MiniLM text adapters for the Rust tests.

For each adapter ``models/minilm-adapters/minilm-<task>.gguf`` this writes
``tests/data/golden/minilm-<task>.json``: a few sentences, their token ids (HF ``tokenizers``
with the package's tokenizer.json; every sentence is shorter than any truncation), the
mean-pooled adapted hidden states and the logits of the adapter's head.

Reference: the PyTorch path of this package (``minilm.BertEncoder`` loaded from the F32 base
GGUF, the adapter injected with ``minilm.apply_text_adapter``) converted to float64 *after*
loading, so the parameters are exactly those stored in the files (F16 parameters widened
exactly), run unmerged (the adapter applied to activations, ``y = s * (W (Q_in x)) + bias``).
The merged float64 forward is computed too and must agree within 1e-9.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import torch

from . import gguf_io, minilm
from .layers import merge_adapters

SENTENCES = {
    "sentiment": [
        "what a lovely day",
        "this was a terrible, boring film",
        "I loved it",
        "awful service, never again",
        "the package arrived on tuesday",
        "not bad at all, I would watch it again",
        "I am so tired of waiting for this update",
        "thanks everyone for the birthday wishes!",
    ],
    "topic": [
        "Shares in the bank fell 5% after quarterly profits missed analysts' forecasts.",
        "The striker scored twice as the club won the cup final at Wembley.",
        "The prime minister faces a vote in parliament over the new immigration bill.",
        "The film won three Oscars, including best actress for her role as a singer.",
        "A new mobile phone chip promises faster broadband and longer battery life.",
        "Inflation rose to 3.1% in March, the Bank of England said.",
        "The band's new album went straight to number one in the charts.",
        "Hackers used a flaw in the web browser to steal passwords.",
    ],
    "language": [
        "Good morning, how are you today?",
        "Bonjour, je voudrais un café s'il vous plaît.",
        "Ich habe heute keine Zeit, vielleicht morgen.",
        "¿Dónde está la estación de tren?",
        "Questo libro è molto interessante.",
        "Eu gosto de ouvir música à noite.",
        "Ik woon al tien jaar in Amsterdam.",
        "Bugün hava çok güzel.",
    ],
}

TOLERANCE = {
    "logits_abs": 1e-4,
    "pooled_abs": 1e-5,
    "note": "an f32 runtime on the F32 base against this float64 reference: logits within 1e-4 absolute, "
            "pooled hidden states within 1e-5 absolute. The F16/Q8_0 bases (adapter.compatible_model_ids) "
            "are not covered by these numbers.",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


@torch.no_grad()
def adapter_reference(base: Path, adapter: Path, ids: list[list[int]]):
    """(pooled, logits, merged_logits) in float64 for each id list, one sentence at a time."""
    enc, _ = minilm.encoder_from_gguf(base)
    minilm.apply_text_adapter(enc, adapter)  # stored parameters (f16 -> f32 exactly)
    enc = enc.double().eval()  # f32 -> f64 exactly; Cayley blocks are then solved in float64
    pooled, logits = [], []
    for x in ids:
        t = torch.tensor([x])
        m = torch.ones_like(t)
        p = enc.mean_pool(enc.hidden(t, m), m)
        pooled.append(p[0].numpy())
        logits.append(enc.cls(p)[0].numpy())
    merge_adapters(enc)
    merged = []
    for x in ids:
        t = torch.tensor([x])
        merged.append(enc(t, torch.ones_like(t))[0].numpy())
    return np.array(pooled), np.array(logits), np.array(merged)


def write_minilm_golden(base: str | Path = "models/minilm/minilm-f32.gguf",
                        adapters_dir: str | Path = "models/minilm-adapters",
                        out_dir: str | Path = "tests/data/golden", tasks: list[str] | None = None,
                        root: str | Path = ".", log=print) -> list[Path]:
    torch.set_num_threads(1)  # fixed summation order: reruns give the same digits
    base, adapters_dir, out_dir, root = Path(base), Path(adapters_dir), Path(out_dir), Path(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    bkv = gguf_io.read_kv_only(base)
    tok = minilm.tokenizer(max_length=512)
    written = []
    for task in tasks or list(SENTENCES):
        ap = adapters_dir / f"minilm-{task}.gguf"
        if not ap.exists():
            log(f"skip {task}: {ap} not found")
            continue
        akv, at, types = gguf_io.read_tensors(ap, widen=False)
        if akv["adapter.base_model_id"] != bkv["riffle.model_id"]:
            raise ValueError(f"{ap} is for base {akv['adapter.base_model_id']}, not {base}")
        texts = SENTENCES[task]
        ids = minilm.encode(tok, texts)
        limit = minilm.TEXT_TASKS[task].max_length
        for t, x in zip(texts, ids):
            if len(x) >= limit:
                raise ValueError(f"{t!r}: {len(x)} tokens; golden sentences must not be truncated")
        pooled, logits, merged = adapter_reference(base, ap, ids)
        gap = float(np.abs(logits - merged).max())
        if gap > 1e-9:
            raise AssertionError(f"{task}: merged and unmerged float64 logits differ by {gap}")
        labels = akv["adapter.labels"]
        doc = {
            "kind": "minilm_adapter",
            "generator": "riffle-train minilm golden (train/riffle_train/minilm_golden.py)",
            "reference": "riffle_train.minilm.BertEncoder in float64 from the GGUF tensors as stored, "
                         "adapter unmerged; mean pooling over all tokens (no padding); logits = "
                         "cls.weight . pooled + cls.bias",
            "task": task, "labels": labels,
            "method": akv["adapter.orthogonal.method"],
            "permutation": akv["adapter.orthogonal.permutation"],
            "block_size": akv["adapter.orthogonal.block_size"],
            "factor_count": akv["adapter.orthogonal.factor_count"],
            "parameter_type": sorted({v for k, v in types.items() if ".oft_" in k}),
            "base": _rel(base, root), "base_model_id": bkv["riffle.model_id"],
            "adapter": _rel(ap, root), "adapter_sha256": _sha256(ap),
            "compatible_model_ids": akv.get("adapter.compatible_model_ids", []),
            "tolerance": TOLERANCE,
            "max_merged_minus_unmerged": gap,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__},
            "cases": [{"text": t, "ids": x, "logits": lg.tolist(), "prediction": int(np.argmax(lg)),
                       "label": labels[int(np.argmax(lg))], "pooled": p.tolist()}
                      for t, x, lg, p in zip(texts, ids, logits, pooled)],
        }
        path = out_dir / f"minilm-{task}.json"
        path.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
        log(f"{path}: {len(texts)} sentences, predictions {[c['label'] for c in doc['cases']]}")
        written.append(path)
    return written
