"""supcon_loss: the blockwise engine against naive autograd at every tile boundary, both shift
paths, every reduction, a learnable temperature, half precision, and its bad inputs."""

import itertools

import numpy as np
import pytest
import torch

import contrastive as C
from contrastive.reference import supcon_loss as ref

from .. import oracles
from .engine_check import assert_matches


def labels_for(N, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max(1, N // 3), (N,), generator=g)


@pytest.mark.parametrize("N, bs", list(itertools.product([2, 5, 9, 34], [1, 3, 4, 512])))
@pytest.mark.parametrize("temperature", [0.002, 0.01, 0.1, 10.0])
def test_engine_equals_naive_float64(N, bs, temperature):
    g = torch.Generator().manual_seed(N * 100 + bs)
    z = torch.randn(N, 4, generator=g, dtype=torch.float64)
    y = labels_for(N, N + bs)
    t = torch.tensor(temperature, dtype=torch.float64)

    def fast(z_, t_, r):
        return C.supcon_loss(z_, y, t_, reduction=r, block_size=bs)

    def naive(z_, t_, r):
        return oracles.supcon_loss(z_, y, t_, r)

    assert_matches(fast, naive, [z], [t])


@pytest.mark.parametrize("normalize", [True, False])
def test_engine_matches_reference(normalize):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(13, 5)) * (1.0 if normalize else 0.5)
    y = rng.integers(0, 4, size=13)
    zt = torch.tensor(z, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = C.supcon_loss(zt, torch.tensor(y), t, normalize=normalize, block_size=4)
    loss.backward()
    g, gt = ref.grad(z, y, 0.3, normalize)
    np.testing.assert_allclose(
        loss.item(), ref.mean_weights(y) @ ref.forward(z, y, 0.3, normalize), rtol=1e-12
    )
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-10, atol=1e-12)
    assert t.grad.item() == pytest.approx(gt, rel=1e-10)


def test_gradcheck_with_learnable_temperature():
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 2, 2, 3])
    for r in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda a, tt, r=r: C.supcon_loss(a, y, tt, reduction=r, block_size=3), (z, t)
        )


def test_two_views_with_distinct_labels_equal_info_nce():
    z1, z2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    y = torch.arange(6).repeat(2)
    torch.testing.assert_close(
        C.supcon_loss(torch.cat([z1, z2]), y, 0.3), C.info_nce(z1, z2, 0.3), rtol=1e-12, atol=0
    )


def test_no_positive_at_all_gives_zero_and_zero_grad():
    z = torch.randn(4, 3, requires_grad=True)
    loss = C.supcon_loss(z, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)
    one = torch.randn(1, 3, requires_grad=True)
    out = C.supcon_loss(one, torch.tensor([0]))
    out.backward()
    assert out.item() == 0.0 and torch.all(one.grad == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    z = torch.randn(40, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    y = labels_for(40, 1)
    zf = z.detach().clone().requires_grad_(True)
    out = C.supcon_loss(zf, y, 0.2, block_size=7)
    out.backward()
    zd = z.double().requires_grad_(True)
    ref_out = oracles.supcon_loss(zd, y, 0.2)
    ref_out.backward()
    assert out.dtype == dtype and zf.grad.dtype == dtype
    torch.testing.assert_close(out.double(), ref_out.detach(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(zf.grad.double(), zd.grad, rtol=2e-2, atol=2e-2 * zd.grad.abs().max().item())


def test_scaled_rows_give_the_unit_rows_loss():
    z = torch.randn(10, 4, dtype=torch.float64)
    y = labels_for(10, 5)
    base = C.supcon_loss(z, y, 0.2)
    for s in (1e-15, 1e20, 1e30):  # 1e-30 in float32: tests/ops/test_engine.py (below the zero-norm check)
        torch.testing.assert_close(C.supcon_loss(z * s, y, 0.2), base, rtol=1e-12, atol=0)
        torch.testing.assert_close(C.supcon_loss((z * s).float(), y, 0.2), base.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (
            lambda z: C.supcon_loss(z, torch.zeros(5, dtype=torch.long)),
            ValueError,
            r"labels must have shape \(6,\)",
        ),
        (
            lambda z: C.supcon_loss(z, torch.zeros(6, 1, dtype=torch.long)),
            ValueError,
            "labels must have shape",
        ),
        (lambda z: C.supcon_loss(z, torch.zeros(6)), TypeError, "labels must hold integer"),
        (lambda z: C.supcon_loss(z, [0] * 6), TypeError, "labels must be a torch.Tensor"),
        (lambda z: C.supcon_loss(z, torch.zeros(6, dtype=torch.long), 0.0), ValueError, "temperature"),
        (
            lambda z: C.supcon_loss(z, torch.zeros(6, dtype=torch.long), reduction="avg"),
            ValueError,
            "reduction",
        ),
        (
            lambda z: C.supcon_loss(z, torch.zeros(6, dtype=torch.long), backend="triton"),
            ValueError,
            "no Triton kernel",
        ),
        (
            lambda z: C.supcon_loss(z, torch.zeros(6, dtype=torch.long), block_size=0),
            ValueError,
            "block_size",
        ),
        (lambda z: C.supcon_loss(z[:, 0], torch.zeros(6, dtype=torch.long)), ValueError, "z must be 2-D"),
        (lambda z: C.supcon_loss(z * float("nan"), torch.zeros(6, dtype=torch.long)), ValueError, "NaN"),
        (lambda z: C.supcon_loss(z * 0, torch.zeros(6, dtype=torch.long)), ValueError, "zero-norm"),
    ],
)
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call(torch.randn(6, 3))


def test_module_learns_temperature():
    crit = C.SupConLoss(0.2, learn_temperature=True)
    z = torch.randn(8, 4, requires_grad=True)
    crit(z, torch.tensor([0, 1, 2, 3] * 2)).backward()
    assert crit.log_temperature.grad is not None and z.grad is not None
