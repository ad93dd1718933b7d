import numpy as np
import pytest
import torch
import torch.nn as nn

from riffle_train import reference
from riffle_train.layers import (AdaptedConv2d, AdaptedLinear, AdapterConfig, OrthogonalChain, cayley,
                                 factor_permutation, inject, merge_adapters, packed_from_blocks,
                                 trainable_parameters, unmerge_adapters)

D = torch.float64


def test_gsoft_worked_example():
    c = OrthogonalChain(4, 2, 2, "gs", dtype=D)
    with torch.no_grad():
        c.params[0].copy_(torch.tensor([[1 / 2], [1 / 3]]))
        c.params[1].copy_(torch.tensor([[1 / 3], [1 / 2]]))
    y = c(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D))
    assert torch.allclose(y, torch.tensor([4.64, 1.36, 2.52, 0.52], dtype=D), atol=1e-12)
    q = torch.tensor([[0.48, 0.64, 0.48, 0.36], [-0.48, 0.36, -0.48, 0.64],
                      [-0.36, -0.48, 0.64, 0.48], [0.64, -0.48, -0.36, 0.48]], dtype=D)
    assert torch.allclose(c.dense(), q, atol=1e-12)
    assert factor_permutation("gs", 4, 2, 2, 1) == [0, 2, 1, 3]


def test_cayley_examples():
    c3 = cayley(torch.tensor([1.0, 2.0, 3.0], dtype=D), 3)
    want = torch.tensor([[5, -10, 10], [-14, -5, 2], [2, -10, -11]], dtype=D) / 15
    assert torch.allclose(c3, want, atol=1e-12)
    c2 = cayley(torch.tensor([0.5], dtype=D), 2)
    assert torch.allclose(c2, torch.tensor([[0.6, 0.8], [-0.8, 0.6]], dtype=D), atol=1e-12)
    assert torch.equal(cayley(torch.zeros(4, 28), 8), torch.eye(8).expand(4, 8, 8))
    # packed order is triu order; packing full tensors takes the skew part
    a = torch.randn(3, 5, 5, dtype=D)
    p = packed_from_blocks(a)
    s = (a - a.transpose(-1, -2)) / 2
    assert torch.allclose(cayley(p, 5), reference_cayley(s), atol=1e-12)


def reference_cayley(s):
    eye = torch.eye(s.shape[-1], dtype=s.dtype)
    return (eye + s) @ torch.linalg.inv(eye - s)


def test_permutations():
    assert factor_permutation("gs", 6, 2, 2, 1) == [0, 3, 1, 4, 2, 5]
    assert factor_permutation("gs", 6, 3, 2, 1) == [0, 2, 4, 1, 3, 5]
    assert factor_permutation("butterfly", 8, 2, 2, 0) == [0, 2, 1, 3, 4, 6, 5, 7]
    assert factor_permutation("butterfly", 8, 2, 2, 1) == list(range(8))
    # n = 16, b = 4, level 2 (factor 0 of a 3-factor chain)
    assert factor_permutation("butterfly", 16, 4, 3, 0) == [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15]
    assert factor_permutation("none", 5, 5, 1, 0) == list(range(5))


CHAINS = [(64, 8, 2, "gs"), (192, 8, 2, "gs"), (48, 4, 2, "gs"), (24, 4, 3, "gs"), (30, 3, 2, "gs"), (16, 4, 3, "butterfly"),
          (32, 4, 2, "butterfly"), (12, 4, 1, "none"), (9, 3, 2, "gs")]


@pytest.mark.parametrize("n,b,m,perm", CHAINS)
def test_chain_matches_reference_and_is_orthogonal(n, b, m, perm):
    torch.manual_seed(n + b + m)
    c = OrthogonalChain(n, b, m, perm, dtype=D)
    with torch.no_grad():
        for p in c.params:
            p.normal_(0, 0.7)
    q = c.dense()
    ref = reference.chain_dense([p.detach().numpy() for p in c.params], perm, n, b)
    assert np.abs(q.detach().numpy() - ref).max() < 1e-12
    assert torch.allclose(q.T @ q, torch.eye(n, dtype=D), atol=1e-12)
    x = torch.randn(5, n, dtype=D)
    assert torch.allclose(c(x), x @ q.T, atol=1e-12)
    assert torch.allclose(c.apply_transpose(x), x @ q, atol=1e-12)
    # f32 orthogonality within gs-math.md's bound
    c32 = c.float()
    q32 = c32.dense().detach()
    assert (q32.T @ q32 - torch.eye(n)).abs().max() < m * 1e-5


