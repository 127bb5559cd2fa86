"""ops/info_nce.py: the blockwise InfoNCE / NT-Xent objective against the dense path (itself
checked against the reference) at every tile-boundary case, both shift paths, every reduction
and a learnable temperature; and its decoupled (DCL) form against the oracle. The two-tower
form is in test_clip.py."""

import itertools

import numpy as np
import pytest
import torch

import contrastive as C
from contrastive.ops.tiles import use_fixed_shift
from contrastive.reference import info_nce as ref

from .. import oracles
from .engine_check import assert_matches


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


# ---------------------------------------------------------------- decoupled (DCL)


@pytest.mark.parametrize("B, bs", list(itertools.product([2, 3, 17], [1, 3, 512])))
@pytest.mark.parametrize("temperature", [0.002, 0.01, 0.5, 10.0])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_decoupled_equals_naive_float64(B, bs, temperature, exclude_self):
    g = torch.Generator().manual_seed(B * 10 + bs)
    z1 = torch.randn(B, 4, generator=g, dtype=torch.float64)
    z2 = torch.randn(B, 4, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64)

    def fast(a, b, t_, r):
        return C.info_nce(a, b, t_, reduction=r, block_size=bs, decoupled=True, exclude_self=exclude_self)

    def naive(a, b, t_, r):
        return oracles.info_nce(a, b, t_, r, decoupled=True, exclude_self=exclude_self)

    assert_matches(fast, naive, [z1, z2], [t])


def test_decoupled_matches_reference_and_module():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(10, 3))
    zt = torch.tensor(z, requires_grad=True)
    loss = C.nt_xent(zt, 0.3, decoupled=True, block_size=4)
    loss.backward()
    g, _ = ref.grad(z, 0.3, decoupled=True)
    np.testing.assert_allclose(loss.item(), ref.forward(z, 0.3, decoupled=True).mean(), rtol=1e-12)
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-10, atol=1e-12)
    crit = C.InfoNCELoss(0.3, decoupled=True)
    torch.testing.assert_close(crit(zt[:5], zt[5:]), loss)


def test_decoupled_bad_input():
    z = torch.randn(1, 3)
    with pytest.raises(ValueError, match="N >= 4"):
        C.info_nce(z, z, decoupled=True)
    with pytest.raises(ValueError, match="torch engine only"):
        C.info_nce(torch.randn(3, 3), torch.randn(3, 3), decoupled=True, backend="dense")
    C.info_nce(z, z, decoupled=True, exclude_self=False)  # N = 2 keeps self as the candidate
