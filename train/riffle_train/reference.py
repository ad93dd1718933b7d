"""Float64 numpy reference, written from gs-math.md independently of the torch layers.

Used for golden files (computed from the parameters as stored in GGUF files) and to
cross-check the torch modules in the tests. Dense matrices are fine here: the layers
involved are tiny.
"""

from __future__ import annotations

import numpy as np

from .layers import factor_permutation  # plain index arithmetic, shared on purpose


def skew(p: np.ndarray, b: int) -> np.ndarray:
    s = np.zeros((b, b))
    iu = np.triu_indices(b, 1)
    s[iu] = p
    return s - s.T


def cayley(p: np.ndarray, b: int) -> np.ndarray:
    s = skew(np.asarray(p, dtype=np.float64), b)
    eye = np.eye(b)
    return (eye + s) @ np.linalg.inv(eye - s)


def factor_dense(params: np.ndarray, kind: str, n: int, b: int, m: int, f: int) -> np.ndarray:
    """Dense ``P_pi^T blockdiag(B) P_pi`` of factor f."""
    k = n // b
    params = np.asarray(params, dtype=np.float64).reshape(k, -1)
    bd = np.zeros((n, n))
    for j in range(k):
        bd[j * b:(j + 1) * b, j * b:(j + 1) * b] = cayley(params[j], b)
    pi = factor_permutation(kind, n, b, m, f)
    p = np.zeros((n, n))
    p[np.arange(n), pi] = 1.0
    return p.T @ bd @ p


def chain_dense(factor_params: list[np.ndarray], kind: str, n: int, b: int) -> np.ndarray:
    m = len(factor_params)
    q = np.eye(n)
    for f, prm in enumerate(factor_params):
        q = factor_dense(prm, kind, n, b, m, f) @ q
    return q


def adapted_matrix(w: np.ndarray, q_in: np.ndarray | None, q_out: np.ndarray | None,
                   scale: np.ndarray | None) -> np.ndarray:
    """``diag(s) Q_out W Q_in`` for W as an (out, in_flat) matrix."""
    w = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    if q_in is not None:
        w = w @ q_in
    if q_out is not None:
        w = q_out @ w
    if scale is not None:
        w = np.asarray(scale, dtype=np.float64)[:, None] * w
    return w


# --------------------------------------------------------------------------- networks


def relu(x):
    return np.maximum(x, 0.0)


def linear_unmerged(x, w, bias, q_in=None, q_out=None, scale=None):
    """Unmerged ``s * (Q_out (W (Q_in x))) + bias`` on a batch of rows."""
    h = x if q_in is None else x @ q_in.T
    h = h @ np.asarray(w, np.float64).T
    if q_out is not None:
        h = h @ q_out.T
    if scale is not None:
        h = h * scale
    return h + bias


def conv2d_same(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), w (O, C, kh, kw) odd square kernel, stride 1, zero padding."""
    n, c, hh, ww = x.shape
    o, _, kh, kw = w.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = np.zeros((n, c, hh + 2 * ph, ww + 2 * pw))
    xp[:, :, ph:ph + hh, pw:pw + ww] = x
    out = np.zeros((n, o, hh, ww))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + hh, j:j + ww]  # (N, C, H, W)
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + bias[None, :, None, None]


def maxpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :, :h2 * 2, :w2 * 2].reshape(n, c, h2, 2, w2, 2)
    return x.max(axis=(3, 5))


def effective_tensors(base: dict[str, np.ndarray], adapter: dict[str, np.ndarray] | None,
                      mode: str = "unmerged"):
    """Resolve an adapter over a base: returns (tensors, per-weight adapter ops).

    ``ops[weight_name] = (q_in, q_out, scale)`` (dense float64), for unmerged evaluation.
    Tensors whose names equal base names replace them.
    """
    t = {k: np.asarray(v, np.float64) for k, v in base.items()}
    ops = {}
    if adapter is None:
        return t, ops
    meta = adapter["__meta__"]
    kind, b = meta["permutation"], meta["block_size"]
    groups: dict[str, dict] = {}
    for name, val in adapter.items():
        if name == "__meta__":
            continue
        for tag in (".oft_in.", ".oft_out."):
            if tag in name:
                w, f = name.split(tag)
                groups.setdefault(w, {}).setdefault(tag.strip("."), {})[int(f)] = val
                break
        else:
            if name.endswith(".oft_scale"):
                groups.setdefault(name[:-len(".oft_scale")], {})["scale"] = np.asarray(val, np.float64)
            elif name in t:
                t[name] = np.asarray(val, np.float64)
            else:
                raise KeyError(f"adapter tensor {name} matches no base tensor")
    for w, g in groups.items():
        shape = t[w].shape
        out_f, in_f = shape[0], int(np.prod(shape[1:]))
        q_in = q_out = None
        if "oft_in" in g:
            fs = g["oft_in"]
            q_in = chain_dense([fs[i] for i in range(len(fs))], kind, in_f, b)
        if "oft_out" in g:
            fs = g["oft_out"]
            q_out = chain_dense([fs[i] for i in range(len(fs))], kind, out_f, b)
        ops[w] = (q_in, q_out, g.get("scale"))
    return t, ops


def mlp_forward(x, tensors, ops, layer_count):
    h = np.asarray(x, np.float64)
    for i in range(layer_count):
        wn = f"layers.{i}.weight"
        q_in, q_out, s = ops.get(wn, (None, None, None))
        h = linear_unmerged(h, tensors[wn], tensors[f"layers.{i}.bias"], q_in, q_out, s)
        if i + 1 < layer_count:
            h = relu(h)
    return h


def cnn_forward(x, tensors, ops, conv_count, dense_count, c=1, hgt=8, wid=8):
    h = np.asarray(x, np.float64).reshape(-1, c, hgt, wid)
    for i in range(conv_count):
        wn = f"conv.{i}.weight"
        w = tensors[wn]
        if wn in ops:
            q_in, q_out, s = ops[wn]
            wm = adapted_matrix(w, q_in, q_out, None).reshape(w.shape)
            h = conv2d_same(h, wm, np.zeros(w.shape[0]))
            if s is not None:
                h = h * s[None, :, None, None]
            h = h + tensors[f"conv.{i}.bias"][None, :, None, None]
        else:
            h = conv2d_same(h, w, tensors[f"conv.{i}.bias"])
        h = maxpool2(relu(h))
    h = h.reshape(h.shape[0], -1)
    for i in range(dense_count):
        wn = f"dense.{i}.weight"
        q_in, q_out, s = ops.get(wn, (None, None, None))
        h = linear_unmerged(h, tensors[wn], tensors[f"dense.{i}.bias"], q_in, q_out, s)
        if i + 1 < dense_count:
            h = relu(h)
    return h