@pytest.mark.parametrize("n,b", [(64, 8), (192, 8), (48, 4), (9, 3), (4, 2)])
def test_grouped_form_of_a_two_factor_gs_chain_equals_its_factors(n, b):
    """A two-factor GS chain on a multiple of b^2 features runs as s = n / b^2 dense groups
    (one batched product); values and gradients (to the input and to the packed parameters)
    equal the factor-by-factor path's, forward and transposed."""
    torch.manual_seed(n + b)
    c = OrthogonalChain(n, b, 2, "gs", dtype=D)
    assert c.paired() and not OrthogonalChain(n, b, 1, "none", dtype=D).paired()
    with torch.no_grad():
        for p in c.params:
            p.normal_(0, 0.7)
    for transpose in (False, True):
        grads = []
        for run in (c._run, c.run_factors):
            x = torch.randn(2, 3, n, dtype=D, generator=torch.Generator().manual_seed(1)).requires_grad_()
            y = run(x, transpose, None)
            (y * torch.arange(y.numel(), dtype=D).reshape(y.shape).sin()).sum().backward()
            grads.append((y.detach(), x.grad, [p.grad.clone() for p in c.params]))
            c.zero_grad()
        (y0, gx0, gp0), (y1, gx1, gp1) = grads
        assert torch.allclose(y0, y1, atol=1e-12) and torch.allclose(gx0, gx1, atol=1e-12)
        assert all(torch.allclose(a, b_, atol=1e-12) for a, b_ in zip(gp0, gp1))


@pytest.mark.parametrize("m,perm", [(2, "gs"), (2, "butterfly"), (1, "none")])
def test_inference_keeps_the_blocks_until_a_parameter_changes(m, perm):
    """Without autograd a chain solves its Cayley blocks once and reuses them (generation
    calls it at every token); an in-place update (an optimizer step, ``copy_``) or a new
    parameter is seen at the next call, and every answer equals a fresh computation."""
    torch.manual_seed(3)
    n, b = 64, 8
    c = OrthogonalChain(n, b, m, perm, dtype=D)
    x = torch.randn(4, n, dtype=D)

    def fresh():
        with torch.enable_grad():
            return c(x).detach()

    with torch.no_grad():
        for p in c.params:
            p.normal_(0, 0.5)
        first = c(x)
        assert torch.equal(first, fresh())
        blocks = c.blocks()
        assert all(a is b_ for a, b_ in zip(blocks, c.blocks()))  # reused, not solved again
        c.params[0].add_(0.25)  # in place: the version counter moves
        second = c(x)
        assert not torch.allclose(first, second) and torch.equal(second, fresh())
        c.params[0] = nn.Parameter(c.params[0].detach() * 2)  # a new parameter
        third = c(x)
        assert not torch.allclose(second, third) and torch.equal(third, fresh())


def test_gs_density():
    # b >= k: dense; b < k with m = 2: structural zeros
    for n, b, dense in ((64, 8, True), (24, 4, False)):
        c = OrthogonalChain(n, b, 2, "gs", dtype=D)
        with torch.no_grad():
            for p in c.params:
                p.normal_(0, 0.5)
        assert bool((c.dense().abs() > 1e-14).all()) == dense


def _randomize(model, std=0.3):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".params." in n:
                p.normal_(0, std)
            if n.endswith("oft_scale"):
                p.uniform_(0.5, 1.5)


@pytest.mark.parametrize("method,b,factors", [("gsoft", 4, None), ("double_gsoft", 4, None), ("oft", 4, None),
                                              ("boft", 2, 3), ("gs", 2, 3)])
def test_adapted_linear_forward_merge_unmerge(method, b, factors):
    torch.manual_seed(0)
    base = nn.Linear(16, 8).double()
    lin = AdaptedLinear(base, AdapterConfig(method, b, factors, True))
    _randomize(lin)
    x = torch.randn(7, 16, dtype=D)
    y = lin(x)
    # float64 numpy reference of the unmerged formula
    qi = reference.chain_dense([p.detach().numpy() for p in lin.oft_in.params], lin.oft_in.permutation, 16, b)
    qo = None if lin.oft_out is None else reference.chain_dense(
        [p.detach().numpy() for p in lin.oft_out.params], lin.oft_out.permutation, 8, b)
    ref = reference.linear_unmerged(x.numpy(), base.weight.detach().numpy(), base.bias.detach().numpy(),
                                    qi, qo, lin.oft_scale.detach().numpy())
    assert np.abs(y.detach().numpy() - ref).max() < 1e-12
    w0 = base.weight.detach().clone()
    lin.merge()
    assert torch.allclose(lin(x), y, atol=1e-12)
    assert torch.allclose(base.weight, torch.from_numpy(reference.adapted_matrix(
        w0.numpy(), qi, qo, lin.oft_scale.detach().numpy())), atol=1e-12)
    lin.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-12)
    assert torch.allclose(lin(x), y, atol=1e-12)


