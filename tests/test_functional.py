"""Tiers 2 and 3 for the functional API: torch ops vs the NumPy reference, gradcheck,
naive autograd, grad_output != 1, property tests, and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import contrastive as C
from contrastive.reference import contrastive_loss as ref_cl
from contrastive.reference import cosine_similarity as ref_cs
from contrastive.reference import info_nce as ref_nce

from . import oracles

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 2e-2}
LOWP = [torch.float32, torch.bfloat16, torch.float16]


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------- contrastive_loss


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
    assert torch.autograd.gradcheck(lambda a, b, c: C.contrastive_loss(a, b, c, 2.0, "none"), (u, v, y))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_contrastive_loss_vs_naive_autograd_and_grad_output(rng, reduction):
    u, v, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4)) * 0.3, rng.uniform(size=12)
    U1, V1, U2, V2 = t64(u, True), t64(v, True), t64(u, True), t64(v, True)
    naive = oracles.contrastive_loss(U2, V2, t64(y), 1.0, reduction)
    ours = C.contrastive_loss(U1, V1, t64(y), 1.0, reduction)
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
    out = C.contrastive_loss(U, torch.tensor(v, dtype=dtype), torch.tensor(y, dtype=dtype), 1.0, "sum")
    out.backward()
    assert out.dtype == dtype and U.grad.dtype == dtype
    ur, vr, yr = (torch.tensor(a, dtype=dtype).double().numpy() for a in (u, v, y))
    np.testing.assert_allclose(out.double().item(), ref_cl.forward(ur, vr, yr).sum(), rtol=TOL[dtype])
    du = ref_cl.grad(ur, vr, yr)[0]
    assert np.max(np.abs(U.grad.double().numpy() - du)) <= TOL[dtype] * np.max(np.abs(du)) + 1e-3 * (
        dtype != torch.float32
    )


@pytest.mark.parametrize(
    "call, err, match",
    [
        (
            lambda: C.contrastive_loss(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3)),
            ValueError,
            "same shape",
        ),
        (lambda: C.contrastive_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3)), ValueError, "2-D"),
        (
            lambda: C.contrastive_loss(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0)),
            ValueError,
            "empty",
        ),
        (
            lambda: C.contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3), margin=-1),
            ValueError,
            "margin",
        ),
        (
            lambda: C.contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor([0, 1, 2.0])),
            ValueError,
            r"\[0, 1\]",
        ),
        (
            lambda: C.contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2)),
            ValueError,
            "y must have shape",
        ),
        (
            lambda: C.contrastive_loss(torch.full((3, 2), float("nan")), torch.zeros(3, 2), torch.zeros(3)),
            ValueError,
            "NaN",
        ),
        (lambda: C.contrastive_loss([[0.0]], torch.zeros(1, 1), torch.zeros(1)), TypeError, "torch.Tensor"),
        (
            lambda: C.contrastive_loss(
                torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 2), torch.zeros(3)
            ),
            TypeError,
            "floating",
        ),
        (
            lambda: C.contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3), reduction="avg"),
            ValueError,
            "reduction",
        ),
    ],
)
def test_contrastive_loss_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_contrastive_loss_check_finite_off_skips_check():
    out = C.contrastive_loss(
        torch.full((2, 2), float("inf")), torch.zeros(2, 2), torch.ones(2), check_finite=False
    )
    assert not torch.isfinite(out)


def test_contrastive_loss_int_and_bool_labels():
    u, v = torch.zeros(2, 2), torch.ones(2, 2)
    a = C.contrastive_loss(u, v, torch.tensor([1, 0]))
    b = C.contrastive_loss(u, v, torch.tensor([True, False]))
    assert a.item() == b.item()


# ---------------------------------------------------------------- info_nce


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_matches_reference(rng, exclude_self, normalize):
    z = rng.normal(size=(14, 5)) * (1 if normalize else 0.3)
    w = rng.uniform(0.2, 2.0, size=14)
    Z = t64(z, True)
    per = C.info_nce(Z[:7], Z[7:], 0.4, exclude_self=exclude_self, normalize=normalize, reduction="none")
    np.testing.assert_allclose(
        per.detach().numpy(), ref_nce.forward(z, 0.4, exclude_self, normalize), rtol=1e-10
    )
    (per * t64(w)).sum().backward()
    g, _ = ref_nce.grad(z, 0.4, exclude_self, normalize, weights=w)
    np.testing.assert_allclose(Z.grad.numpy(), g, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_info_nce_gradcheck_with_learnable_temperature(rng, exclude_self):
    z1, z2 = t64(rng.normal(size=(4, 3)), True), t64(rng.normal(size=(4, 3)), True)
    t = t64(0.6, True)
    assert torch.autograd.gradcheck(
        lambda a, b, tt: C.info_nce(a, b, tt, exclude_self=exclude_self, reduction="none"), (z1, z2, t)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("temperature", [0.05, 0.5, 5.0])
def test_info_nce_vs_naive_autograd(rng, reduction, temperature):
    z = rng.normal(size=(10, 6))
    A, B = t64(z, True), t64(z, True)
    ours = C.info_nce(A[:5], A[5:], temperature, reduction=reduction)
    naive = oracles.nt_xent(B, temperature, reduction)
    torch.testing.assert_close(ours, naive, rtol=1e-12, atol=1e-12)
    (2 * ours).sum().backward()  # grad_output = 2
    (2 * naive).sum().backward()
    torch.testing.assert_close(A.grad, B.grad, rtol=1e-10, atol=1e-12)


def test_nt_xent_is_info_nce_on_stacked(rng):
    z = torch.tensor(rng.normal(size=(8, 3)))
    torch.testing.assert_close(C.nt_xent(z), C.info_nce(z[:4], z[4:]))


@pytest.mark.parametrize("dtype", LOWP)
def test_info_nce_low_precision(rng, dtype):
    z = rng.normal(size=(16, 8))
    Z = torch.tensor(z, dtype=dtype, requires_grad=True)
    loss = C.info_nce(Z[:8], Z[8:], 0.5)
    loss.backward()
    assert loss.dtype == dtype and Z.grad.dtype == dtype
    zr = torch.tensor(z, dtype=dtype).double().numpy()
    np.testing.assert_allclose(loss.double().item(), ref_nce.forward(zr).mean(), rtol=TOL[dtype])
    g, _ = ref_nce.grad(zr)
    assert np.max(np.abs(Z.grad.double().numpy() - g)) <= TOL[dtype] * np.max(np.abs(g)) * 2


def test_info_nce_learnable_temperature_grad_matches_reference(rng):
    z = rng.normal(size=(12, 4))
    t = t64(0.3, True)
    C.info_nce(t64(z[:6]), t64(z[6:]), t).backward()
    _, gt = ref_nce.grad(z, 0.3)
    assert t.grad.item() == pytest.approx(gt, rel=1e-10)


# property tests --------------------------------------------------------------

finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 10_000), st.floats(0.05, 5.0), st.booleans())
def test_property_view_symmetry(B, d, seed, temperature, exclude_self):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = (
        torch.randn(B, d, generator=g, dtype=torch.float64),
        torch.randn(B, d, generator=g, dtype=torch.float64),
    )
    a = C.info_nce(z1, z2, temperature, exclude_self=exclude_self)
    b = C.info_nce(z2, z1, temperature, exclude_self=exclude_self)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 10_000), st.floats(1e-3, 1e3))
def test_property_scale_invariance_when_normalising(B, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = (
        torch.randn(B, d, generator=g, dtype=torch.float64),
        torch.randn(B, d, generator=g, dtype=torch.float64),
    )
    assert C.info_nce(z1, z2).item() == pytest.approx(C.info_nce(z1 * scale, z2 * scale).item(), rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 8), st.integers(1, 5), st.floats(0.05, 5.0))
def test_property_all_equal_closed_form(B, d, temperature):
    z = torch.ones(B, d, dtype=torch.float64)
    N = 2 * B
    if N > 2:
        assert C.info_nce(z, z, temperature).item() == pytest.approx(math.log(N - 1), rel=1e-12)
    else:  # N = 2 with self excluded: the positive is the only term, loss 0
        assert C.info_nce(z, z, temperature).item() == pytest.approx(0.0, abs=1e-12)
    assert C.info_nce(z, z, temperature, exclude_self=False).item() == pytest.approx(math.log(N), rel=1e-12)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: C.info_nce(torch.zeros(3, 2) + 1, torch.ones(4, 2)), ValueError, "same shape"),
        (lambda: C.info_nce(torch.ones(3), torch.ones(3)), ValueError, "2-D"),
        (lambda: C.info_nce(torch.ones(0, 2), torch.ones(0, 2)), ValueError, "empty"),
        (lambda: C.nt_xent(torch.ones(5, 2)), ValueError, "even"),
        (lambda: C.info_nce(torch.ones(2, 2), torch.ones(2, 2), 0.0), ValueError, "temperature"),
        (lambda: C.info_nce(torch.ones(2, 2), torch.ones(2, 2), float("inf")), ValueError, "temperature"),
        (lambda: C.info_nce(torch.ones(2, 2), torch.ones(2, 2), "hot"), TypeError, "temperature"),
        (lambda: C.info_nce(torch.ones(2, 2), torch.ones(2, 2), torch.ones(2)), ValueError, "scalar"),
        (
            lambda: C.info_nce(torch.tensor([[1.0, float("nan")]]), torch.ones(1, 2)),
            ValueError,
            "z1 contains NaN",
        ),
        (lambda: C.info_nce(torch.zeros(2, 2), torch.ones(2, 2)), ValueError, "zero-norm"),
        (lambda: C.info_nce(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.float64)), TypeError, "dtype"),
        (lambda: C.info_nce(torch.ones(2, 2), torch.ones(2, 2), reduction="max"), ValueError, "reduction"),
    ],
)
def test_info_nce_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_info_nce_zero_rows_allowed_without_normalize():
    out = C.info_nce(torch.zeros(2, 2), torch.zeros(2, 2), normalize=False)
    assert out.item() == pytest.approx(math.log(3))


# ---------------------------------------------------------------- cosine_similarity


def test_cosine_map_matches_reference_and_gradcheck(rng):
    x, y, M = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)), rng.normal(size=(3, 4))
    Mt = t64(M, True)
    s = C.cosine_similarity(t64(x), t64(y), M=Mt)
    np.testing.assert_allclose(s.detach().numpy(), ref_cs.sim_map(x, y, M), rtol=1e-12)
    s.sum().backward()
    np.testing.assert_allclose(Mt.grad.numpy(), ref_cs.grad_map(x, y, M), rtol=1e-10, atol=1e-13)
    X, Y = t64(x, True), t64(y, True)
    assert torch.autograd.gradcheck(lambda a, b, m: C.cosine_similarity(a, b, M=m), (X, Y, t64(M, True)))


def test_cosine_sym_full_and_packed(rng):
    d = 4
    x, y = rng.normal(size=(7, d)), rng.normal(size=(7, d))
    R = rng.normal(size=(d, d))
    A = R @ R.T + np.eye(d)
    At = t64(A, True)
    s = C.cosine_similarity(t64(x), t64(y), A=At)
    np.testing.assert_allclose(s.detach().numpy(), ref_cs.sim_sym(x, y, A), rtol=1e-12)
    s.sum().backward()
    np.testing.assert_allclose(At.grad.numpy(), ref_cs.grad_sym_untied(x, y, A), rtol=1e-10, atol=1e-13)
    iu = np.triu_indices(d)
    a = t64(A[iu], True)
    C.cosine_similarity(t64(x), t64(y), A=a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ref_cs.grad_sym_tied(x, y, A)[iu], rtol=1e-10, atol=1e-13)
    X, Y = t64(x, True), t64(y, True)
    assert torch.autograd.gradcheck(lambda p, q, r: C.cosine_similarity(p, q, A=r), (X, Y, t64(A[iu], True)))
    # full A: entries are independent, but A must stay symmetric to sqrt(eps) (1.5e-8) of its
    # largest entry, so perturb by less than that
    assert torch.autograd.gradcheck(
        lambda p, q, r: C.cosine_similarity(p, q, A=r), (X, Y, t64(A, True)), eps=1e-9
    )


def test_cosine_plain_matches_torch(rng):
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(C.cosine_similarity(x, y), torch.nn.functional.cosine_similarity(x, y))


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"A": -torch.eye(2)}, ValueError, "project_psd"),
        ({"A": torch.eye(2), "M": torch.eye(2)}, ValueError, "not both"),
        ({"M": torch.zeros(2, 2)}, ValueError, "zero vector"),
        ({"M": torch.eye(3)}, ValueError, r"\(k, 2\)"),
        ({"A": torch.ones(4)}, ValueError, "d\\(d\\+1\\)/2|entries"),
    ],
)
def test_cosine_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        C.cosine_similarity(torch.ones(2, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), **kwargs)


def test_cosine_metric_module_and_projection():
    m = C.CosineMetric(3, form="symmetric")
    with torch.no_grad():
        m.a.copy_(torch.tensor([1.0, 2.0, 0.0, 1.0, 0.0, 1.0]))  # eigenvalues -1, 1, 3
    assert torch.linalg.eigvalsh(m.matrix()).min() < 0
    m.project_psd(1e-3)
    assert torch.linalg.eigvalsh(m.matrix()).min() >= 1e-3 - 1e-6
    mm = C.CosineMetric(4, 2, form="map")
    out = mm(torch.randn(5, 4), torch.randn(5, 4))
    out.sum().backward()
    assert mm.M.grad.shape == (2, 4)
    with pytest.raises(ValueError, match="form"):
        C.CosineMetric(3, form="cone")


def test_check_temperature_device_moved_to_validation_with_a_deprecated_alias():
    from contrastive import _validation as V
    from contrastive import functional as Fn

    z = torch.zeros(2, 3)
    t = torch.tensor([0.5])
    assert V.check_temperature_device(t, z).shape == ()
    assert V.check_temperature_device(0.5, z) == 0.5
    with pytest.warns(DeprecationWarning, match="_validation.check_temperature_device"):
        assert Fn._check_temperature_device(t, z).shape == ()
    with pytest.raises(ValueError, match="move the bias tensor"):
        V.check_temperature_device(torch.tensor(0.1, device="meta"), z, "bias")
