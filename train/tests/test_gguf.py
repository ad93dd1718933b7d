import json
import zlib
import hashlib

import gguf
import numpy as np
import pytest
import torch

from riffle_train import digits, gguf_io
from riffle_train.gguf_io import U32


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = [("a.weight", rng.normal(size=(5, 3)).astype(np.float32)),
               ("b", rng.normal(size=(7,)).astype(np.float16)),
               ("c", np.arange(9, dtype=np.int32))]
    facts = gguf_io.write_gguf(tmp_path / "t.gguf", "mlp", {"general.type": "model", "x.n": U32(3),
                                                              "x.labels": ["a", "b"]}, tensors, id_key="model_id")
    r = gguf.GGUFReader(str(tmp_path / "t.gguf"))
    kv = gguf_io.read_kv(r)
    # recompute the span by hand from the reader's offsets
    start = r.data_offset
    end = max(t.data_offset + t.n_bytes for t in r.tensors)
    span = bytes(r.data[start:end])
    assert kv["riffle.model_id"] == hashlib.sha256(span).hexdigest() == facts["model_id"]
    assert zlib.crc32(span) == facts["data_crc32"]
    assert end < len(r.data)  # trailing padding exists and is excluded
    assert kv["x.labels"] == ["a", "b"] and kv["x.n"] == 3 and kv["general.architecture"] == "mlp"
    _, t, types = gguf_io.read_tensors(tmp_path / "t.gguf", widen=False)
    for name, arr in tensors:
        assert t[name].shape == arr.shape and np.array_equal(t[name], arr)
    assert types["b"] == "F16"
    # GGUF lists dims innermost first
    assert [int(d) for d in r.tensors[0].shape] == [3, 5]


def test_committed_digits_files(repo):
    d = repo / "models" / "digits"
    ids = {}
    for arch in ("mlp", "cnn"):
        kv, t, _ = gguf_io.read_tensors(d / f"{arch}.gguf")
        assert kv["general.type"] == "model" and kv["general.architecture"] == arch
        assert gguf_io.verify_span(d / f"{arch}.gguf")["model_id"] == kv["riffle.model_id"]
        assert kv["riffle.labels"] == [str(i) for i in range(10)]
        ids[arch] = kv["riffle.model_id"]
    for spec in digits.ADAPTERS:
        p = d / f"{spec.name}.gguf"
        kv, t, types = gguf_io.read_tensors(p)
        assert kv["general.type"] == "adapter" and kv["adapter.type"] == "orthogonal"
        assert kv["adapter.base_model_id"] == ids[spec.arch]
        assert kv["riffle.data_crc32"] == gguf_io.verify_span(p)["data_crc32"]
        assert kv["adapter.orthogonal.method"] == spec.method
        b = kv["adapter.orthogonal.block_size"]
        for name, arr in t.items():
            if ".oft_in." in name or ".oft_out." in name:
                assert arr.shape[1] == b * (b - 1) // 2
                assert types[name] == spec.dtype.upper()
        if spec.head:
            assert kv["adapter.labels"] == ["even", "odd"]
            assert t[f"{spec.head}.weight"].shape[0] == 2 and t[f"{spec.head}.bias"].shape == (2,)
        assert p.stat().st_size < 16384
    for task in digits.TASKS:
        kv, t, types = gguf_io.read_tensors(d / f"heldout-{task}.gguf", widen=False)
        assert kv["general.type"] == "dataset" and kv["general.architecture"] == "digits8x8"
        assert t["inputs"].shape == (450, 64) and types["inputs"] == "F32" and types["labels"] == "I32"


def test_export_reload_adapter(tmp_path, repo):
    """An adapter exported from a trained-in-memory model reloads to the same outputs."""
    base_path = repo / "models" / "digits" / "cnn.gguf"
    model, bkv = digits.model_from_gguf(base_path)
    spec = digits.AdapterSpec("cnn", "parity", "double_gsoft", 8, ["conv.1", "dense.0"], dtype="f32",
                              head="dense.1")
    digits.apply_adapter_spec(model, spec, digits.PARITY_LABELS)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    p = tmp_path / "a.gguf"
    gguf_io.write_gguf(p, "cnn", digits.adapter_kv(spec, bkv["riffle.model_id"], digits.PARITY_LABELS),
                       digits.adapter_tensors(model, spec), id_key="crc")
    loaded, kv = digits.adapted_model_from_gguf(base_path, p)
    x = torch.rand(6, 64)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
