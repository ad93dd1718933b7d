"""Model ids of the SmolLM2 Q4_1 base and of its requantizations.

An adapter is bound to its base by ``adapter.base_model_id`` (the lowercase hex SHA-256 of
the base's data span; llama.cpp's file has no ``riffle.model_id``) and may list the ids of
other weight types of the same model in ``adapter.compatible_model_ids``. This module makes
the Q4_0, Q8_0 and F16 files from the Q4_1 one with llama.cpp's
``llama-quantize --allow-requantize`` (``scripts/llama-cpp`` builds it) next to the base and
writes the ids as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from . import gguf_io

REQUANT = ("Q4_0", "Q8_0", "F16")


def llama_cpp_bin() -> Path:
    root = Path(__file__).resolve().parents[2]
    env = os.environ.get("RIFFLE_LLAMA_CPP_BIN")
    if env:
        return Path(env)
    out = subprocess.run([str(root / "scripts" / "llama-cpp")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def requantize(base: Path, qtype: str) -> Path:
    """``<base stem minus Q4_1>.<qtype>.gguf`` next to the base (made once)."""
    out = base.with_name(base.name.replace(".Q4_1.gguf", f".{qtype}.gguf"))
    if out == base:
        raise ValueError(f"{base}: expected a *.Q4_1.gguf file")
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run([str(llama_cpp_bin() / "llama-quantize"), "--allow-requantize", str(base), str(tmp), qtype],
                       check=True, capture_output=True)
        tmp.rename(out)
    return out


def write_ids(base: str | Path, out: str | Path) -> dict:
    base = Path(base)
    res = {"base": base.name, "base_model_id": gguf_io.verify_span(base)["model_id"], "requantized": {}}
    for q in REQUANT:
        p = requantize(base, q)
        res["requantized"][q] = gguf_io.verify_span(p)["model_id"]
    res["compatible_model_ids"] = [res["requantized"][q] for q in REQUANT]
    res["made_with"] = "llama-quantize --allow-requantize <Q4_1 file> <out> {Q4_0,Q8_0,F16} (llama.cpp from llama-cpp-python 0.3.36)"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1) + "\n")
    return res
