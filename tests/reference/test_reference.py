"""Tier 1: the NumPy references' analytic gradients against central finite differences."""

import numpy as np
import pytest

from contrastive.gradcheck import central_differences
from contrastive.reference import contrastive_loss as cl
from contrastive.reference import cosine_similarity as cs
from contrastive.reference import info_nce as nce


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("margin", [0.5, 1.0, 3.0])
def test_contrastive_loss_grad_matches_fd(rng, margin):
    u, v = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) * 0.5
    y = rng.uniform(size=20)
    du, dv, dy = cl.grad(u, v, y, margin)
    assert rel_err(du, central_differences(lambda x: cl.forward(x, v, y, margin).sum(), u.copy())) < 1e-6
    assert rel_err(dv, central_differences(lambda x: cl.forward(u, x, y, margin).sum(), v.copy())) < 1e-6
    assert rel_err(dy, central_differences(lambda x: cl.forward(u, v, x, margin).sum(), y.copy())) < 1e-6


def test_contrastive_loss_zero_distance_is_finite():
    u = np.ones((3, 2))
    du, dv, dy = cl.grad(u, u, np.array([0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(du)) and np.all(du == 0)


def test_contrastive_loss_seed_label_convention():
    # y = 1 similar: only the distance term; y = 0: only the hinge
    u, v = np.zeros((1, 2)), np.array([[0.6, 0.8]])
    assert cl.forward(u, v, np.array([1.0]))[0] == pytest.approx(0.5)
    assert cl.forward(u, v, np.array([0.0]), margin=2.0)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_grad_matches_fd(rng, exclude_self, normalize):
    z = rng.normal(size=(10, 3)) * (1.0 if normalize else 0.4)
    w = rng.uniform(size=10)
    g, gt = nce.grad(z, 0.3, exclude_self, normalize, weights=w)
    fd = central_differences(lambda x: w @ nce.forward(x, 0.3, exclude_self, normalize), z.copy())
    assert rel_err(g, fd) < 1e-6
    fd_t = (
        w @ nce.forward(z, 0.3 + 1e-6, exclude_self, normalize)
        - w @ nce.forward(z, 0.3 - 1e-6, exclude_self, normalize)
    ) / 2e-6
    assert gt == pytest.approx(fd_t, rel=1e-6)


def test_info_nce_seed_002_formula(rng):
    """grad_Z L = (G + G^T) Z / (N tau) for unit rows, self included (seed 002 exactly)."""
    z = rng.normal(size=(8, 3))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    tau = 0.7
    L = z @ z.T / tau
    P = np.exp(L) / np.exp(L).sum(1, keepdims=True)
    G = P - np.eye(8)[nce.positives(8)]
    g, _ = nce.grad(z, tau, exclude_self=False, normalize=False)
    np.testing.assert_allclose(g, (G + G.T) @ z / (8 * tau), rtol=1e-12)


def test_info_nce_odd_n_rejected():
    with pytest.raises(ValueError, match="even"):
        nce.positives(5)


def test_cosine_map_grad_matches_fd(rng):
    x, y, M = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.normal(size=(3, 4))
    g = cs.grad_map(x, y, M)
    assert rel_err(g, central_differences(lambda m: cs.sim_map(x, y, m).sum(), M.copy())) < 1e-6


def test_cosine_sym_grads_match_fd(rng):
    d = 4
    x, y = rng.normal(size=(6, d)), rng.normal(size=(6, d))
    R = rng.normal(size=(d, d))
    A = R @ R.T + np.eye(d)
    untied = cs.grad_sym_untied(x, y, A)
    # untied: perturb one entry at a time (A no longer symmetric; y^T A x form)
    assert rel_err(untied, central_differences(lambda a: cs.sim_sym(x, y, a).sum(), A.copy())) < 1e-6
    # tied: perturb A_ij and A_ji together
    iu = np.triu_indices(d)

    def f(packed):
        B = np.zeros((d, d))
        B[iu] = packed
        return cs.sim_sym(x, y, B + B.T - np.diag(np.diag(B))).sum()

    tied = cs.grad_sym_tied(x, y, A)[iu]
    assert rel_err(tied, central_differences(f, A[iu].copy())) < 1e-6


def test_map_and_sym_agree_with_A_equal_MtM(rng):
    x, y, M = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(3, 3))
    np.testing.assert_allclose(cs.sim_map(x, y, M), cs.sim_sym(x, y, M.T @ M), rtol=1e-12)


def test_reference_imports_no_torch():
    import pathlib

    for f in pathlib.Path(cl.__file__).parent.glob("*.py"):
        assert "import torch" not in f.read_text(), f"{f.name} imports torch"
