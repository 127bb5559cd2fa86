"""ops/contrastive_loss.py: the margin contrastive loss's closed-form backward against the NumPy
reference, gradcheck, the autograd oracle with grad_output != 1, zero distance, and half
precision. Bad input (the validation in contrastive.functional) is tested in tests/test_functional.py."""

import numpy as np
import pytest
import torch

import contrastive as C
from contrastive.reference import contrastive_loss as ref_cl

from .. import oracles

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 2e-2}
LOWP = [torch.float32, torch.bfloat16, torch.float16]


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def test_contrastive_loss_matches_reference(rng):
    u, v, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) * 0.3, rng.uniform(size=30)
    U, Vv = t64(u, True), t64(v, True)
    out = C.contrastive_loss(U, Vv, t64(y), margin=1.5, reduction="sum")
    np.testing.assert_allclose(out.item(), ref_cl.forward(u, v, y, 1.5).sum(), rtol=1e-12)
    out.backward()
    du, dv, _ = ref_cl.grad(u, v, y, 1.5)
    np.testing.assert_allclose(U.grad.numpy(), du, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(Vv.grad.numpy(), dv, rtol=1e-10, atol=1e-14)


def test_contrastive_loss_gradcheck(rng):
    u, v, y = (
        t64(rng.normal(size=(6, 3)), True),
        t64(rng.normal(size=(6, 3)), True),
        t64(rng.uniform(size=6), True),
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: C.contrastive_loss(a, b, c, margin=2.0, reduction="none"), (u, v, y)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_contrastive_loss_vs_naive_autograd_and_grad_output(rng, reduction):
    u, v, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4)) * 0.3, rng.uniform(size=12)
    U1, V1, U2, V2 = t64(u, True), t64(v, True), t64(u, True), t64(v, True)
    naive = oracles.contrastive_loss(U2, V2, t64(y), 1.0, reduction)
    ours = C.contrastive_loss(U1, V1, t64(y), margin=1.0, reduction=reduction)
    torch.testing.assert_close(ours, naive, rtol=1e-12, atol=0)
    up = torch.randn_like(ours) * 3 + 2  # grad_output != 1 (the "loss x 2" path, generalised)
    (ours * up).sum().backward()
    (naive * up).sum().backward()
    torch.testing.assert_close(U1.grad, U2.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(V1.grad, V2.grad, rtol=1e-10, atol=1e-14)


def test_contrastive_loss_zero_distance_no_nan():
    u = torch.ones(4, 3, requires_grad=True)
    v = torch.ones(4, 3, requires_grad=True)
    loss = C.contrastive_loss(u, v, torch.tensor([0.0, 0.3, 1.0, 0.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all() and (u.grad == 0).all()
    assert loss.item() == pytest.approx((0.5 + 0.7 * 0.5 + 0.5) / 4)


@pytest.mark.parametrize("dtype", LOWP)
def test_contrastive_loss_low_precision(rng, dtype):
    u, v, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 4)) * 0.3, rng.uniform(size=16)
    U = torch.tensor(u, dtype=dtype, requires_grad=True)
    out = C.contrastive_loss(
        U, torch.tensor(v, dtype=dtype), torch.tensor(y, dtype=dtype), margin=1.0, reduction="sum"
    )
    out.backward()
    assert out.dtype == dtype and U.grad.dtype == dtype
    ur, vr, yr = (torch.tensor(a, dtype=dtype).double().numpy() for a in (u, v, y))
    np.testing.assert_allclose(out.double().item(), ref_cl.forward(ur, vr, yr).sum(), rtol=TOL[dtype])
    du = ref_cl.grad(ur, vr, yr)[0]
    assert np.max(np.abs(U.grad.double().numpy() - du)) <= TOL[dtype] * np.max(np.abs(du)) + 1e-3 * (
        dtype != torch.float32
    )
