"""Golden vectors for riffle-core's orthogonal-adapter math.

An independent float64 implementation written from docs/gs-math.md (numpy only,
no riffle code), plus emulations of PEFT's OFT (>= 0.16, exact Cayley) and BOFT
formulas, to check the sign and factor-order conversions gs-math.md describes.
Run: python tests/data/math/make_golden.py  (writes golden.json next to it).
Deterministic: fixed seeds; f16 cases round the parameters to f16 first and
compute the references from the rounded values.
"""
import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).with_name("golden.json")


def skew(p, b):
    s = np.zeros((b, b))
    iu = np.triu_indices(b, 1)
    s[iu] = p
    return s - s.T


def cayley(p, b):
    s = skew(p, b)
    i = np.eye(b)
    return np.linalg.solve(i - s, i + s)


def gs_sigma(n, b):
    k = n // b
    return np.array([(i % b) * k + i // b for i in range(n)])


def gs_pi(n, b, f):
    pi = np.arange(n)
    sig = gs_sigma(n, b)
    for _ in range(f):
        pi = sig[pi]
    return pi


def butterfly_pi(n, b, level):
    if level == 0:
        return np.arange(n)
    h = b // 2
    span = b << level
    pi = np.empty(n, dtype=int)
    for j in range(n):
        base = j // span * span
        q, e = divmod(j - base, h)
        c = q // 2 if q % 2 == 0 else (1 << level) + (q - 1) // 2
        pi[j] = base + c * h + e
    return pi


def factor_pi(perm, n, b, m, f):
    if perm == "none":
        return np.arange(n)
    if perm == "gs":
        return gs_pi(n, b, f)
    return butterfly_pi(n, b, m - 1 - f)


def factor_dense(blocks, pi):
    n = len(pi)
    b = blocks.shape[1]
    d = np.zeros((n, n))
    for j, blk in enumerate(blocks):
        d[j * b:(j + 1) * b, j * b:(j + 1) * b] = blk
    p = np.zeros((n, n))
    p[np.arange(n), pi] = 1.0  # (P x)[i] = x[pi[i]]
    return p.T @ d @ p


def chain_dense(params, n, b, m, perm):
    """params: list of m arrays (k, b(b-1)/2). Q = F_{m-1} ... F_0."""
    q = np.eye(n)
    for f in range(m):
        blocks = np.stack([cayley(row, b) for row in params[f]])
        q = factor_dense(blocks, factor_pi(perm, n, b, m, f)) @ q
    return q


def rnd_params(rng, n, b, m, scale, dtype):
    k = n // b
    ps = [rng.normal(0, scale, size=(k, b * (b - 1) // 2)) for _ in range(m)]
    if dtype == "f16":
        ps = [p.astype(np.float16).astype(np.float64) for p in ps]
    else:
        ps = [p.astype(np.float32).astype(np.float64) for p in ps]
    return ps


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def tolist(a):
    return np.asarray(a, dtype=np.float64).tolist()


def chain_case(rng, name, n, b, m, perm, scale, dtype, source="gs-math float64"):
    ps = rnd_params(rng, n, b, m, scale, dtype)
    q = chain_dense(ps, n, b, m, perm)
    x = f32(rng.normal(size=n))
    case = {
        "name": name, "source": source, "n": n, "b": b, "m": m, "permutation": perm,
        "dtype": dtype, "params": [tolist(p) for p in ps], "x": tolist(x),
        "qx": tolist(q @ x), "qtx": tolist(q.T @ x),
    }
    if n <= 24:
        case["dense_q"] = tolist(q)
    return case


def peft_oft_case(rng, n, b):
    """PEFT >= 0.16 OFT with exact Cayley: packed vector per block, R = (I - S)(I + S)^{-1},
    input rows rotated as x @ blockdiag(R). riffle copies the packed vector unchanged."""
    k = n // b
    vec = f32(rng.normal(0, 0.3, size=(k, b * (b - 1) // 2)))
    rs = []
    for row in vec:
        s = skew(row, b)
        i = np.eye(b)
        rs.append((i - s) @ np.linalg.inv(i + s))
    r = np.zeros((n, n))
    for j, blk in enumerate(rs):
        r[j * b:(j + 1) * b, j * b:(j + 1) * b] = blk
    x = f32(rng.normal(size=n))
    y_row = x @ r  # what PEFT feeds the base layer
    return {
        "name": f"peft_oft_n{n}_b{b}", "source": "PEFT OFT exact-Cayley formula (x @ R)",
        "n": n, "b": b, "m": 1, "permutation": "none", "dtype": "f32",
        "params": [tolist(vec)], "x": tolist(x), "qx": tolist(y_row), "qtx": tolist(r @ x),
    }


def peft_block_butterfly_perm(n, nblocks, r):
    """PEFT's index array for one level: inside each span of n/nblocks entries, chunks of r
    are reordered evens first, then odds (a gather)."""
    span = n // nblocks
    chunks = span // r
    order = [c for c in range(0, chunks, 2)] + [c for c in range(1, chunks, 2)]
    local = np.concatenate([np.arange(c * r, c * r + r) for c in order])
    idx = np.arange(n)
    for s in range(0, n, span):
        idx[s:s + span] = idx[s:s + span][local]
    return idx


def peft_boft_case(rng, n, b, m):
    """PEFT BOFT: boft_R (m, k, b, b) full tensors, skew part used, R_i = (I - S)(I + S)^{-1},
    M_i = P_i blockdiag(R_i) P_i^T, R = M_{m-1} ... M_0, merged W' = W R^T (x @ R on rows).
    riffle factor f takes boft_R[m-1-f] packed as triu((A - A^T)/2)."""
    k = n // b
    a = f32(rng.normal(0, 0.2, size=(m, k, b, b)))
    big = np.eye(n)
    for i in range(m):
        perm = peft_block_butterfly_perm(n, k // (2 ** i), b // 2) if m > 1 else np.arange(n)
        p = np.zeros((n, n))
        p[np.arange(n), perm] = 1.0
        d = np.zeros((n, n))
        for j in range(k):
            s = 0.5 * (a[i, j] - a[i, j].T)
            e = np.eye(b)
            d[j * b:(j + 1) * b, j * b:(j + 1) * b] = (e - s) @ np.linalg.inv(e + s)
        big = (p @ d @ p.T) @ big
    x = f32(rng.normal(size=n))
    iu = np.triu_indices(b, 1)
    packed = [np.stack([(0.5 * (blk - blk.T))[iu] for blk in a[m - 1 - f]]) for f in range(m)]
    return {
        "name": f"peft_boft_n{n}_b{b}_m{m}", "source": "PEFT BOFT formula (block_butterfly_perm, x @ R)",
        "n": n, "b": b, "m": m, "permutation": "butterfly", "dtype": "f32",
        "params": [tolist(p) for p in packed], "x": tolist(x),
        "qx": tolist(x @ big), "qtx": tolist(big @ x),
    }


def merge_case(rng, name, rows, cols, side_in, side_out, with_scale, weight_dtype):
    """side_*: (b, m, perm) or None. Expected W' = diag(s) Q_out W Q_in."""
    def side(spec, n):
        if spec is None:
            return None, np.eye(n)
        b, m, perm = spec
        ps = rnd_params(rng, n, b, m, 0.4, "f32")
        return {"b": b, "m": m, "permutation": perm, "params": [tolist(p) for p in ps]}, chain_dense(ps, n, b, m, perm)
    w = rng.normal(size=(rows, cols))
    w = w.astype(np.float16).astype(np.float64) if weight_dtype == "f16" else f32(w)
    qi_json, qi = side(side_in, cols)
    qo_json, qo = side(side_out, rows)
    s = f32(rng.uniform(0.5, 1.5, size=rows)) if with_scale else np.ones(rows)
    merged = np.diag(s) @ qo @ w @ qi
    return {
        "name": name, "rows": rows, "cols": cols, "weight_dtype": weight_dtype, "w": tolist(w),
        "q_in": qi_json, "q_out": qo_json, "scale": tolist(s) if with_scale else None,
        "merged": tolist(merged),
    }


def main():
    rng = np.random.default_rng(20261125)
    chains = [
        # gs-math.md section 5 worked example, exact parameters.
        {"name": "gsmath_worked_gsoft_n4_b2", "source": "gs-math.md section 5 (hand values)",
         "n": 4, "b": 2, "m": 2, "permutation": "gs", "dtype": "f32",
         "params": [[[0.5], [1 / 3]], [[1 / 3], [0.5]]], "x": [1.0, 2.0, 3.0, 4.0],
         "qx": [4.64, 1.36, 2.52, 0.52],
         "qtx": tolist(chain_dense([np.array([[0.5], [1 / 3]]), np.array([[1 / 3], [0.5]])], 4, 2, 2, "gs").T @ np.array([1.0, 2, 3, 4])),
         "dense_q": [[0.48, 0.64, 0.48, 0.36], [-0.48, 0.36, -0.48, 0.64],
                     [-0.36, -0.48, 0.64, 0.48], [0.64, -0.48, -0.36, 0.48]]},
        chain_case(rng, "oft_n12_b4", 12, 4, 1, "none", 0.5, "f32"),
        chain_case(rng, "gsoft_n16_b4", 16, 4, 2, "gs", 0.5, "f32"),
        chain_case(rng, "gsoft_n24_b4_f16", 24, 4, 2, "gs", 0.5, "f16"),
        chain_case(rng, "gsoft_n6_b2", 6, 2, 2, "gs", 1.0, "f32"),
        chain_case(rng, "gschain_n27_b3_m3", 27, 3, 3, "gs", 0.7, "f32"),
        chain_case(rng, "gsoft_n64_b8", 64, 8, 2, "gs", 0.3, "f16"),
        chain_case(rng, "boft_n16_b4_m2", 16, 4, 2, "butterfly", 0.5, "f32"),
        chain_case(rng, "boft_n32_b2_m4", 32, 2, 4, "butterfly", 0.5, "f32"),
        chain_case(rng, "gsoft_large_params_n16_b8", 16, 8, 2, "gs", 100.0, "f32"),
        peft_oft_case(rng, 16, 4),
        peft_boft_case(rng, 16, 4, 2),
        peft_boft_case(rng, 32, 4, 3),
    ]
    merges = [
        merge_case(rng, "gsoft_in_scale_8x16", 8, 16, (4, 2, "gs"), None, True, "f32"),
        merge_case(rng, "double_gsoft_12x8", 12, 8, (4, 2, "gs"), (4, 2, "gs"), True, "f32"),
        merge_case(rng, "boft_in_16x16_f16", 16, 16, (4, 2, "butterfly"), None, True, "f16"),
        merge_case(rng, "oft_in_noscale_6x9", 6, 9, (3, 1, "none"), None, False, "f32"),
    ]
    OUT.write_text(json.dumps({
        "generator": "tests/data/math/make_golden.py", "numpy": np.__version__,
        "tolerance": "relative 1e-5 for the f32 runtime (gs-math.md section 9); f16 weights: 2^-10 relative",
        "chains": chains, "merges": merges}, indent=None))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(chains)} chains, {len(merges)} merges")


if __name__ == "__main__":
    main()
