"""The learner's objectives: gradients vs finite differences, PSD projection, solvers."""

import numpy as np
import pytest

from contrastive.metric import CosineSimilarityLearner, pairs_from_labels
from contrastive.metric import _objective as obj


def central_diff(f, P, eps=1e-6):
    G = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        Pp, Pm = P.copy(), P.copy()
        Pp[idx] += eps
        Pm[idx] -= eps
        G[idx] = (f(Pp) - f(Pm)) / (2 * eps)
    return G


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    similar = np.arange(12) % 2 == 0
    B = rng.normal(size=(4, 4))
    return x, y, similar, rng, B @ B.T + np.eye(4)


HYPER = [
    ("csml", 1.0, 1.0, 0.3),
    ("csml", 0.5, 1.0, 0.0),
    ("margin", 1.0, 1.0, 0.1),
    ("margin", 2.0, 0.4, 0.0),
]


@pytest.mark.parametrize("objective,alpha,margin,beta", HYPER)
def test_map_objective_gradient(data, objective, alpha, margin, beta):
    x, y, similar, rng, _ = data
    M, M0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    hyper = (objective, alpha, margin, beta)
    _, g = obj.map_loss_grad(M, x, y, similar, M0, *hyper)
    numeric = central_diff(lambda P: obj.map_loss_grad(P, x, y, similar, M0, *hyper)[0], M)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("objective,alpha,margin,beta", HYPER)
def test_symmetric_objective_gradient(data, objective, alpha, margin, beta):
    x, y, similar, rng, A = data
    A0 = np.eye(4)
    hyper = (objective, alpha, margin, beta)
    _, H = obj.sym_loss_grad(A, x, y, similar, A0, *hyper)
    assert np.allclose(H, H.T)

    def f(s):
        return obj.sym_loss_grad(obj.unpack(s, 4), x, y, similar, A0, *hyper)[0]

    numeric = central_diff(f, obj.pack(A))
    np.testing.assert_allclose(obj.tie(H), numeric, rtol=1e-6, atol=1e-8)


def test_margin_loss_ignores_easy_pairs():
    sim = np.array([1.0, 0.5, -0.2, 0.3])
    similar = np.array([True, True, False, False])
    loss, dl = obj.pair_loss(sim, similar, "margin", alpha=1.0, margin=1.0)
    # similar at sim 1 and dissimilar below 1 - margin = 0 contribute no gradient
    assert dl[0] == 0 and dl[2] == 0
    assert loss == pytest.approx(0.5 * 0.5**2 / 2 + 0.5 * 0.3**2 / 2)


def test_nonfinite_cosines_contribute_nothing():
    sim = np.array([np.nan, 0.5, 0.1])
    loss, dl = obj.pair_loss(sim, np.array([True, True, False]), "csml", 1.0, 1.0)
    assert dl[0] == 0 and np.isfinite(loss)


def test_projection_is_psd_with_floor():
    rng = np.random.default_rng(2)
    S = rng.normal(size=(6, 6))
    S = S + S.T  # indefinite
    assert np.linalg.eigvalsh(S)[0] < 0
    A = obj.project_psd(S, 1e-3)
    lam = np.linalg.eigvalsh(A)
    assert np.allclose(A, A.T) and lam[0] >= 1e-3 - 1e-12
    # the projection is the identity on matrices already above the floor
    np.testing.assert_allclose(obj.project_psd(A, 1e-3), A, atol=1e-12)


def test_clipped_chain_gradient_through_the_projection(data):
    """J(P(S)) for an indefinite S, some eigenvalues clipped: the Daleckii-Krein chain rule."""
    x, y, similar, rng, _ = data
    S = rng.normal(size=(4, 4))
    S = S + S.T + np.diag([3.0, 3.0, 0.0, 0.0])
    floor = 0.05
    lam = np.linalg.eigvalsh(S)
    assert (lam < floor).any() and (lam > floor).any()
    hyper = ("csml", 1.0, 1.0, 0.2)
    A0 = np.eye(4) / 2

    def f(s):
        A, _ = obj.clipped_chain(obj.unpack(s, 4), None, floor)
        return obj.sym_loss_grad(A, x, y, similar, A0, *hyper)[0]

    A, _ = obj.clipped_chain(S, None, floor)
    _, H = obj.sym_loss_grad(A, x, y, similar, A0, *hyper)
    _, dS = obj.clipped_chain(S, H, floor)
    numeric = central_diff(f, obj.pack(S))
    np.testing.assert_allclose(obj.tie(dS), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
def test_fitted_symmetric_metric_is_positive_definite(solver):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 5))
    labels = (X[:, 0] > 0).astype(int)
    pairs, y = pairs_from_labels(X, labels, 300, random_state=0)
    learner = CosineSimilarityLearner(form="symmetric", solver=solver, beta=0.0, n_components=None).fit(
        pairs, y
    )
    A = learner.get_mahalanobis_matrix()
    np.testing.assert_allclose(A, A.T, atol=1e-12)
    assert np.linalg.eigvalsh(A)[0] > 0


@pytest.mark.parametrize("form", ["map", "symmetric"])
@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
@pytest.mark.parametrize("objective", ["csml", "margin"])
def test_solvers_decrease_the_objective(form, solver, objective):
    """Every solver ends below the start (the problem is not convex: they may end apart)."""
    rng = np.random.default_rng(4)
    X = np.c_[rng.normal(size=(120, 2)), 3 * rng.normal(size=(120, 3))]  # signal in 2 dims
    labels = (np.arctan2(X[:, 1], X[:, 0]) > 0).astype(int)
    pairs, y = pairs_from_labels(X, labels, 400, random_state=0)
    learner = CosineSimilarityLearner(
        form=form, solver=solver, objective=objective, n_components=None, max_iter=300
    )
    learner.fit(pairs, y)
    assert learner.loss_ < learner.initial_loss_
    assert learner.score(pairs, y) > 0.7
