"""GGUF export and read-back in format.md's layout.

``riffle.model_id`` (sha256 hex) and ``riffle.data_crc32`` (zlib crc32) cover the
*data span*: the bytes from the start of the tensor-data section to the end of the
tensor that ends last, padding between tensors included, trailing padding excluded.
Both are computed before writing from the exact layout GGUFWriter produces (each
tensor at the next multiple of the alignment, zero padding), and every written file
is re-read with ``gguf.GGUFReader`` to check them.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import gguf

ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT  # 32


def _pad(x: int, n: int = ALIGNMENT) -> int:
    return (x + n - 1) // n * n


def tensor_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def data_span(tensors: list[tuple[str, np.ndarray]], alignment: int = ALIGNMENT) -> bytes:
    """The data span GGUFWriter will produce for ``tensors`` in this order."""
    out = bytearray()
    for i, (_, arr) in enumerate(tensors):
        if len(out) % alignment:
            out += bytes(_pad(len(out), alignment) - len(out))
        out += tensor_bytes(arr)
    return bytes(out)


def model_id(span: bytes) -> str:
    return hashlib.sha256(span).hexdigest()


def crc32(span: bytes) -> int:
    return zlib.crc32(span) & 0xFFFFFFFF


def _add_kv(w: gguf.GGUFWriter, key: str, val: Any) -> None:
    if isinstance(val, bool):
        w.add_bool(key, val)
    elif isinstance(val, U32):
        w.add_uint32(key, int(val))
    elif isinstance(val, int):
        w.add_uint32(key, val) if val >= 0 else w.add_int32(key, val)
    elif isinstance(val, F32):
        w.add_float32(key, float(val))
    elif isinstance(val, float):
        w.add_float32(key, val)
    elif isinstance(val, str):
        w.add_string(key, val)
    elif isinstance(val, (list, tuple)):
        if len(val) == 0:
            raise ValueError(f"{key}: empty arrays are not written by GGUFWriter")
        w.add_array(key, list(val))
    else:
        raise TypeError(f"{key}: unsupported value {val!r}")


class U32(int):
    """Marks a value to be written as u32."""


class F32(float):
    """Marks a value to be written as f32."""


def write_gguf(path: str | Path, arch: str, kv: dict[str, Any],
               tensors: list[tuple[str, np.ndarray]] | list[tuple[str, np.ndarray, Any]],
               id_key: str | None = None) -> dict[str, Any]:
    """Write a GGUF file; ``kv`` excludes ``general.architecture`` (from ``arch``).

    ``tensors``: (name, array) in PyTorch shape order, or (name, quantised uint8 array as
    made by ``gguf.quants.quantize``, ggml type) for quantised data. ``id_key`` = "model_id" adds
    ``riffle.model_id``; "crc" adds ``riffle.data_crc32``. Returns the span facts.

    The file is written under a temporary name in the same folder, read back and checked,
    then renamed over ``path``: an existing file there is replaced whole or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [(t[0], t[1]) for t in tensors]
    span = data_span(plain)
    facts = {"model_id": model_id(span), "data_crc32": crc32(span), "span_bytes": len(span)}
    write_replacing(path, lambda tmp: _write_checked(tmp, arch, kv, tensors, id_key, facts))
    facts["bytes"] = path.stat().st_size
    return facts


def write_replacing(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, flushed to disk, then renamed over
    ``path``: a file there is replaced whole or not at all (the temporary file is removed when
    ``write`` fails)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_checked(path: Path, arch: str, kv: dict[str, Any], tensors, id_key: str | None,
                   facts: dict[str, Any]) -> None:
    """:func:`write_gguf`'s file at ``path``, its data span read back and checked."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, val in kv.items():
        _add_kv(w, key, val)
    if id_key == "model_id":
        w.add_string("riffle.model_id", facts["model_id"])
    elif id_key == "crc":
        w.add_uint32("riffle.data_crc32", facts["data_crc32"])
    for t in tensors:
        if len(t) == 3:
            name, raw, qtype = t
            w.add_tensor(name, np.ascontiguousarray(raw), raw_dtype=qtype)
        else:
            name, arr = t
            w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    check = verify_span(path)
    if check["model_id"] != facts["model_id"] or check["data_crc32"] != facts["data_crc32"]:
        raise RuntimeError(f"{path}: data span differs from the computed layout")


# --------------------------------------------------------------------------- reading


def _field_value(field) -> Any:
    t = field.types
    if not t:
        return None
    if t[0] == gguf.GGUFValueType.ARRAY:
        sub = t[1] if len(t) > 1 else None
        vals = [field.parts[i] for i in field.data]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(v).decode("utf-8") for v in vals]
        return [v.tolist()[0] for v in vals]
    val = field.parts[field.data[0]]
    if t[0] == gguf.GGUFValueType.STRING:
        return bytes(val).decode("utf-8")
    return val.tolist()[0]


def read_kv(reader: gguf.GGUFReader) -> dict[str, Any]:
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out[name] = _field_value(field)
    return out


def kv_types(reader: gguf.GGUFReader) -> dict[str, str]:
    return {n: "/".join(t.name for t in f.types) for n, f in reader.fields.items() if not n.startswith("GGUF.")}


def span_of_reader(reader: gguf.GGUFReader) -> bytes:
    start = reader.data_offset
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=start)
    return bytes(reader.data[start:end])


def verify_span(path: str | Path) -> dict[str, Any]:
    r = gguf.GGUFReader(str(path))
    span = span_of_reader(r)
    for t in r.tensors:
        if (t.data_offset - r.data_offset) % ALIGNMENT:
            raise RuntimeError(f"{path}: tensor {t.name} unaligned")
    return {"model_id": model_id(span), "data_crc32": crc32(span)}


def read_tensors(path: str | Path, widen: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """(kv, tensors in PyTorch shape order, ggml type names). F16 is widened to f64 when
    ``widen`` (exact); Q8_0 is dequantised."""
    r = gguf.GGUFReader(str(path))
    kv = read_kv(r)
    tensors, types = {}, {}
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        types[t.name] = t.tensor_type.name
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                             gguf.GGMLQuantizationType.I32):
            arr = np.array(t.data).reshape(shape)
        else:
            arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        if widen and arr.dtype in (np.float16, np.float32):
            arr = arr.astype(np.float64)
        tensors[t.name] = arr
    return kv, tensors, types


def read_kv_only(path: str | Path) -> dict[str, Any]:
    return read_kv(gguf.GGUFReader(str(path)))
