#!/usr/bin/env python3
"""Writes the small GGUF fixtures of riffle-core's GGUF reader tests, and
`expected.json` with what a correct reader must report for them.

Run with the project's Python environment (numpy, gguf 0.19.0):

    ~/.cache/riffle/probe-venv/bin/python tests/data/gguf/make_fixtures.py

Files (all a few KiB):

- `all_types.gguf`: every metadata value type, arrays of every element type
  (string arrays with non-ASCII and empty elements), F32/F16/BF16/Q8_0/I32
  tensors of ranks 1 to 4, `general.alignment = 64`, a correct
  `riffle.model_id` and `riffle.data_crc32`.
- `bert_mini.gguf`: a llama.cpp-style `bert` file with the key and tensor names
  of docs/format.md: `bert.*` keys, a phantom-space vocabulary in
  `tokenizer.ggml.tokens`, an i32 `tokenizer.ggml.token_type`, an f32
  `layer_norm_epsilon`, u32 special ids, a Q8_0 `token_embd.weight`; no
  `general.alignment` and no `riffle.model_id` (as llama.cpp's converter).
- `mlp_base.gguf` and `mlp_adapter.gguf`: a tiny `mlp` base with a stored
  `riffle.model_id`, and an orthogonal adapter bound to it with
  `riffle.data_crc32`.

Expected values are computed here independently of the Rust reader: shapes in
PyTorch order (numpy shapes), decoded tensor values (gguf.quants.dequantize for
Q8_0 and BF16), the data span located with gguf.GGUFReader, its SHA-256 with
hashlib and its CRC-32 with zlib.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.quants import dequantize, quantize

HERE = Path(__file__).resolve().parent
RNG = np.random.RandomState(20240611)

TYPE_NAMES = {
    V.UINT8: "U8", V.INT8: "I8", V.UINT16: "U16", V.INT16: "I16", V.UINT32: "U32",
    V.INT32: "I32", V.FLOAT32: "F32", V.BOOL: "Bool", V.STRING: "String",
    V.ARRAY: "Array", V.UINT64: "U64", V.INT64: "I64", V.FLOAT64: "F64",
}


def json_scalar(vtype: V, v):
    if vtype == V.FLOAT32:
        return float(np.float32(v))
    if vtype == V.FLOAT64:
        return float(v)
    if vtype == V.BOOL:
        return bool(v)
    if vtype == V.STRING:
        return v
    return int(v)


def span_of(path: Path) -> tuple[bytes, int]:
    """The data span (format.md) of a written file, found with GGUFReader."""
    r = GGUFReader(path)
    raw = path.read_bytes()
    end = max((t.data_offset + t.n_bytes for t in r.tensors), default=r.data_offset)
    start, end = int(r.data_offset), int(end)
    return raw[start:end], start


def logical_values(arr: np.ndarray, qtype: Q) -> tuple[np.ndarray, np.ndarray]:
    """(what to store, what a reader must decode) for a float32/int32 array."""
    if qtype == Q.F32:
        a = arr.astype(np.float32)
        return a, a
    if qtype == Q.F16:
        a = arr.astype(np.float16)
        return a, a.astype(np.float32)
    if qtype == Q.I32:
        a = arr.astype(np.int32)
        return a, a
    q = quantize(arr.astype(np.float32), qtype)
    return q, dequantize(q, qtype).reshape(arr.shape)


def write(name: str, arch: str, kvs, tensors, alignment: int | None = None,
          model_id: bool = False, crc: bool = False, extra=None) -> dict:
    """Writes `name` (twice when a checksum key must hold the file's own span)."""
    path = HERE / name

    def emit(checksums: dict) -> GGUFWriter:
        w = GGUFWriter(path, arch)
        if alignment is not None:
            w.add_custom_alignment(alignment)
        for key, vtype, value, sub in kvs:
            w.add_key_value(key, value, vtype, sub_type=sub)
        for key, (vtype, value) in checksums.items():
            w.add_key_value(key, value, vtype)
        for tname, arr, qtype in tensors:
            stored, _ = logical_values(arr, qtype)
            raw = qtype if qtype in (Q.Q8_0, Q.BF16) else None
            w.add_tensor(tname, stored, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return w

    emit({})
    span, data_offset = span_of(path)
    sums = {}
    if model_id:
        sums["riffle.model_id"] = (V.STRING, hashlib.sha256(span).hexdigest())
    if crc:
        sums["riffle.data_crc32"] = (V.UINT32, zlib.crc32(span))
    w = emit(sums)
    span2, data_offset = span_of(path)
    assert span2 == span, "metadata must not change the data span"

    kv_out = []
    for key, val in w.kv_data[0].items():
        item = {"key": key, "type": TYPE_NAMES[val.type]}
        if val.type == V.ARRAY:
            sub = val.sub_type if val.sub_type is not None else V.get_type(val.value[0])
            item["element_type"] = TYPE_NAMES[sub]
            item["value"] = [json_scalar(sub, x) for x in val.value]
        else:
            item["value"] = json_scalar(val.type, val.value)
        kv_out.append(item)

    r = GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    t_out = []
    for tname, arr, qtype in tensors:
        _, decoded = logical_values(arr, qtype)
        rt = by_name[tname]
        t_out.append({
            "name": tname,
            "ggml_type": int(qtype),
            "shape": [int(d) for d in arr.shape],
            "offset": int(rt.data_offset - r.data_offset),
            "n_bytes": int(rt.n_bytes),
            "values": [int(x) for x in decoded.ravel()] if qtype == Q.I32
            else [float(x) for x in decoded.astype(np.float32).ravel()],
        })

    out = {
        "size": path.stat().st_size,
        "alignment": alignment if alignment is not None else 32,
        "kv_count": len(kv_out),
        "tensor_count": len(t_out),
        "data_offset": data_offset,
        "data_span_len": len(span),
        "sha256": hashlib.sha256(span).hexdigest(),
        "crc32": zlib.crc32(span),
        "kv": kv_out,
        "tensors": t_out,
    }
    if extra:
        out.update(extra)
    return out


def all_types() -> dict:
    kvs = [
        ("test.u8", V.UINT8, 200, None),
        ("test.i8", V.INT8, -100, None),
        ("test.u16", V.UINT16, 60000, None),
        ("test.i16", V.INT16, -30000, None),
        ("test.u32", V.UINT32, 4_000_000_000, None),
        ("test.i32", V.INT32, -2_000_000_000, None),
        ("test.f32", V.FLOAT32, 0.1, None),
        ("test.bool_true", V.BOOL, True, None),
        ("test.bool_false", V.BOOL, False, None),
        ("test.string", V.STRING, "h\u00e9llo \u2581w\u00f6rld \U0001f600", None),
        ("test.empty_string", V.STRING, "", None),
        ("test.u64", V.UINT64, 2**63 + 5, None),
        ("test.i64", V.INT64, -(2**62) - 7, None),
        ("test.f64", V.FLOAT64, 0.1, None),
        ("test.small_i32", V.INT32, 7, None),
        ("test.neg_i64", V.INT64, -1, None),
        ("test.arr.u8", V.ARRAY, [0, 1, 255], V.UINT8),
        ("test.arr.i8", V.ARRAY, [-128, 0, 127], V.INT8),
        ("test.arr.u16", V.ARRAY, [0, 65535], V.UINT16),
        ("test.arr.i16", V.ARRAY, [-32768, 32767, 5], V.INT16),
        ("test.arr.u32", V.ARRAY, [1, 2, 4_294_967_295], V.UINT32),
        ("test.arr.i32", V.ARRAY, [-1, 0, 1, 2_147_483_647], V.INT32),
        ("test.arr.f32", V.ARRAY, [0.5, -1.25, 0.1], V.FLOAT32),
        ("test.arr.bool", V.ARRAY, [True, False, True], V.BOOL),
        ("test.arr.string", V.ARRAY, ["a", "", "\u2581b\u00e9", "[CLS]", "x" * 40], V.STRING),
        ("test.arr.u64", V.ARRAY, [0, 2**64 - 1], V.UINT64),
        ("test.arr.i64", V.ARRAY, [-(2**63), 2**63 - 1], V.INT64),
        ("test.arr.f64", V.ARRAY, [0.1, -2.5e-300], V.FLOAT64),
    ]
    tensors = [
        ("t.f32.r1", RNG.standard_normal(5), Q.F32),
        ("t.f16.r2", RNG.standard_normal((3, 4)), Q.F16),
        ("t.q8_0.r2", RNG.standard_normal((2, 64)), Q.Q8_0),
        ("t.i32.r1", np.array([3, -1, 0, 2**31 - 1, -(2**31), 7, 42]), Q.I32),
        ("t.f32.r3", RNG.standard_normal((2, 2, 3)), Q.F32),
        ("t.q8_0.r3", RNG.standard_normal((2, 1, 32)) * 10, Q.Q8_0),
        ("t.f32.r4", RNG.standard_normal((2, 3, 1, 2)), Q.F32),
        ("t.bf16.r2", RNG.standard_normal((2, 3)), Q.BF16),
        ("t.f16.r4", RNG.standard_normal((1, 2, 2, 2)), Q.F16),
    ]
    return write("all_types.gguf", "riffle_test", kvs, tensors, alignment=64,
                 model_id=True, crc=True)


BERT_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2581[unused0]",
    "\u2581hello", "\u2581world", "ing", "\u2581.", "\u2581#", "#",
]
BERT_TOKEN_TYPES = [3, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1]


def bert_mini() -> dict:
    hidden, ctx = 32, 8
    kvs = [
        ("general.type", V.STRING, "model", None),
        ("general.name", V.STRING, "bert-mini", None),
        ("bert.context_length", V.UINT32, ctx, None),
        ("bert.embedding_length", V.UINT32, hidden, None),
        ("bert.feed_forward_length", V.UINT32, 64, None),
        ("bert.attention.head_count", V.UINT32, 2, None),
        ("bert.attention.layer_norm_epsilon", V.FLOAT32, 1e-12, None),
        ("bert.attention.causal", V.BOOL, False, None),
        ("bert.block_count", V.UINT32, 1, None),
        ("bert.pooling_type", V.UINT32, 1, None),
        ("tokenizer.ggml.model", V.STRING, "bert", None),
        ("tokenizer.ggml.tokens", V.ARRAY, BERT_VOCAB, V.STRING),
        ("tokenizer.ggml.token_type", V.ARRAY, BERT_TOKEN_TYPES, V.INT32),
        ("tokenizer.ggml.bos_token_id", V.UINT32, 2, None),
        ("tokenizer.ggml.eos_token_id", V.UINT32, 3, None),
        ("tokenizer.ggml.seperator_token_id", V.UINT32, 3, None),
        ("tokenizer.ggml.unknown_token_id", V.UINT32, 1, None),
        ("tokenizer.ggml.padding_token_id", V.UINT32, 0, None),
        ("tokenizer.ggml.mask_token_id", V.UINT32, 4, None),
        ("tokenizer.ggml.add_bos_token", V.BOOL, True, None),
        ("tokenizer.ggml.add_eos_token", V.BOOL, True, None),
    ]
    tensors = [
        ("token_embd.weight", RNG.standard_normal((len(BERT_VOCAB), hidden)), Q.Q8_0),
        ("token_types.weight", RNG.standard_normal((2, hidden)), Q.F32),
        ("position_embd.weight", RNG.standard_normal((ctx, hidden)), Q.F32),
        ("token_embd_norm.weight", 1 + 0.1 * RNG.standard_normal(hidden), Q.F32),
        ("token_embd_norm.bias", 0.1 * RNG.standard_normal(hidden), Q.F32),
        ("blk.0.attn_q.weight", RNG.standard_normal((hidden, hidden)) / 8, Q.F16),
        ("blk.0.attn_q.bias", 0.1 * RNG.standard_normal(hidden), Q.F32),
    ]
    return write("bert_mini.gguf", "bert", kvs, tensors)


def mlp_pair() -> tuple[dict, dict]:
    base_kvs = [
        ("general.type", V.STRING, "model", None),
        ("general.name", V.STRING, "mlp-mini", None),
        ("mlp.layer_count", V.UINT32, 2, None),
        ("mlp.activation", V.STRING, "relu", None),
        ("mlp.input_length", V.UINT32, 4, None),
        ("riffle.labels", V.ARRAY, ["neg", "pos"], V.STRING),
    ]
    base_tensors = [
        ("layers.0.weight", RNG.standard_normal((4, 4)), Q.F32),
        ("layers.0.bias", RNG.standard_normal(4), Q.F32),
        ("layers.1.weight", RNG.standard_normal((2, 4)), Q.F32),
        ("layers.1.bias", RNG.standard_normal(2), Q.F32),
    ]
    base = write("mlp_base.gguf", "mlp", base_kvs, base_tensors, model_id=True)
    ad_kvs = [
        ("general.type", V.STRING, "adapter", None),
        ("adapter.type", V.STRING, "orthogonal", None),
        ("adapter.orthogonal.method", V.STRING, "gsoft", None),
        ("adapter.orthogonal.block_size", V.UINT32, 2, None),
        ("adapter.orthogonal.permutation", V.STRING, "gs", None),
        ("adapter.orthogonal.factor_count", V.UINT32, 2, None),
        ("adapter.base_model_id", V.STRING, base["sha256"], None),
        ("adapter.task_name", V.STRING, "sentiment", None),
        ("adapter.labels", V.ARRAY, ["negative", "positive"], V.STRING),
    ]
    ad_tensors = [
        ("layers.0.weight.oft_in.0", 0.1 * RNG.standard_normal((2, 1)), Q.F32),
        ("layers.0.weight.oft_in.1", 0.1 * RNG.standard_normal((2, 1)), Q.F32),
        ("layers.0.weight.oft_scale", 1 + 0.01 * RNG.standard_normal(4), Q.F16),
    ]
    adapter = write("mlp_adapter.gguf", "mlp", ad_kvs, ad_tensors, crc=True)
    return base, adapter


def dump(expected: dict) -> str:
    """JSON with one key/value pair or tensor per line (small, diff-friendly)."""
    def one(x) -> str:
        return json.dumps(x, ensure_ascii=False, separators=(",", ":"))

    lines = ["{", f' "generator": {one(expected["generator"])},', ' "files": {']
    files = list(expected["files"].items())
    for i, (name, e) in enumerate(files):
        lines.append(f"  {one(name)}: {{")
        for k, v in e.items():
            if k in ("kv", "tensors"):
                lines.append(f"   {one(k)}: [")
                lines += [f"    {one(item)}," for item in v]
                lines[-1] = lines[-1].rstrip(",")
                lines.append("   ],")
            else:
                lines.append(f"   {one(k)}: {one(v)},")
        lines[-1] = lines[-1].rstrip(",")
        lines.append("  }," if i + 1 < len(files) else "  }")
    lines += [" }", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == expected
    return text


def main() -> None:
    base, adapter = mlp_pair()
    expected = {
        "generator": "tests/data/gguf/make_fixtures.py",
        "files": {
            "all_types.gguf": all_types(),
            "bert_mini.gguf": bert_mini(),
            "mlp_base.gguf": base,
            "mlp_adapter.gguf": adapter,
        },
    }
    (HERE / "expected.json").write_text(dump(expected))
    for name, e in expected["files"].items():
        print(f"{name}: {e['size']} bytes, {e['tensor_count']} tensors, {e['kv_count']} keys")


if __name__ == "__main__":
    main()
