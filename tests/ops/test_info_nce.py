"""The blockwise engine against the dense path (itself checked against the reference) at
every tile-boundary case, both shift paths, every reduction and a learnable temperature."""

import itertools

import pytest
import torch

import contrastive as C
from contrastive.ops.tiles import use_fixed_shift

from .. import oracles


def run(z, t, backend, reduction, w=None, **kw):
    z = z.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True) if isinstance(t, torch.Tensor) else t
    B = z.shape[0] // 2
    out = C.info_nce(z[:B], z[B:], t, reduction=reduction, backend=backend, **kw)
    (out * w).sum().backward() if w is not None else (2 * out).backward()
    return out.detach(), z.grad, (t.grad if isinstance(t, torch.Tensor) else None)


CASES = list(itertools.product([2, 6, 10, 34], [1, 3, 4, 512]))


@pytest.mark.parametrize("N, bs", CASES)
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("temperature", [0.01, 0.002, 0.5, 10.0])
def test_engine_equals_dense_float64(N, bs, exclude_self, temperature):
    g = torch.Generator().manual_seed(N * 1000 + bs)
    z = torch.randn(N, 5, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64)
    for reduction in ["mean", "none"]:
        w = torch.rand(N, generator=g, dtype=torch.float64) + 0.5 if reduction == "none" else None
        a = run(z, t, "torch", reduction, w, exclude_self=exclude_self, block_size=bs)
        b = run(z, t, "dense", reduction, w, exclude_self=exclude_self)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_both_shift_paths_are_exercised():
    assert use_fixed_shift(1 / 0.5, torch.float32) and use_fixed_shift(1 / 0.01, torch.float64)
    assert not use_fixed_shift(1 / 0.01, torch.float32) and not use_fixed_shift(1 / 0.002, torch.float64)


@pytest.mark.parametrize("temperature", [0.01, 0.07, 1.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_engine_float32_vs_naive_float64(temperature, normalize):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(70, 16, generator=g, dtype=torch.float64)
    if not normalize:
        z = torch.nn.functional.normalize(z, dim=1) * 0.9
    z64 = z.clone().requires_grad_(True)
    ref = oracles.nt_xent(z64, temperature, normalize=normalize)
    ref.backward()
    z32 = z.float().requires_grad_(True)
    out = C.nt_xent(z32, temperature, normalize=normalize, block_size=16)
    out.backward()
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z32.grad.double(), z64.grad, rtol=1e-4, atol=1e-5 / temperature)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_engine_half_precision(dtype):
    z = torch.randn(40, 8, generator=torch.Generator().manual_seed(2))
    a = run(z.to(dtype), 0.2, "torch", "mean", block_size=7)
    b = run(z.to(dtype).double(), 0.2, "dense", "mean")
    assert a[0].dtype == dtype and a[1].dtype == dtype
    torch.testing.assert_close(a[0].double(), b[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(a[1].double(), b[1], rtol=2e-2, atol=2e-2 * b[1].abs().max().item())


def test_engine_learnable_temperature_gradcheck():
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for reduction in ["mean", "sum", "none"]:
        assert torch.autograd.gradcheck(
            lambda a, tt, reduction=reduction: C.nt_xent(a, tt, reduction=reduction, block_size=4), (z, t)
        )


def test_no_grad_forward_skips_gradient_and_matches():
    z = torch.randn(20, 4)
    with torch.no_grad():
        a = C.nt_xent(z, 0.5, block_size=6)
    torch.testing.assert_close(a, C.nt_xent(z, 0.5, backend="dense"))


def test_block_size_validation():
    with pytest.raises(ValueError, match="block_size"):
        C.nt_xent(torch.randn(4, 2), block_size=0)
    with pytest.raises(ValueError, match="backend"):
        C.nt_xent(torch.randn(4, 2), backend="cuda")


def test_reduction_none_grad_is_not_the_mean_gradient():
    """A fused loss that precomputes the mean gradient would get this silently wrong."""
    z = torch.randn(10, 4, dtype=torch.float64)
    w = torch.zeros(10, dtype=torch.float64)
    w[3] = 1.0  # only row 3's loss
    a = run(z, 0.5, "torch", "none", w, block_size=3)
    b = run(z, 0.5, "dense", "none", w)
    torch.testing.assert_close(a[1], b[1], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- two towers


def run_clip(a, b, t, backend, reduction, w=None, **kw):
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    out = C.clip_loss(a, b, t, reduction=reduction, backend=backend, **kw)
    (out * w).sum().backward() if w is not None else (2 * out).backward()
    return out.detach(), a.grad, b.grad, t.grad


@pytest.mark.parametrize("N, bs", [(1, 1), (2, 1), (5, 2), (9, 4), (16, 16), (33, 512)])
@pytest.mark.parametrize("temperature", [0.002, 0.01, 0.07, 10.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_clip_engine_equals_dense_float64(N, bs, temperature, normalize):
    g = torch.Generator().manual_seed(N)
    a = torch.randn(N, 6, generator=g, dtype=torch.float64)
    b = torch.randn(N, 6, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64)
    for reduction in ["mean", "sum", "none"]:
        w = torch.rand(N, generator=g, dtype=torch.float64) if reduction == "none" else None
        x = run_clip(a, b, t, "torch", reduction, w, block_size=bs, normalize=normalize)
        y = run_clip(a, b, t, "dense", reduction, w, normalize=normalize)
        for p, q in zip(x, y):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-10)


def test_clip_gradcheck_and_float32():
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, y, s: C.clip_loss(x, y, s, reduction="none", block_size=2), (a, b, t)
    )
    x = run_clip(a.detach().float(), b.detach().float(), t.detach().float(), "torch", "mean", block_size=2)
    y = run_clip(a.detach(), b.detach(), t.detach(), "dense", "mean")
    for p, q in zip(x, y):
        torch.testing.assert_close(p.double(), q, rtol=1e-5, atol=1e-5)


def test_clip_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        C.clip_loss(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        C.clip_loss(torch.randn(3, 2), torch.randn(3, 2), -1.0)
