"""Export all-MiniLM-L6-v2 (transformers BertModel + mean pooling) to ONNX with
torch.onnx, into bench/out/onnx/ (ignored). Inputs ``input_ids``, ``attention_mask``
(int64, batch 1, dynamic sequence length); output ``sentence_embedding`` (1, 384): the mean of
the last hidden states over non-padding tokens, which is what riffle returns."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from common import OUT, log, model_dir

ONNX_DIR = OUT / "onnx"
ONNX_PATH = ONNX_DIR / "minilm.onnx"


class Pooled(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def _stamp() -> str:
    import onnx
    import transformers

    w = model_dir() / "model.safetensors"
    key = f"{torch.__version__} {transformers.__version__} {onnx.__version__} {w.stat().st_size} {w.stat().st_mtime_ns}"
    key += (Path(__file__).read_text())
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def export(model) -> dict:
    """Exports once (a stamp records the torch/transformers versions and this file)."""
    ONNX_DIR.mkdir(parents=True, exist_ok=True)
    stamp = ONNX_DIR / "stamp.json"
    want = _stamp()
    if ONNX_PATH.exists() and stamp.exists() and json.loads(stamp.read_text()).get("stamp") == want:
        return json.loads(stamp.read_text())
    log(f"exporting MiniLM to {ONNX_PATH} (torch.onnx)")
    ids = torch.randint(1000, 30000, (1, 32))
    mask = torch.ones_like(ids)
    seq = torch.export.Dim("seq", min=2, max=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(Pooled(model).eval(), (ids, mask), dynamo=True,
                                 input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                                 dynamic_shapes={"input_ids": {1: seq}, "attention_mask": {1: seq}},
                                 optimize=True, external_data=False)
        prog.save(str(ONNX_PATH))
    info = {"stamp": want, "exporter": "torch.onnx.export(dynamo=True, optimize=True)",
            "bytes": ONNX_PATH.stat().st_size, "opset": None}
    try:
        import onnx

        info["opset"] = max(o.version for o in onnx.load(str(ONNX_PATH), load_external_data=False).opset_import
                            if o.domain in ("", "ai.onnx"))
    except Exception:  # noqa: BLE001 - informative only
        pass
    stamp.write_text(json.dumps(info) + "\n")
    return info


if __name__ == "__main__":
    from common import hf_model

    print(export(hf_model()))