def test_adapted_linear_f32_close_to_f64():
    torch.manual_seed(3)
    lin = AdaptedLinear(nn.Linear(64, 64), AdapterConfig("double_gsoft", 8))
    _randomize(lin)
    x = torch.randn(4, 64)
    y32 = lin(x)
    y64 = lin.double()(x.double())
    assert (y32.double() - y64).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["gsoft", "double_gsoft", "oft", "boft"])
def test_adapted_conv(method):
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 3, padding=1).double()
    mod = AdaptedConv2d(conv, AdapterConfig(method, 4, None, True))
    _randomize(mod)
    x = torch.randn(2, 8, 6, 6, dtype=D)
    y = mod(x)
    w = conv.weight.detach().numpy()
    qi = reference.chain_dense([p.detach().numpy() for p in mod.oft_in.params], mod.oft_in.permutation, 72, 4)
    qo = None if mod.oft_out is None else reference.chain_dense(
        [p.detach().numpy() for p in mod.oft_out.params], mod.oft_out.permutation, 8, 4)
    wm = reference.adapted_matrix(w, qi, qo, mod.oft_scale.detach().numpy()).reshape(w.shape)
    ref = reference.conv2d_same(x.numpy(), wm, conv.bias.detach().numpy())
    assert np.abs(y.detach().numpy() - ref).max() < 1e-11
    mod.merge()
    assert torch.allclose(mod(x), y, atol=1e-11)
    mod.unmerge()
    assert torch.allclose(mod(x), y, atol=1e-11)


def test_zero_init_is_identity_and_inject_freezes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(3, 16)
    y0 = model(x)
    inject(model, ["0"], method="gsoft", block_size=4, modules_to_save=["2"])
    assert isinstance(model[0], AdaptedLinear)
    assert torch.equal(model(x), y0)  # zero parameters and unit scale: bit-exact
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"0.oft_in.params.0", "0.oft_in.params.1", "0.oft_scale", "2.weight", "2.bias"}
    assert trainable_parameters(model) == 2 * 4 * 6 + 16 + 16 * 4 + 4
    _randomize(model)
    y = model(x)
    merge_adapters(model)
    assert torch.allclose(model(x), y, atol=1e-5)
    unmerge_adapters(model)
    assert torch.allclose(model(x), y, atol=1e-5)


def test_inject_errors():
    with pytest.raises(ValueError):
        inject(nn.Sequential(nn.Linear(10, 10)), ["0"], block_size=4)  # 4 does not divide 10
    with pytest.raises(ValueError):
        inject(nn.Sequential(nn.Linear(8, 8)), ["nope"], block_size=4)


class _Mixed(nn.Module):
    """Layers of three shapes (two share one) and a convolution: every bank group kind."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16, bias=False)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.conv = nn.Conv2d(2, 4, 2)  # weight as a (4, 8) matrix

    def forward(self, x, img):
        h = self.down(torch.relu(self.up(self.a(x) + self.b(x))))
        return h.sum(-1) + self.conv(img).sum((1, 2, 3))[:, None]


@pytest.mark.parametrize("method,b,factors", [("gsoft", 4, None), ("double_gsoft", 4, None), ("oft", 4, None),
                                              ("boft", 2, 2), ("gs", 4, 3)])
@pytest.mark.parametrize("scale", [True, False])
def test_weight_bank_matches_per_layer_path(method, b, factors, scale):
    """The batched weight bank computes the same outputs and gradients as each layer's
    own path, and the bank is used only inside the model's forward."""
    torch.manual_seed(3)
    outs, grads = [], []
    for bank, lean in ((False, False), (True, False), (True, True)):
        torch.manual_seed(3)
        model = _Mixed().to(D)
        inject(model, ["a", "b", "up", "down", "conv"], method=method, block_size=b, factors=factors,
               scale=scale, weight_bank=bank, memory_efficient=lean)
        assert (model.riffle_adapter["bank"] is not None) == bank
        _randomize(model)
        x = torch.randn(3, 5, 16, dtype=D)
        img = torch.randn(3, 2, 3, 3, dtype=D)
        y = model(x, img)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        assert all(m.bank_weight is None for m in (model.a, model.b, model.up, model.down, model.conv))
    for other in (1, 2):
        assert torch.allclose(outs[0], outs[other], atol=1e-10)
        assert grads[0].keys() == grads[other].keys()
        for n in grads[0]:
            assert torch.allclose(grads[0][n], grads[other][n], atol=1e-9), (other, n)


