"""Reference outputs of SmolLM2-135M-Instruct for the Rust llama tests.

The oracle is transformers' own llama implementation on the weights of llama.cpp's Q4_1
file, dequantized exactly (`from_pretrained(dir, gguf_file=...)`), run in float64. For
each prompt (token ids from llama.cpp's `llama-tokenize`, so no tokenizer is involved) it
writes the next-token logits after the prompt (`logits-<name>.npy`, float32) and the 32
greedy tokens that follow (`reference.json`).

    $(train/peft-env) tests/data/llama/make_reference.py ~/.cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

# Prompts (ids from `llama-tokenize`) are in prompts.json beside this script: "Hello world!
# 123", the ChatML question "What is the capital of France?", "def fibonacci(n):", and a
# 360-token ChatML question about notes on a lighthouse (written for this test), so that the
# greedy tokens after it are decoding steps over more than 256 cached positions (where the
# runtime cuts a step's attention into blocks of positions).


def main(path):
    here = os.path.dirname(os.path.abspath(__file__))
    ids = json.load(open(os.path.join(here, "prompts.json")))
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), torch_dtype=torch.float64
    )
    model.eval()
    out = {"model": os.path.basename(path), "dtype": "float64", "prompts": {}}
    for name, prompt in ids.items():
        x = torch.tensor([prompt])
        with torch.no_grad():
            logits = model(x).logits[0, -1].numpy()
            gen = model.generate(x, max_new_tokens=32, do_sample=False, eos_token_id=None)
        np.save(os.path.join(here, f"logits-{name}.npy"), logits.astype(np.float32))
        out["prompts"][name] = {"ids": prompt, "greedy": gen[0, len(prompt):].tolist()}
        print(name, gen[0, len(prompt):].tolist())
    json.dump(out, open(os.path.join(here, "reference.json"), "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
