"""siglip_loss: the one-pass engine against naive autograd at every tile boundary, every
reduction, learnable temperature and bias, half precision, and its bad inputs."""

import itertools

import numpy as np
import pytest
import torch

import contrastive as C
from contrastive.reference import siglip_loss as ref

from .. import oracles
from .engine_check import assert_matches


@pytest.mark.parametrize("B, bs", list(itertools.product([1, 2, 5, 17], [1, 3, 512])))
@pytest.mark.parametrize("temperature, bias", [(0.01, -10.0), (0.1, -10.0), (1.0, 0.5), (10.0, 2.0)])
def test_engine_equals_naive_float64(B, bs, temperature, bias):
    g = torch.Generator().manual_seed(B * 10 + bs)
    a = torch.randn(B, 4, generator=g, dtype=torch.float64)
    b = torch.randn(B, 4, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64)
    c = torch.tensor(bias, dtype=torch.float64)

    def fast(a_, b_, t_, c_, r):
        return C.siglip_loss(a_, b_, t_, c_, reduction=r, block_size=bs)

    assert_matches(fast, oracles.siglip_loss, [a, b], [t, c])


def test_float_parameters_and_b_without_grad():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 3, generator=g, dtype=torch.float64),
    )

    def fast(a_, b_, r):
        return C.siglip_loss(a_, b_.detach(), 0.2, -3.0, reduction=r, block_size=4)

    def naive(a_, b_, r):
        return oracles.siglip_loss(a_, b_.detach(), 0.2, -3.0, r)

    assert_matches(fast, naive, [a, b], [])


def test_engine_matches_reference():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    loss = C.siglip_loss(ta, tb, t, c, block_size=3)
    loss.backward()
    ga, gb, gt, gc = ref.grad(a, b, 0.2, -2.0)
    np.testing.assert_allclose(loss.item(), ref.forward(a, b, 0.2, -2.0).mean(), rtol=1e-12)
    np.testing.assert_allclose(ta.grad.numpy(), ga, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), gb, rtol=1e-10, atol=1e-12)
    assert t.grad.item() == pytest.approx(gt, rel=1e-10)
    assert c.grad.item() == pytest.approx(gc, rel=1e-10)


def test_gradcheck_temperature_and_bias():
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    for r in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda *x, r=r: C.siglip_loss(*x, reduction=r, block_size=2), (a, b, t, c)
        )


def test_extreme_logits_are_exact():
    """Logits of +-1000 (tau = 1e-3): softplus stays exact, no inf or NaN."""
    a = torch.eye(3, dtype=torch.float64)
    out = C.siglip_loss(a, a.flip(0), 1e-3, 0.0, reduction="none")
    want = oracles.siglip_loss(a, a.flip(0), 1e-3, 0.0, "none")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(30, 8, generator=g).to(dtype), torch.randn(30, 8, generator=g).to(dtype)
    ins = [x.clone().requires_grad_(True) for x in (a, b)]
    out = C.siglip_loss(*ins, 0.1, -10.0, block_size=7)
    out.backward()
    ref_in = [x.double().requires_grad_(True) for x in (a, b)]
    want = oracles.siglip_loss(*ref_in, 0.1, -10.0)
    want.backward()
    assert out.dtype == dtype and all(x.grad.dtype == dtype for x in ins)
    torch.testing.assert_close(out.double(), want.detach(), rtol=2e-2, atol=2e-2)
    for x, y in zip(ins, ref_in):
        torch.testing.assert_close(x.grad.double(), y.grad, rtol=2e-2, atol=2e-2 * y.grad.abs().max().item())


def test_scaled_rows_give_the_unit_rows_loss():
    g = torch.Generator().manual_seed(3)
    a, b = (
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randn(6, 4, generator=g, dtype=torch.float64),
    )
    base = C.siglip_loss(a, b, 0.1, -5.0)
    for s in (1e-15, 1e20, 1e30):
        torch.testing.assert_close(C.siglip_loss(a * s, b / s, 0.1, -5.0), base, rtol=1e-12, atol=0)


A, B_ = torch.randn(4, 3), torch.randn(4, 3)


@pytest.mark.parametrize(
    "args, kwargs, err, match",
    [
        ((A, B_[:3]), {}, ValueError, "same shape"),
        ((A, B_.double()), {}, TypeError, "cast both"),
        ((A, B_, 0.0), {}, ValueError, "temperature"),
        ((A, B_, 0.1, float("inf")), {}, ValueError, "bias must be finite"),
        ((A, B_, 0.1, "x"), {}, TypeError, "bias must be a float"),
        ((A, B_, 0.1, torch.ones(2)), {}, ValueError, "bias must be a float or a floating scalar"),
        ((A, B_), dict(backend="triton"), ValueError, "no Triton kernel"),
        ((A, B_), dict(reduction="avg"), ValueError, "reduction"),
    ],
)
def test_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        C.siglip_loss(*args, **kwargs)


def test_module_initialisation_and_gradients():
    crit = C.SigLIPLoss()
    assert crit.logit_scale.item() == pytest.approx(np.log(10.0)) and crit.bias.item() == -10.0
    assert crit.temperature.item() == pytest.approx(0.1)
    crit(torch.randn(4, 8), torch.randn(4, 8)).backward()
    assert crit.logit_scale.grad is not None and crit.bias.grad is not None
    assert C.SigLIPLoss(temperature=0.5, bias=0.0).temperature.item() == pytest.approx(0.5)
