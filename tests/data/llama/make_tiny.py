"""A tiny random llama GGUF (F32) for the hostile-file tests of the llama loader.

2 blocks, hidden 16, 4 heads / 2 key-value heads, SwiGLU 32, vocabulary 64, context 32,
llama.cpp's key and tensor names, no tokenizer (the runtime's llama path does not need one).

    $(scripts/python-env) tests/data/llama/make_tiny.py
"""
import os

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    rng = np.random.default_rng(7)
    blocks, hidden, heads, kv_heads, ffn, vocab, ctx = 2, 16, 4, 2, 32, 64, 32
    head_dim = hidden // heads
    w = gguf.GGUFWriter(os.path.join(HERE, "tiny-llama.gguf"), "llama")
    w.add_block_count(blocks)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)

    def t(name, *shape, scale=0.2):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    t("token_embd.weight", vocab, hidden, scale=1.0)
    for b in range(blocks):
        w.add_tensor(f"blk.{b}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        t(f"blk.{b}.attn_q.weight", hidden, hidden)
        t(f"blk.{b}.attn_k.weight", kv_heads * head_dim, hidden)
        t(f"blk.{b}.attn_v.weight", kv_heads * head_dim, hidden)
        t(f"blk.{b}.attn_output.weight", hidden, hidden)
        w.add_tensor(f"blk.{b}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        t(f"blk.{b}.ffn_gate.weight", ffn, hidden)
        t(f"blk.{b}.ffn_up.weight", ffn, hidden)
        t(f"blk.{b}.ffn_down.weight", hidden, ffn)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
