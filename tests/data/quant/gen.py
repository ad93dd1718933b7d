"""Writes the quantized-kernel fixtures for riffle-core's `quant` unit tests.

For each block type: `<TYPE>.bin` holds blocks as stored (real rows taken from the
SmolLM2-135M-Instruct GGUF files llama-quantize made, then blocks of random bytes with
finite scales), and `<TYPE>.f32` their dequantization by the `gguf` Python package
(`gguf.quants.dequantize`, little-endian f32), the reference the Rust decoders must match.

    $(scripts/python-env) tests/data/quant/gen.py [SMOLLM2_DIR]

SMOLLM2_DIR defaults to ~/.cache/riffle/smollm2 (scripts/test makes the files there).
"""

import os
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/riffle/smollm2")

# type -> (file the real blocks come from, block values, block bytes, offsets of f16 scales)
TYPES = {
    "F16": ("F16", 1, 2, []),
    "Q4_0": ("Q4_0", 32, 18, [0]),
    "Q4_1": ("Q4_1", 32, 20, [0, 2]),
    "Q5_0": ("Q4_K", 32, 22, [0]),
    "Q8_0": ("Q4_1", 32, 34, [0]),
    "Q4_K": ("Q4_K", 256, 144, [0, 2]),
    "Q6_K": ("Q6_K", 256, 210, [208]),
}
REAL_BLOCKS = 12  # per type, from two tensors
RANDOM_BLOCKS = 8


def real_blocks(name, file, nbytes):
    r = GGUFReader(os.path.join(DIR, f"SmolLM2-135M-Instruct.{file}.gguf"))
    out = []
    for t in r.tensors:
        if t.tensor_type.name == name and len(out) < 2:
            raw = np.asarray(t.data).view(np.uint8).reshape(-1)
            # the first blocks of row 3
            row_bytes = raw.size // int(t.shape[-1])
            out.append(raw[3 * row_bytes : 3 * row_bytes + REAL_BLOCKS // 2 * nbytes])
    return np.concatenate(out)


def random_blocks(rng, nbytes, scales, n):
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    for off in scales:
        # finite scales of either sign in [2^-10, 2^-2]
        h = np.float16(rng.uniform(2**-10, 2**-2, size=n) * rng.choice([-1, 1], size=n))
        b[:, off : off + 2] = h.view(np.uint8).reshape(n, 2)
    return b.reshape(-1)


def main():
    rng = np.random.default_rng(18)
    for name, (file, vals, nbytes, scales) in TYPES.items():
        if name == "F16":
            data = np.concatenate(
                [
                    real_blocks(name, file, nbytes * 32),
                    # every exponent class: zeros, subnormals, normals, infinities
                    np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x3C00, 0xFBFF, 0x7C00, 0xFC00], dtype=np.uint16).view(np.uint8),
                ]
            )
        else:
            data = np.concatenate([real_blocks(name, file, nbytes), random_blocks(rng, nbytes, scales, RANDOM_BLOCKS)])
        qtype = T[name]
        ref = dequantize(data, qtype).astype("<f4").reshape(-1)
        assert ref.size == data.size // nbytes * vals
        data.tofile(os.path.join(HERE, f"{name}.bin"))
        ref.tofile(os.path.join(HERE, f"{name}.f32"))
        print(name, data.size, "bytes,", ref.size, "values")


main()
