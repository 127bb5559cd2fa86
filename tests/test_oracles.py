"""The oracles of ``tests/oracles.py`` against the NumPy float64 references of
``contrastive.reference``: values and autograd gradients (inputs, temperature, bias) to 1e-10,
for every reduction, default and non-default temperatures, with a non-uniform upstream
gradient for ``reduction='none'``. The references are checked against central finite
differences in ``tests/reference/``; this closes the chain, so a fast path checked against an
oracle is checked against the derivation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastive.reference import contrastive_loss as ref_margin
from contrastive.reference import info_nce as ref_info_nce
from contrastive.reference import pair_nce as ref_pair_nce
from contrastive.reference import retrieval_loss as ref_retrieval
from contrastive.reference import siglip_loss as ref_siglip
from contrastive.reference import supcon_loss as ref_supcon

from . import oracles

TOL = dict(rtol=1e-10, atol=1e-10)
REDUCTIONS = ("mean", "sum", "none")


def leaf(x: np.ndarray | float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def upstream(n: int, reduction: str, seed: int = 0) -> torch.Tensor | None:
    """Random weights in [0.5, 1.5) for 'none' (the upstream gradient), None otherwise."""
    if reduction != "none":
        return None
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5


def backward(out: torch.Tensor, w: torch.Tensor | None) -> None:
    (out * w).sum().backward() if w is not None else (2.5 * out).backward()  # grad_output != 1


def ref_weights(reduction: str, n: int, w: torch.Tensor | None, mean_count: int | None = None) -> np.ndarray:
    """The reference's per-row weights of the same backward: w, 2.5 (sum) or 2.5 / count (mean)."""
    if w is not None:
        return w.numpy()
    return np.full(n, 2.5 if reduction == "sum" else 2.5 / (mean_count or n))


def reduced(per_row: np.ndarray, reduction: str, count: int | None = None) -> np.ndarray:
    if reduction == "none":
        return per_row
    return per_row.sum() / (1 if reduction == "sum" else (count or len(per_row)))


def close(got: torch.Tensor | None, want: np.ndarray | float) -> None:
    assert got is not None
    torch.testing.assert_close(got.detach(), torch.as_tensor(want, dtype=torch.float64), **TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.5, 0.07])
@pytest.mark.parametrize(
    "exclude_self, decoupled, normalize",
    [(True, False, True), (False, False, True), (True, True, True), (True, False, False)],
)
def test_nt_xent_and_info_nce(reduction, temperature, exclude_self, decoupled, normalize):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(8, 5)) * (1.0 if normalize else 0.4)
    kw = dict(exclude_self=exclude_self, decoupled=decoupled, normalize=normalize)
    zt, t, w = leaf(z), leaf(temperature), upstream(8, reduction)
    out = oracles.nt_xent(zt, t, reduction, **kw)
    close(out, reduced(ref_info_nce.forward(z, temperature, **kw), reduction))
    backward(out, w)
    gz, gt = ref_info_nce.grad(z, temperature, weights=ref_weights(reduction, 8, w), **kw)
    close(zt.grad, gz)
    close(t.grad, gt)
    # the two-view form is the stacked form
    close(oracles.info_nce(zt[:4], zt[4:], t, reduction, **kw), out)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature, normalize", [(0.07, True), (0.3, True), (0.3, False)])
def test_clip_loss(reduction, temperature, normalize):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) * 0.7
    at, bt, w = leaf(a), leaf(b), upstream(6, reduction)
    out = oracles.clip_loss(at, bt, temperature, reduction, normalize=normalize)
    close(out, reduced(ref_info_nce.clip_forward(a, b, temperature, normalize), reduction))
    backward(out, w)
    ga, gb = ref_info_nce.clip_grad(a, b, temperature, normalize, weights=ref_weights(reduction, 6, w))
    close(at.grad, ga)
    close(bt.grad, gb)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature, normalize", [(0.1, True), (0.5, True), (0.5, False)])
def test_supcon_loss(reduction, temperature, normalize):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(9, 4)) * (1.0 if normalize else 0.5)
    labels = np.array([0, 1, 0, 2, 1, 0, 3, 2, 4])  # rows 6 and 8 have no positive
    y = torch.from_numpy(labels)
    count = oracles.supcon_anchor_count(y)
    assert count == 7
    zt, t, w = leaf(z), leaf(temperature), upstream(9, reduction)
    out = oracles.supcon_loss(zt, y, t, reduction, normalize=normalize)
    close(out, reduced(ref_supcon.forward(z, labels, temperature, normalize), reduction, count))
    backward(out, w)
    weights = ref_weights(reduction, 9, w, count)
    if reduction == "mean":  # the reference's own 'mean' weights: 1 / count on rows with a positive
        weights = 2.5 * ref_supcon.mean_weights(labels)
    gz, gt = ref_supcon.grad(z, labels, temperature, normalize, weights=weights)
    close(zt.grad, gz)
    close(t.grad, gt)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature, normalize", [(0.07, True), (0.5, True), (0.5, False)])
