"""Tier 1 for the engine's newer objectives: SupCon, retrieval, SigLIP and decoupled InfoNCE
references, analytic gradients against central finite differences (float64)."""

import numpy as np
import pytest

from contrastive.gradcheck import central_differences
from contrastive.reference import info_nce as nce
from contrastive.reference import pair_nce as pnce
from contrastive.reference import retrieval_loss as ret
from contrastive.reference import siglip_loss as sig
from contrastive.reference import supcon_loss as sup


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def fd_scalar(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("normalize", [True, False])
def test_supcon_grad_matches_fd(rng, normalize):
    z = rng.normal(size=(11, 3)) * (1.0 if normalize else 0.5)
    y = np.array([0, 1, 0, 2, 1, 0, 3, 2, 1, 4, 0])  # classes 3, 4 have one row only
    w = rng.uniform(0.5, 1.5, size=11)
    g, gt = sup.grad(z, y, 0.3, normalize, weights=w)
    assert rel_err(g, central_differences(lambda x: w @ sup.forward(x, y, 0.3, normalize), z.copy())) < 1e-6
    assert gt == pytest.approx(fd_scalar(lambda t: w @ sup.forward(z, y, t, normalize), 0.3), rel=1e-6)


def test_supcon_rows_without_positive_and_mean_weights():
    z = np.eye(3)
    y = np.array([0, 0, 1])
    assert sup.forward(z, y, 0.5)[2] == 0.0
    np.testing.assert_allclose(sup.mean_weights(y), [0.5, 0.5, 0.0])


def test_supcon_with_two_views_and_distinct_labels_is_nt_xent(rng):
    z = rng.normal(size=(8, 3))
    y = np.arange(8) % 4
    np.testing.assert_allclose(sup.forward(z, y, 0.4), nce.forward(z, 0.4), rtol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(
    "y", [[0, 1, 0, 2, 1, 0, 3, 2, 1, 4, 0], [0] * 11, [5, 5, 5, 1, 1, 2, 3, 4, 6, 7, 8]]
)  # singletons; one label (no negative); a class with only positives' rows
def test_pair_nce_grad_matches_fd(rng, normalize, y):
    z = rng.normal(size=(11, 3)) * (1.0 if normalize else 0.5)
    y = np.array(y)
    w = rng.uniform(0.5, 1.5, size=11)
    g, gt = pnce.grad(z, y, 0.3, normalize, weights=w)
    fd = central_differences(lambda x: w @ pnce.forward(x, y, 0.3, normalize), z.copy())
    assert np.max(np.abs(g - fd)) <= 1e-6 * max(np.max(np.abs(fd)), 1.0)
    assert gt == pytest.approx(
        fd_scalar(lambda t: w @ pnce.forward(z, y, t, normalize), 0.3), rel=1e-6, abs=1e-9
    )


def test_pair_nce_with_two_views_and_distinct_labels_is_nt_xent(rng):
    z = rng.normal(size=(8, 3))
    y = np.arange(8) % 4
    np.testing.assert_allclose(pnce.forward(z, y, 0.4), nce.forward(z, 0.4), rtol=1e-12)
    np.testing.assert_allclose(pnce.mean_weights(y), np.full(8, 1 / 8))
    assert pnce.mean_weights(np.arange(5)).sum() == 0.0


@pytest.mark.parametrize("neg_shape", [None, (5, 2, 3), (4, 3)])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("ids", [None, [0, 1, 0, 2, 1]])
def test_retrieval_grad_matches_fd(rng, neg_shape, symmetric, ids):
    a, p = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    n = None if neg_shape is None else rng.normal(size=neg_shape)
    w = rng.uniform(0.5, 1.5, size=5)
    kw = dict(symmetric=symmetric, positive_ids=ids)
    ga, gp, gn, gt = ret.grad(a, p, n, 0.3, weights=w, **kw)

    def f(a_, p_, n_, t=0.3):
        return w @ ret.forward(a_, p_, n_, t, **kw)

    assert rel_err(ga, central_differences(lambda x: f(x, p, n), a.copy())) < 1e-6
    assert rel_err(gp, central_differences(lambda x: f(a, x, n), p.copy())) < 1e-6
    if n is not None:
        assert rel_err(gn, central_differences(lambda x: f(a, p, x), n.copy())) < 1e-6
    assert gt == pytest.approx(fd_scalar(lambda t: f(a, p, n, t), 0.3), rel=1e-6)


def test_retrieval_symmetric_without_negatives_is_clip(rng):
    a, p = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    np.testing.assert_allclose(
        ret.forward(a, p, None, 0.2, symmetric=True), nce.clip_forward(a, p, 0.2), rtol=1e-12
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_siglip_grad_matches_fd(rng, normalize):
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    w = rng.uniform(0.5, 1.5, size=6)
    ga, gb, gt, gbias = sig.grad(a, b, 0.2, -1.5, normalize, weights=w)

    def f(a_, b_, t=0.2, bias=-1.5):
        return w @ sig.forward(a_, b_, t, bias, normalize)

    assert rel_err(ga, central_differences(lambda x: f(x, b), a.copy())) < 1e-6
    assert rel_err(gb, central_differences(lambda x: f(a, x), b.copy())) < 1e-6
    assert gt == pytest.approx(fd_scalar(lambda t: f(a, b, t), 0.2), rel=1e-6)
    assert gbias == pytest.approx(fd_scalar(lambda c: f(a, b, 0.2, c), -1.5), rel=1e-6)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_decoupled_info_nce_grad_matches_fd(rng, exclude_self):
    z = rng.normal(size=(10, 3))
    w = rng.uniform(size=10)
    g, gt = nce.grad(z, 0.3, exclude_self, weights=w, decoupled=True)

    def f(x, t=0.3):
        return w @ nce.forward(x, t, exclude_self, decoupled=True)

    assert rel_err(g, central_differences(f, z.copy())) < 1e-6
    assert gt == pytest.approx(fd_scalar(lambda t: f(z, t), 0.3), rel=1e-6)
    # the decoupled denominator is the full one minus the positive's term
    full = nce.forward(z, 0.3, exclude_self)
    assert np.all(nce.forward(z, 0.3, exclude_self, decoupled=True) < full)
