"""contrastive.functional, the validated public functions: info_nce / nt_xent against the NumPy reference,
gradcheck, the autograd oracle with grad_output != 1, property tests; and every function's bad
input. The ops' own numerics (contrastive_loss, cosine_similarity) are in tests/ops/."""

import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import contrastive as C
from contrastive.reference import info_nce as ref_nce

from . import oracles

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 2e-2}
LOWP = [torch.float32, torch.bfloat16, torch.float16]


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------- contrastive_loss


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


def test_check_temperature_device():
    from contrastive.ops import validation as V

    z = torch.zeros(2, 3)
    t = torch.tensor([0.5])
    assert V.check_temperature_device(t, z).shape == ()
    assert V.check_temperature_device(0.5, z) == 0.5
    with pytest.raises(ValueError, match="move the bias tensor"):
        V.check_temperature_device(torch.tensor(0.1, device="meta"), z, "bias")


def test_contrastive_loss_margin_and_reduction_are_keyword_only():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.0])
    new = C.contrastive_loss(u, v, y, margin=2.0, reduction="none")
    summed = C.contrastive_loss(u, v, y, margin=2.0, reduction="sum")
    torch.testing.assert_close(summed, new.sum(), rtol=0, atol=0)
    assert not torch.equal(new, C.contrastive_loss(u, v, y, reduction="none"))  # the margin took effect
    with pytest.raises(TypeError, match="positional"):
        C.contrastive_loss(u, v, y, 2.0, "none")
    sig = inspect.signature(C.contrastive_loss).parameters
    assert sig["margin"].kind is sig["reduction"].kind is inspect.Parameter.KEYWORD_ONLY


def test_cosine_similarity_takes_x1_x2():
    g = torch.Generator().manual_seed(0)
    x1, x2, M = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.randn(2, 3, generator=g)
    new = C.cosine_similarity(x1=x1, x2=x2, M=M)
    torch.testing.assert_close(C.cosine_similarity(x1, x2, M=M), new, rtol=0, atol=0)
    with pytest.raises(TypeError, match="'y'"):
        C.cosine_similarity(x1, y=x2, M=M)
    with pytest.raises(ValueError, match="x2 must have"):  # messages name the new arguments
        C.cosine_similarity(x1, x2[:4])
    assert list(inspect.signature(C.cosine_similarity).parameters)[:2] == ["x1", "x2"]