@pytest.mark.parametrize(
    "labels", [[0, 1, 0, 2, 1, 0, 3, 2, 4], [1] * 9, list(range(9))]
)  # mixed with singletons; one label; no positive pair
def test_pair_nce(reduction, temperature, normalize, labels):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(9, 4)) * (1.0 if normalize else 0.5)
    labels = np.array(labels)
    y = torch.from_numpy(labels)
    count = oracles.pair_nce_count(y)
    zt, t, w = leaf(z), leaf(temperature), upstream(9, reduction)
    out = oracles.pair_nce(zt, y, t, reduction, normalize=normalize)
    close(out, reduced(ref_pair_nce.forward(z, labels, temperature, normalize), reduction, max(count, 1)))
    backward(out, w)
    weights = ref_weights(reduction, 9, w, max(count, 1))
    if reduction == "mean":  # the reference's own 'mean' weights: 1 / #pairs on every row
        weights = 2.5 * ref_pair_nce.mean_weights(labels)
    gz, gt = ref_pair_nce.grad(z, labels, temperature, normalize, weights=weights)
    close(zt.grad, gz)
    close(t.grad, gt)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("negatives", [None, "hard", "shared"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize(
    "temperature, with_ids, normalize", [(0.05, False, True), (0.2, True, True), (0.2, True, False)]
)
def test_retrieval_loss(reduction, negatives, symmetric, temperature, with_ids, normalize):
    rng = np.random.default_rng(4)
    B, d = 5, 4
    a, p = rng.normal(size=(B, d)), rng.normal(size=(B, d))
    n = {None: None, "hard": rng.normal(size=(B, 2, d)), "shared": rng.normal(size=(3, d))}[negatives]
    ids = np.array([0, 1, 0, 2, 1]) if with_ids else None
    at, pt, t, w = leaf(a), leaf(p), leaf(temperature), upstream(B, reduction)
    nt = None if n is None else leaf(n)
    idt = None if ids is None else torch.from_numpy(ids)
    out = oracles.retrieval_loss(at, pt, nt, t, reduction, symmetric=symmetric, ids=idt, normalize=normalize)
    kw = dict(symmetric=symmetric, positive_ids=ids, normalize=normalize)
    close(out, reduced(ref_retrieval.forward(a, p, n, temperature, **kw), reduction))
    backward(out, w)
    ga, gp, gn, gt = ref_retrieval.grad(a, p, n, temperature, weights=ref_weights(reduction, B, w), **kw)
    close(at.grad, ga)
    close(pt.grad, gp)
    close(t.grad, gt)
    if n is not None:
        close(nt.grad, gn)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "temperature, bias, normalize", [(0.1, -10.0, True), (1.0, 0.5, True), (0.5, -2.0, False)]
)
def test_siglip_loss(reduction, temperature, bias, normalize):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) * 0.6
    at, bt, t, c, w = leaf(a), leaf(b), leaf(temperature), leaf(bias), upstream(6, reduction)
    out = oracles.siglip_loss(at, bt, t, c, reduction, normalize=normalize)
    close(out, reduced(ref_siglip.forward(a, b, temperature, bias, normalize), reduction))
    backward(out, w)
    ga, gb, gt, gc = ref_siglip.grad(a, b, temperature, bias, normalize, weights=ref_weights(reduction, 6, w))
    close(at.grad, ga)
    close(bt.grad, gb)
    close(t.grad, gt)
    close(c.grad, gc)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [1.0, 2.5])
def test_contrastive_loss(reduction, margin):
    rng = np.random.default_rng(6)
    u, v = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    y = np.array([1.0, 0.0, 0.3, 1.0, 0.0, 0.0, 1.0])  # soft labels allowed
    ut, vt, yt, w = leaf(u), leaf(v), leaf(y), upstream(7, reduction)
    out = oracles.contrastive_loss(ut, vt, yt, margin, reduction)
    close(out, reduced(ref_margin.forward(u, v, y, margin), reduction))
    backward(out, w)
    weights = ref_weights(reduction, 7, w)
    du, dv, dy = ref_margin.grad(u, v, y, margin)  # per pair: row b depends on pair b only
    close(ut.grad, du * weights[:, None])
    close(vt.grad, dv * weights[:, None])
    close(yt.grad, dy * weights)


@pytest.mark.parametrize("temperature", [0.5, 0.05])
def test_row_slices(temperature):
    """nt_xent_rows, clip_loss_rows and row_lse on a slice of rows equal the reference's rows."""
    rng = np.random.default_rng(7)
    z = rng.normal(size=(10, 4))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    zt = torch.from_numpy(z)
    idx = torch.tensor([9, 0, 4, 5])
    per = ref_info_nce.forward(z, temperature, exclude_self=True, normalize=False)
    close(oracles.nt_xent_rows(zt, idx, temperature), per[idx.numpy()])
    a, b = zt[:5], zt[5:]
    per = ref_info_nce.clip_forward(a.numpy(), b.numpy(), temperature, normalize=False)
    close(oracles.clip_loss_rows(a, b, idx[2:] - 3, temperature), per[[1, 2]])
    # lse_i = loss_i + S_{i,p(i)}: the reference's rows o .. o + R, with and without self
    pos = (z * z[ref_info_nce.positives(10)]).sum(1) / temperature
    for self_col, exclude in ((3, True), (None, False)):
        want = ref_info_nce.forward(z, temperature, exclude_self=exclude, normalize=False) + pos
        close(oracles.row_lse(zt[3:7], zt, temperature, self_col), want[3:7])


def test_weighted_grads_and_reduce():
    z = leaf(np.random.default_rng(8).normal(size=(6, 3)))
    w = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    per = oracles.nt_xent(z, 0.2, "none")
    (gz,) = oracles.weighted_grads(per, w, (z,))
    want, _ = ref_info_nce.grad(z.detach().numpy(), 0.2, weights=w.numpy())
    close(gz, want)
    close(oracles.reduce(per, "mean", 4), per.sum() / 4)
    with pytest.raises(ValueError, match="reduction"):
        oracles.reduce(per, "average")
