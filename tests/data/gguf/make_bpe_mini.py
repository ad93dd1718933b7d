#!/usr/bin/env python3
"""Write tests/data/gguf/bpe_mini.gguf: a tiny GPT-2 style (`gpt2`, pre `smollm`)
tokenizer for riffle's BPE doc examples and unit tests. No tensors.

Vocabulary: ids 0-2 control tokens (<|im_start|>, <|im_end|>, <|endoftext|>), ids
3..258 the 256 byte characters of GPT-2's byte-level map in byte order (so any text
can be tokenized), then the results of the merges below, in order.
"""
from pathlib import Path

from gguf import GGUFValueType as V, GGUFWriter

HERE = Path(__file__).resolve().parent


def byte_chars():
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


MERGES = ["Ġ h", "Ġh i", "h i", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "' s", "Ġ Ġ"]


def main():
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tokens = specials + byte_chars()
    for m in MERGES:
        a, b = m.split(" ")
        tokens.append(a + b)
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    w = GGUFWriter(str(HERE / "bpe_mini.gguf"), arch="llama")
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "smollm")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", types)
    w.add_array("tokenizer.ggml.merges", MERGES)
    w.add_uint32("tokenizer.ggml.bos_token_id", 2)
    w.add_uint32("tokenizer.ggml.eos_token_id", 1)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for i, t in enumerate(tokens):
        if i < 3 or i >= 259:
            print(i, repr(t))


if __name__ == "__main__":
    main()
