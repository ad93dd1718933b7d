"""The lean unmerged adapted linear (``path="lean"``) against the plain one: same outputs and
gradients in float64, same trained parameters in float32, and what it keeps for backward."""

import os

import pytest
import torch
import torch.nn as nn

from riffle_train.layers import ADAPTER_PATHS, AdaptedLinear, AdapterConfig, OrthogonalChain, cayley, inject, resolve_path

from test_layers import _randomize  # the adapter tests' one randomiser

D = torch.float64


class _Shared(nn.Module):
    """q/k/v-like linears on one shared input, then a gated MLP (gate/up share their input)."""

    def __init__(self, d=32, kv=16, ff=48):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, kv, bias=False), nn.Linear(d, kv)
        self.o = nn.Linear(kv, d, bias=False)
        self.gate, self.up, self.down = nn.Linear(d, ff, bias=False), nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        a = torch.softmax(self.q(x)[..., :16] @ self.k(x).mT, -1) @ self.v(x)
        x = x + self.o(a)
        return x + self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


NAMES = ["q", "k", "v", "o", "gate", "up", "down"]


def _run(path, method, b, factors, scale, dtype=D, seed=1):
    torch.manual_seed(seed)
    model = _Shared().to(dtype)
    inject(model, NAMES, method=method, block_size=b, factors=factors, scale=scale, path=path)
    assert model.riffle_adapter["path"] == path
    _randomize(model)
    x = torch.randn(3, 5, 32, dtype=dtype, requires_grad=True)
    y = model(x)
    y.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return y.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("method,b,factors", [("gsoft", 4, None), ("double_gsoft", 4, None), ("oft", 4, None),
                                              ("boft", 2, 3), ("gs", 4, 3)])
@pytest.mark.parametrize("scale", [True, False])
def test_lean_matches_plain_in_float64(method, b, factors, scale):
    y0, dx0, g0 = _run("plain", method, b, factors, scale)
    for path in ("lean", "lean_keep"):
        y1, dx1, g1 = _run(path, method, b, factors, scale)
        assert torch.allclose(y0, y1, rtol=0, atol=1e-12)
        assert torch.allclose(dx0, dx1, rtol=0, atol=1e-11)
        m = 1 if method == "oft" else factors or 2
        assert g0.keys() == g1.keys() and len(g0) == 7 * (m * (1 + (method == "double_gsoft")) + scale)
        for n in g0:
            assert torch.allclose(g0[n], g1[n], rtol=1e-11, atol=1e-11), (path, n)
            assert g0[n].abs().max() > 0, n


@pytest.mark.parametrize("path,zero_scale", [("lean", False), ("lean_keep", False), ("lean_keep", True)])
def test_lean_gradients_match_finite_differences(path, zero_scale):
    """Against central differences, not only against the plain path: the input, every factor's
    parameters on both sides, the scale (also with a zero entry, where lean_keep cannot divide
    by it), and a weight and bias made trainable."""
    torch.manual_seed(4)
    lin = AdaptedLinear(nn.Linear(8, 4).double(), AdapterConfig("double_gsoft", 2, 2, True))
    lin.path = path
    _randomize(lin)
    if zero_scale:
        with torch.no_grad():
            lin.oft_scale[1] = 0
    lin.base.weight.requires_grad_(True)
    lin.base.bias.requires_grad_(True)
    params = [p for p in lin.parameters() if p.requires_grad]
    assert len(params) == 7
    x = torch.randn(2, 3, 8, dtype=D, requires_grad=True)
    y = lin(x)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    eps = 1e-6
    for p in [x] + params:
        flat = p.detach().view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + eps
                hi = float((lin(x) * dy).sum())
                flat[i] = old - eps
                lo = float((lin(x) * dy).sum())
                flat[i] = old
            num = (hi - lo) / (2 * eps)
            assert abs(num - float(p.grad.view(-1)[i])) < 1e-7 * (1 + abs(num)), (tuple(p.shape), i)


@pytest.mark.parametrize("method", ["double_gsoft", "boft"])
def test_lean_trains_to_the_same_float32_parameters_as_plain(method):
    """Same fp32 training run through each path: the parameters (what an export writes) end equal."""
    finals = []
    for path in ("plain", "lean", "lean_keep"):
        torch.manual_seed(2)
        model = _Shared()
        inject(model, NAMES, method=method, block_size=4 if method == "double_gsoft" else 2, path=path)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            x = torch.randn(4, 6, 32)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    # Chains of other shapes (BOFT here) run the plain path's operations in the same order on
    # the lean path: bit-equal parameters, so equal exported files. Paired GS chains take
    # the grouped function (its own order of operations) and lean_keep divides by the scale:
    # equal to rounding.
    for n in finals[0]:
        if method == "boft":
            assert torch.equal(finals[0][n], finals[1][n]), n
        assert torch.allclose(finals[0][n], finals[1][n], rtol=1e-5, atol=1e-6), n
        assert torch.allclose(finals[0][n], finals[2][n], rtol=1e-5, atol=1e-6), n