class _Blocks(nn.Module):
    """Three numbered blocks of two linears each, as a transformer's layers are named."""

    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList(nn.ModuleDict({"up": nn.Linear(16, 32), "down": nn.Linear(32, 16)})
                                   for _ in range(3))

    def forward(self, x):
        for blk in self.layer:
            x = x + blk["down"](torch.tanh(blk["up"](x)))
        return x


def test_memory_efficient_bank_holds_one_block_of_weights_at_a_time():
    """The memory-efficient bank computes each block's adapted weights when the block's
    first layer runs and frees them once its last layer has: while block 2 runs, block
    0's weights are gone and none of block 2's were made before; outputs and gradients
    equal the per-layer path's."""
    import gc
    import weakref

    from riffle_train import layers

    made: list[list] = []  # per chunk made, weak references to its weights' storage
    real = layers._BankChunk.materialize

    def spy(chunk):
        real(chunk)
        made.append([weakref.ref(m.bank_weight._base) for m in chunk.mods])

    outs, grads = [], []
    for bank in (False, True):
        torch.manual_seed(7)
        model = _Blocks().to(D)
        inject(model, ["up", "down"], method="gsoft", block_size=4, weight_bank=bank, memory_efficient=bank)
        _randomize(model)
        seen = []

        def at_block_2(_mod, _args):
            gc.collect()
            seen.append((len(made), [r() is None for r in made[0]] if made else []))

        model.layer[2]["up"].register_forward_pre_hook(at_block_2)
        x = torch.randn(4, 16, dtype=D)
        layers._BankChunk.materialize = spy
        try:
            y = model(x)
        finally:
            layers._BankChunk.materialize = real
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        if bank:
            # Blocks 0 and 1 made (block 2 not yet), and block 0's weights already freed.
            assert seen == [(2, [True, True])]
            assert len(made) == 3
        made.clear()
    assert torch.allclose(outs[0], outs[1], atol=1e-10)
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-9), n


def test_memory_efficient_bank_under_bf16_autocast_matches_the_bank():
    """The lean backward keeps what F.linear keeps under autocast and gives the same
    gradients as the bank's plain product, to bf16 precision."""
    grads = []
    for lean in (False, True):
        torch.manual_seed(5)
        model = _Mixed()
        inject(model, ["a", "b", "up", "down"], method="double_gsoft", block_size=4, weight_bank=True,
               memory_efficient=lean)
        _randomize(model)
        x, img = torch.randn(3, 5, 16), torch.randn(3, 2, 3, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x, img)
        y.float().square().sum().backward()
        grads.append({n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad})
    for n in grads[0]:
        ref = grads[0][n]
        assert grads[1][n].dtype == ref.dtype
        assert (grads[1][n] - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3, n


def test_weight_bank_zero_init_is_bit_exact_and_merge_skips_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    x = torch.randn(4, 16)
    y0 = model(x)
    inject(model, ["0", "2"], method="gsoft", block_size=4, weight_bank=True)
    assert torch.equal(model(x), y0)
    _randomize(model)
    y = model(x)
    merge_adapters(model)  # merged layers run the base; the bank leaves them alone
    assert torch.allclose(model(x), y, atol=1e-5)
    assert all(m.bank_weight is None for m in (model[0], model[2]))
    unmerge_adapters(model)
    assert torch.allclose(model(x), y, atol=1e-5)
    model.riffle_adapter["bank"].remove()
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert torch.allclose(model(x), y, atol=1e-5)


def test_cayley_of_negated_parameters_is_the_transpose():
    p = torch.randn(6, 28, dtype=D)
    c, ct = cayley(p, 8), cayley(-p, 8)
    assert torch.allclose(c.mT, ct, atol=1e-12)
    assert torch.allclose(c @ c.mT, torch.eye(8, dtype=D).expand(6, 8, 8), atol=1e-12)
