"""LRN (§3.3) against a direct loop over the formula, and the two implementations against each other."""

import pytest
import torch

from alexnet.model.lrn import LocalResponseNorm, stock_lrn
from alexnet.model.spec import LRN_SIZE
from alexnet.ops.fast_lrn import fusable, relu_lrn_maxpool


def direct_lrn(a, groups, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """FACTS §2, written out: b_c = a_c / (k + alpha/n · Σ_{j=c-n/2}^{c+n/2} a_j²)^beta, the sum
    running over the maps of c's own tower only (zero past its first and last map)."""
    N, C, H, W = a.shape
    per = C // groups
    b = torch.empty_like(a)
    for c in range(C):
        tower = c // per
        lo, hi = max(tower * per, c - n // 2), min((tower + 1) * per - 1, c + n // 2)
        s = torch.zeros_like(a[:, 0])
        for j in range(lo, hi + 1):
            s += a[:, j] ** 2
        b[:, c] = a[:, c] / (k + alpha / n * s) ** beta
    return b


def activations(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # ReLU outputs on the paper's 0-255 input scale: large enough that the window sum matters.
    return (torch.randn(shape, generator=g, dtype=dtype) * 80).relu()


@pytest.mark.parametrize("impl", ["fast", "stock"])
@pytest.mark.parametrize("channels,groups", [(96, 2), (20, 2), (12, 1), (7, 1)])
def test_lrn_equals_the_formula(impl, channels, groups):
    a = activations((3, channels, 5, 4))
    expected = direct_lrn(a, groups)
    got = LocalResponseNorm(channels, groups=groups, impl=impl)(a.float())
    torch.testing.assert_close(got, expected.float(), rtol=1e-6, atol=1e-6)
    # The effect is not negligible at this scale: a plain identity would fail the comparison.
    assert (expected / a.clamp_min(1e-9))[a > 0].min() < 0.5


@pytest.mark.parametrize("impl", ["fast", "stock"])
def test_lrn_window_never_crosses_the_tower_boundary(impl):
    lrn = LocalResponseNorm(96, groups=2, impl=impl)
    a = activations((2, 96, 3, 3)).float()
    b = a.clone()
    b[:, 48:50] *= 10  # tower 1's first maps, right beside tower 0's last ones
    ya, yb = lrn(a), lrn(b)
    torch.testing.assert_close(ya[:, :48], yb[:, :48], rtol=0, atol=0)
    assert not torch.allclose(ya[:, 50:52], yb[:, 50:52])
    # The same change inside one 96-map window (as Caffe computes it) does reach map 47.
    one = LocalResponseNorm(96, groups=1, impl=impl)
    assert not torch.allclose(one(a)[:, 46:48], one(b)[:, 46:48])


def test_stock_matches_torch_local_response_norm_per_half():
    a = activations((2, 96, 6, 6)).float()
    ref = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    expected = torch.cat([ref(a[:, :48]), ref(a[:, 48:])], dim=1)
    torch.testing.assert_close(stock_lrn(a, groups=2), expected, rtol=0, atol=0)


@pytest.mark.parametrize("shape,groups", [((4, 96, 55, 55), 2), ((3, 256, 27, 27), 2), ((2, 48, 9, 7), 1),
                                          ((5, 10, 3, 3), 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_matches_stock_in_value_and_gradient(shape, groups, channels_last):
    x = activations(shape, dtype=torch.float32, seed=1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    results = {}
    for impl in ("fast", "stock"):
        xi = x.clone().requires_grad_(True)
        y = LocalResponseNorm(shape[1], groups=groups, impl=impl)(xi)
        y.backward(g)
        results[impl] = (y.detach(), xi.grad)
    (yf, gf), (ys, gs) = results["fast"], results["stock"]
    torch.testing.assert_close(yf, ys, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gf, gs, rtol=1e-5, atol=1e-6 * gs.abs().max().item())


def test_fast_gradient_is_exact_in_float64():
    x = activations((2, 10, 3, 3), seed=3).requires_grad_(True)
    lrn = LocalResponseNorm(10, groups=2, impl="fast")
    assert torch.autograd.gradcheck(lrn, (x,), eps=1e-3, atol=1e-7)


def test_fast_works_through_the_batch_in_chunks(monkeypatch):
    """A tiny chunk size exercises the chunked CPU path; the result must not depend on it."""
    import alexnet.ops.fast_lrn as lrn_module

    x = activations((7, 16, 5, 5), dtype=torch.float32).requires_grad_(True)
    lrn = LocalResponseNorm(16, groups=2, impl="fast")
    y_whole = lrn(x)
    (g_whole,) = torch.autograd.grad(y_whole.sum(), x)
    monkeypatch.setattr(lrn_module, "CPU_CHUNK_BYTES", 1)
    y_chunked = lrn(x)
    (g_chunked,) = torch.autograd.grad(y_chunked.sum(), x)
    torch.testing.assert_close(y_chunked, y_whole, rtol=0, atol=0)
    torch.testing.assert_close(g_chunked, g_whole, rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["fast", "stock"])
def test_lrn_runs_in_fp32_under_bf16_autocast(impl):
    x = activations((2, 96, 5, 5), dtype=torch.float32).to(torch.bfloat16)
    lrn = LocalResponseNorm(96, groups=2, impl=impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lrn(x)
    assert y.dtype == torch.bfloat16
    expected = direct_lrn(x.double(), 2).to(torch.bfloat16)
    torch.testing.assert_close(y, expected, rtol=1e-2, atol=1e-2)


# -- ReLU -> LRN -> max-pool in one pass (the CPU path of blocks 1 and 2) -------------------

def _unfused(z, groups, pool):
    """The three modules one after the other, with the stock LRN: the reference."""
    return pool(stock_lrn(torch.relu(z), groups))


@pytest.mark.parametrize("shape,groups,pool", [
    ((3, 96, 55, 55), 2, (3, 2)),  # AlexNet's LRN1 and pool1
    ((2, 256, 27, 27), 2, (3, 2)),  # LRN2 and pool2
    ((4, 10, 7, 8), 2, (2, 2)),  # few maps: every window reaches a tower's edge; 2x2 pooling
    ((3, 12, 9, 9), 1, (3, 2)),  # one tower (the one-GPU net)
])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])  # one sample per chunk; the whole batch at once
def test_relu_lrn_maxpool_matches_the_three_modules(monkeypatch, shape, groups, pool, channels_last, chunk_bytes):
    import alexnet.ops.fast_lrn as lrn_module

    monkeypatch.setattr(lrn_module, "CPU_CHUNK_BYTES", chunk_bytes)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(4)) * 80  # about half the maps < 0
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    lrn, maxpool = LocalResponseNorm(shape[1], groups=groups), torch.nn.MaxPool2d(*pool)
    zf, zs = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    yf = relu_lrn_maxpool(zf, lrn, maxpool)
    ys = _unfused(zs, groups, maxpool)
    g = torch.randn(ys.shape, generator=torch.Generator().manual_seed(5))
    yf.backward(g)
    ys.backward(g)
    torch.testing.assert_close(yf, ys, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(zf.grad, zs.grad, rtol=1e-5, atol=1e-6 * zs.grad.abs().max().item())
    assert (zf.grad[z < 0] == 0).all()  # the ReLU's gradient is part of it
    assert yf.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_relu_lrn_maxpool_gradient_is_exact_in_float64():
    z = torch.randn(2, 10, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 80
    # Keep every input away from the ReLU's kink and every window's maximum unique, where the
    # gradient is defined.
    z = torch.where(z.abs() < 1, z.sign() * 1.0 + z, z).requires_grad_(True)
    lrn, pool = LocalResponseNorm(10, groups=2), torch.nn.MaxPool2d(3, 2)
    assert torch.autograd.gradcheck(lambda t: relu_lrn_maxpool(t, lrn, pool), (z,), eps=1e-4, atol=1e-7)


def test_relu_lrn_maxpool_window_never_crosses_the_tower_boundary():
    lrn, pool = LocalResponseNorm(96, groups=2), torch.nn.MaxPool2d(3, 2)
    a = activations((2, 96, 7, 7)).float()
    b = a.clone()
    b[:, 48:50] *= 10
    ya, yb = relu_lrn_maxpool(a, lrn, pool), relu_lrn_maxpool(b, lrn, pool)
    torch.testing.assert_close(ya[:, :48], yb[:, :48], rtol=0, atol=0)
    assert not torch.allclose(ya[:, 50:52], yb[:, 50:52])


def test_relu_lrn_maxpool_under_bf16_autocast_matches_the_modules():
    z = (torch.randn(2, 96, 13, 13, generator=torch.Generator().manual_seed(7)) * 80).to(torch.bfloat16)
    lrn, pool = LocalResponseNorm(96, groups=2), torch.nn.MaxPool2d(3, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zf, zs = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        yf = relu_lrn_maxpool(zf, lrn, pool)
        ys = pool(lrn(torch.relu(zs)))
    assert yf.dtype == ys.dtype == torch.bfloat16
    torch.testing.assert_close(yf, ys, rtol=0, atol=0)
    yf.float().sum().backward()
    ys.float().sum().backward()
    assert zf.grad.dtype == torch.bfloat16
    torch.testing.assert_close(zf.grad.float(), zs.grad.float(), rtol=1e-2, atol=1e-2 * zs.grad.float().abs().max().item())


def test_fused_path_only_where_it_stands_in_exactly():
    lrn, pool = LocalResponseNorm(96, groups=2), torch.nn.MaxPool2d(3, 2)
    x = torch.zeros(1, 96, 13, 13)
    assert fusable(x, lrn, pool)
    assert not fusable(x, LocalResponseNorm(96, groups=2, impl="stock"), pool)
    assert not fusable(x.to("meta"), lrn, pool)
    assert not fusable(x, lrn, torch.nn.MaxPool2d(3, 2, padding=1))
    assert not fusable(x, lrn, torch.nn.MaxPool2d(3, 2, ceil_mode=True))


def test_the_net_on_the_cpu_uses_the_fused_blocks_and_computes_the_same(paper_state):
    from alexnet import build_model

    fused = build_model(initialize=False, dropout=0.0)
    modular = build_model(initialize=False, dropout=0.0, fuse_relu_lrn_pool=False)
    fused.load_state_dict(paper_state)
    modular.load_state_dict(paper_state)
    calls = []
    for model in (fused, modular):  # the switch, not a hook, decides the path
        for name in ("lrn1", "pool1", "lrn2", "pool2"):
            getattr(model, name).register_forward_hook(lambda m, i, o, model=model, name=name: calls.append((model, name)))
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(8)) * 255 - 120
    target = torch.tensor([1, 2])
    out = {}
    for key, model in (("fused", fused), ("modular", modular)):
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, target).backward()
        out[key] = (logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    assert [name for model, name in calls if model is modular] == ["lrn1", "pool1", "lrn2", "pool2"]
    assert not [name for model, name in calls if model is fused]  # the fused blocks ran instead
    (lf, gf), (lm, gm) = out["fused"], out["modular"]
    torch.testing.assert_close(lf, lm, rtol=1e-5, atol=1e-5 * lm.abs().max().item())
    for name in gm:
        torch.testing.assert_close(gf[name], gm[name], rtol=1e-4, atol=1e-5 * gm[name].abs().max().item() + 1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")
