import json

import gguf
import numpy as np
import pytest
import torch

from riffle_train import gguf_io, minilm


def test_phantom_vocab():
    toks, types = minilm.phantom_vocab(["[PAD]", "[unused0]", "hello", "##ing", "#", "###", "."], {"[PAD]"})
    assert toks == ["[PAD]", "\u2581[unused0]", "\u2581hello", "ing", "\u2581#", "#", "\u2581."]
    assert types == [3, 1, 1, 1, 1, 1, 1]


def _tiny_model_dir(tmp_path, layers=2, d=32, ff=64, heads=4, vocab=40):
    from safetensors.numpy import save_file

    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(vocab - len(words) - 4)] + ["##s", "##ing", "a", "b"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    cfg = {"vocab_size": vocab, "hidden_size": d, "intermediate_size": ff, "num_attention_heads": heads,
           "num_hidden_layers": layers, "max_position_embeddings": 64, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": [
        {"content": t, "special": True} for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]}))
    t = {"embeddings.word_embeddings.weight": (vocab, d), "embeddings.token_type_embeddings.weight": (2, d),
         "embeddings.position_embeddings.weight": (64, d), "embeddings.LayerNorm.weight": (d,),
         "embeddings.LayerNorm.bias": (d,), "pooler.dense.weight": (d, d)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + m + ".weight"], t[p + m + ".bias"] = (d, d), (d,)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = (ff, d), (ff,)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = (d, ff), (d,)
        for m in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + m + ".weight"], t[p + m + ".bias"] = (d,), (d,)
    save_file({k: rng.normal(0, 0.2, s).astype(np.float32) for k, s in t.items()}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_convert_tiny_bert(tmp_path):
    src = _tiny_model_dir(tmp_path / "src")
    out = tmp_path / "out"
    facts = minilm.convert(out, src, log=lambda *a: None)
    again = minilm.convert(tmp_path / "again", src, log=lambda *a: None)
    assert {k: v["model_id"] for k, v in facts.items()} == {k: v["model_id"] for k, v in again.items()}
    kv, t, types = gguf_io.read_tensors(out / "minilm-q8_0.gguf", widen=False)
    assert len(t) == 5 + 16 * 2 and "pooler.dense.weight" not in t
    assert types["token_embd.weight"] == "Q8_0" and types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_output_norm.weight"] == "F32" and types["position_embd.weight"] == "F32"
    assert kv["tokenizer.ggml.tokens"][-4:] == ["s", "ing", "\u2581a", "\u2581b"]
    assert kv["tokenizer.ggml.bos_token_id"] == 5 and kv["tokenizer.ggml.seperator_token_id"] == 6
    r = gguf.GGUFReader(str(out / "minilm-f16.gguf"))
    assert [int(x) for x in next(x for x in r.tensors if x.name == "blk.0.ffn_up.weight").shape] == [32, 64]
    assert gguf_io.verify_span(out / "minilm-f32.gguf")["model_id"] == facts["f32"]["model_id"]
    # the torch encoder loads every variant; f16 stays close to f32
    e32, _ = minilm.encoder_from_gguf(out / "minilm-f32.gguf")
    e16, _ = minilm.encoder_from_gguf(out / "minilm-f16.gguf")
    ids = torch.tensor([[5, 10, 11, 6, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        assert (e32(ids, mask) - e16(ids, mask)).abs().max() < 1e-2
        # padding does not change the pooled embedding
        assert torch.allclose(e32(ids[:, :4], mask[:, :4]), e32(ids, mask), atol=1e-5)
