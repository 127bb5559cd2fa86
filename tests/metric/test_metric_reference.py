"""Tier 1 for the weighted seed-003 gradients: central finite differences in float64."""

import numpy as np
import pytest

from contrastive.reference import cosine_similarity as ref


def central_diff(f, P, eps=1e-6):
    """Numerical gradient of the scalar f at the array P, entry by entry."""
    G = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        Pp, Pm = P.copy(), P.copy()
        Pp[idx] += eps
        Pm[idx] -= eps
        G[idx] = (f(Pp) - f(Pm)) / (2 * eps)
    return G


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    w = rng.normal(size=7)
    B = rng.normal(size=(4, 4))
    A = B @ B.T + 0.5 * np.eye(4)  # positive definite
    return x, y, w, rng.normal(size=(3, 4)), A


def test_grad_map_weighted_finite_differences(batch):
    x, y, w, M, _ = batch
    analytic = ref.grad_map_weighted(x, y, M, w)
    numeric = central_diff(lambda P: float(w @ ref.sim_map(x, y, P)), M)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


def test_grad_map_weighted_matches_seed_elementwise_form(batch):
    x, y, w, M, _ = batch
    per_pair = sum(wb * ref.grad_map(x[b : b + 1], y[b : b + 1], M) for b, wb in enumerate(w))
    np.testing.assert_allclose(ref.grad_map_weighted(x, y, M, w), per_pair, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref.grad_map_weighted(x, y, M, np.ones(7)), ref.grad_map(x, y, M), rtol=1e-10)


def test_grad_sym_weighted_untied_finite_differences(batch):
    x, y, w, _, A = batch
    analytic = ref.grad_sym_weighted(x, y, A, w)
    # entries independent: perturb A_ij alone (A stays positive definite for small eps)
    numeric = central_diff(lambda P: float(w @ ref.sim_sym(x, y, P)), A)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)
    per_pair = sum(wb * ref.grad_sym_untied(x[b : b + 1], y[b : b + 1], A) for b, wb in enumerate(w))
    np.testing.assert_allclose(analytic, per_pair, rtol=1e-10, atol=1e-12)


def test_grad_sym_weighted_tied_finite_differences(batch):
    x, y, w, _, A = batch
    d = A.shape[0]
    iu = np.triu_indices(d)

    def f(a):
        S = np.zeros((d, d))
        S[iu] = a
        S = S + S.T - np.diag(np.diag(S))
        return float(w @ ref.sim_sym(x, y, S))

    analytic = ref.grad_sym_weighted(x, y, A, w, tied=True)
    numeric = central_diff(f, A[iu])
    np.testing.assert_allclose(analytic[iu], numeric, rtol=1e-7, atol=1e-9)
    assert np.all(np.tril(analytic, -1) == 0)
    np.testing.assert_allclose(
        ref.grad_sym_weighted(x, y, A, np.ones(7), tied=True),
        ref.grad_sym_tied(x, y, A),
        rtol=1e-10,
        atol=1e-12,
    )