def _saved_storages(model, x):
    """Storages autograd keeps for backward in one forward, leaving out the model's parameters."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return seen


@pytest.mark.parametrize("method", ["gsoft", "double_gsoft", "boft"])
def test_lean_keeps_one_copy_of_a_shared_input_and_nothing_else(method):
    """Three linears on one input keep that input once and no other activation: only
    references to parameters, and for GS chains of the grouped form each chain's Cayley
    blocks (``2 n b`` values, parameter-sized); the plain path keeps at least one more
    activation-sized tensor per layer (GSOFT's batched group product keeps its regrouped input)."""

    class Qkv(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)

        def forward(self, x):
            return self.q(x) + self.k(x) + self.v(x)

    blocks = 2 * 64 * 4 * 4  # bytes of one chain's Cayley blocks: 2 factors of 16 blocks of 4 x 4
    for path in ("plain", "lean", "lean_keep"):
        torch.manual_seed(0)
        model = Qkv()
        inject(model, ["q", "k", "v"], method=method, block_size=4, path=path)
        x = torch.randn(8, 32, 64)
        kept = _saved_storages(model, x)
        own = kept.pop(x.untyped_storage().data_ptr(), None)
        small = [n for n in kept.values() if n <= blocks]
        large = sorted(n for n in kept.values() if n > blocks)
        if path == "plain":
            assert len([n for n in kept.values() if n >= x.nbytes]) >= 3
            continue
        assert own == x.nbytes
        # lean_keep also keeps the three outputs
        assert large == ([] if path == "lean" else [x.nbytes] * 3)
        # one set of blocks per chain on the grouped form, none otherwise
        chains = 3 * (2 if method == "double_gsoft" else 1)
        assert len(small) == (0 if method == "boft" else chains), (path, kept)


def test_paths_resolve_and_env_var(monkeypatch):
    monkeypatch.delenv("RIFFLE_ADAPTER_PATH", raising=False)
    assert resolve_path(None, None, False, cuda=False) == "lean_keep"
    assert resolve_path(None, None, False, cuda=True) == "bank"
    assert resolve_path(None, None, True, cuda=True) == "bank_lean"
    assert resolve_path(None, False, False, cuda=True) == "lean_keep"
    assert resolve_path("plain", True, True, cuda=True) == "plain"
    for p in ADAPTER_PATHS:
        monkeypatch.setenv("RIFFLE_ADAPTER_PATH", p)
        assert resolve_path(None, None, False, cuda=True) == p
        model = nn.Sequential(nn.Linear(8, 8))
        inject(model, ["0"], block_size=4)
        assert model.riffle_adapter["path"] == p
        assert (model.riffle_adapter["bank"] is not None) == p.startswith("bank")
        assert model[0].path == (p if p in ("plain", "lean_keep") else "lean")
        # the explicit older switch still wins over the environment
        assert resolve_path(None, True, False, cuda=False) == "bank"
    monkeypatch.setenv("RIFFLE_ADAPTER_PATH", "fast")
    with pytest.raises(ValueError, match="RIFFLE_ADAPTER_PATH"):
        resolve_path(None, None, False, cuda=False)
    with pytest.raises(ValueError, match="unknown adapter path"):
        resolve_path("fast", None, False, cuda=False)
    assert os.environ["RIFFLE_ADAPTER_PATH"] == "fast"


def test_lean_under_bf16_autocast_matches_plain():
    """Under autocast the recomputation runs in the forward's autocast state: the gradients are
    the plain path's to bf16 precision and have the parameters' dtype."""
    grads = []
    for path in ("plain", "lean", "lean_keep"):
        torch.manual_seed(5)
        model = _Shared()
        inject(model, NAMES, method="double_gsoft", block_size=4, path=path)
        _randomize(model)
        x = torch.randn(3, 5, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        y.float().square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for other in (1, 2):
        for n in grads[0]:
            ref = grads[0][n]
            assert grads[other][n].dtype == ref.dtype == torch.float32
            assert (grads[other][n] - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3, (other, n)


def _kernels():
    from riffle_train import gs_kernel

    if not gs_kernel.available():
        pytest.skip("no C compiler: the GS chain kernels are not built")
    return gs_kernel


@pytest.mark.parametrize("n", [64, 192, 576])
def test_cpu_kernels_match_the_factor_by_factor_chain(n):
    """The C kernels against the factor-by-factor path in float64 (run in float32): values of
    Q x and Q^T x, the input gradient and both factors' block gradients, for rows of any count."""
    gs_kernel = _kernels()
    torch.manual_seed(n)
    c = OrthogonalChain(n, 8, 2, "gs", dtype=D)
    with torch.no_grad():
        for p in c.params:
            p.normal_(0, 0.5)
    blocks = cayley(torch.cat(list(c.params)), 8).detach()
    x = torch.randn(3, 7, n, dtype=D)
    dy = torch.randn(3, 7, n, dtype=D)
    for transpose in (False, True):
        got = gs_kernel.apply(x.float(), blocks.float(), transpose).double()
        assert (got - c.run_factors(x, transpose, list(blocks.split(n // 8)))).abs().max() < 1e-5
    bq, xq = blocks.clone().requires_grad_(), x.clone().requires_grad_()
    (c.run_factors(xq, False, list(bq.split(n // 8))) * dy).sum().backward()
    dx, db = gs_kernel.backward(x.float(), dy.float(), blocks.float())
    assert (dx.double() - xq.grad).abs().max() < 1e-5 * xq.grad.abs().max()
    assert (db.double() - bq.grad).abs().max() < 1e-5 * bq.grad.abs().max()
    assert gs_kernel.backward(x.float(), dy.float(), blocks.float(), need_x=False)[0] is None
    # the kernels' Cayley blocks, also of parameters far from zero, to float32 rounding
    for sd in (0.1, 3.0):
        p = torch.randn(2 * n // 8, 28, dtype=D) * sd
        got = gs_kernel.cayley(p.float()).double()
        assert (got - cayley(p, 8)).abs().max() < 4e-6
        assert (got.mT @ got - torch.eye(8, dtype=D)).abs().max() < 1e-5
    # sizes the C code would read past are refused before it runs
    for bad in ((x.float()[..., :-8], blocks.float()), (x.float(), blocks.float()[1:]), (x, blocks.float())):
        with pytest.raises(ValueError, match="gs_kernel"):
            gs_kernel.apply(*bad)
    for bad in (torch.zeros(4, 27), torch.zeros(4, 28, dtype=D), torch.zeros(28)):
        with pytest.raises(ValueError, match="gs_kernel"):
            gs_kernel.cayley(bad)
    with pytest.raises(ValueError, match="gs_kernel"):
        gs_kernel.backward(x.float(), dy.float()[:, :-1], blocks.float())


@pytest.mark.parametrize("method", ["gsoft", "double_gsoft"])
@pytest.mark.parametrize("path", ["lean", "lean_keep"])
def test_grouped_layers_on_the_kernels_match_their_pytorch_form(method, path, monkeypatch):
    """float32 layers of 8 x 8 blocks on 64 and 192 features: outputs and every gradient with
    the kernels equal those with RIFFLE_TRAIN_KERNELS=0 (the grouped PyTorch form) to float32
    rounding, and those of the plain path."""
    _kernels()
    runs = []
    for env in ("1", "0", "plain"):
        monkeypatch.setenv("RIFFLE_TRAIN_KERNELS", "0" if env == "0" else "1")
        torch.manual_seed(3)
        lin = AdaptedLinear(nn.Linear(192, 64), AdapterConfig(method, 8, None, True))
        lin.path = "plain" if env == "plain" else path
        _randomize(lin)
        x = torch.randn(2, 5, 192, requires_grad=True)
        y = lin(x)
        (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        runs.append((y.detach(), x.grad, {n: p.grad for n, p in lin.named_parameters() if p.requires_grad}))
    for y, dx, grads in runs[1:]:
        assert torch.allclose(runs[0][0], y, rtol=1e-5, atol=1e-5)
        assert torch.allclose(runs[0][1], dx, rtol=1e-4, atol=1e-5)
        for n, g in grads.items():
            assert torch.allclose(runs[0][2][n], g, rtol=1e-4, atol=1e-5), n


def test_kernels_fall_back_without_a_compiler_or_a_loadable_library(tmp_path, monkeypatch):
    """No compiler, a cache that cannot be written, or a damaged cached library: no kernels (the
    layers run their PyTorch form), a warning where something was tried, never an error."""
    from riffle_train import gs_kernel

    def fresh():
        gs_kernel._library.cache_clear()
        return gs_kernel._library()

    try:
        monkeypatch.setenv("CC", "no-such-compiler-riffle")
        assert fresh() is None
        monkeypatch.delenv("CC")
        if gs_kernel.shutil.which("cc") is None:
            pytest.skip("no C compiler")
        blocked = tmp_path / "file"
        blocked.write_text("")
        monkeypatch.setenv("RIFFLE_CACHE", str(blocked))  # kernels/ cannot be made under a file
        with pytest.warns(UserWarning, match="not built"):
            assert fresh() is None
        monkeypatch.setenv("RIFFLE_CACHE", str(tmp_path / "cache"))
        assert fresh() is not None and gs_kernel.library_path().is_file()
        monkeypatch.setenv("RIFFLE_CACHE", str(tmp_path / "damaged"))
        gs_kernel.library_path().parent.mkdir(parents=True)
        gs_kernel.library_path().write_bytes(b"not a library")
        with pytest.warns(UserWarning, match="not loaded"):
            assert fresh() is None
    finally:
        gs_kernel._library.cache_clear()
