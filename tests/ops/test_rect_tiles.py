"""ops/rect_tiles.py: the two passes over a rectangular logit matrix S = X Y^T / tau against the
dense oracle: row and column log-sum-exps, and the gradients (dS Y, dS^T X) against the
autograd of sum_i u_i lse_row_i + sum_j v_j lse_col_j, in float64 to 1e-10, at every tile
boundary, on both shift paths, square and rectangular, with and without the equal-id mask."""

import itertools

import pytest
import torch

from contrastive.ops.rect_tiles import rect_grad, rect_lse
from contrastive.ops.tiles import TileMask, use_fixed_shift

from .. import oracles

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "R, C, bs", [(1, 1, 1), (2, 2, 1), (5, 5, 2), (5, 9, 4), (9, 5, 4), (12, 17, 512), (7, 7, 3)]
)
@pytest.mark.parametrize("tau", [0.5, 0.002], ids=["fixed-shift", "online-max"])
@pytest.mark.parametrize("ids, two_sided", list(itertools.product([False, True], [False, True])))
def test_passes_equal_the_dense_oracle(R, C, bs, tau, ids, two_sided):
    g = torch.Generator().manual_seed(R * 100 + C * 10 + bs)
    x = torch.nn.functional.normalize(torch.randn(R, 4, generator=g, dtype=torch.float64), dim=1)
    y = torch.randn(C, 4, generator=g, dtype=torch.float64)
    y = torch.nn.functional.normalize(y, dim=1) * (0.5 + torch.rand(C, 1, generator=g, dtype=torch.float64))
    u = torch.rand(R, generator=g, dtype=torch.float64) - 0.3
    v = torch.rand(C, generator=g, dtype=torch.float64) - 0.3
    # equal ids among the first min(R, C) rows and columns, the row's own column kept (retrieval)
    kw = {}
    if ids:
        key = torch.arange(max(R, C)) % 2
        kw = dict(row_key=key[:R], col_key=key[:C], keep_offset=0)
    mask, drop = TileMask(**kw), oracles.tile_mask(R, C, **kw)
    inv_temp = 1 / tau
    c = inv_temp * float(y.norm(dim=1).max())  # |x_i| = 1: every |S_ij| <= c
    fixed = use_fixed_shift(c, torch.float64)
    assert fixed == (tau == 0.5)

    lse_r, lse_c = rect_lse(x, y, inv_temp, c, mask, bs, fixed, cols=two_sided)
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    want_r = oracles.row_lse(xl, yl, tau, drop=drop)
    want_c = oracles.row_lse(yl, xl, tau, drop=drop.T)
    torch.testing.assert_close(lse_r, want_r.detach(), **TOL)
    if two_sided:
        torch.testing.assert_close(lse_c, want_c.detach(), **TOL)
        objective = (u * want_r).sum() + (v * want_c).sum()
        gx, gy = rect_grad(x, y, inv_temp, c, mask, bs, fixed, lse_r, u, lse_c, v)
    else:
        assert lse_c is None
        objective = (u * want_r).sum()
        gx, gy = rect_grad(x, y, inv_temp, c, mask, bs, fixed, lse_r, u)
    want_gx, want_gy = torch.autograd.grad(objective, (xl, yl))
    torch.testing.assert_close(gx, want_gx / inv_temp, **TOL)
    torch.testing.assert_close(gy, want_gy / inv_temp, **TOL)


def test_need_y_false_returns_only_the_query_gradient():
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 3, generator=g, dtype=torch.float64),
    )
    u = torch.ones(4, dtype=torch.float64)
    c = 2.0 * float(x.norm(dim=1).max() * y.norm(dim=1).max())
    lse, _ = rect_lse(x, y, 2.0, c, TileMask(), 3, True)
    gx, gy = rect_grad(x, y, 2.0, c, TileMask(), 3, True, lse, u, need_y=False)
    assert gy is None
    full, _ = rect_grad(x, y, 2.0, c, TileMask(), 3, True, lse, u)
    torch.testing.assert_close(gx, full, rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    "N, bs, seg", list(itertools.product([2, 7, 12], [1, 3, 5, 512], [(0, 2), (1, 6), (5, 12)]))
)
@pytest.mark.parametrize("tau", [0.5, 0.002])
def test_row_segment_with_its_self_column_masked(N, bs, seg, tau):
    """What a rank of the distributed losses runs (ops/dist_objectives.py): a contiguous row
    segment x = y[r0:r1] against all N columns, column r0 + i of row i masked
    (TileMask(self_offset=r0)) or not, at every tile boundary, both shift paths."""
    r0, r1 = min(seg[0], N - 1), min(seg[1], N)
    g = torch.Generator().manual_seed(N * 100 + bs)
    y = torch.nn.functional.normalize(torch.randn(N, 4, generator=g, dtype=torch.float64), dim=1)
    x = y[r0:r1]
    w = torch.rand(r1 - r0, generator=g, dtype=torch.float64) + 0.5
    inv_temp = 1 / tau
    c, fixed = inv_temp, use_fixed_shift(inv_temp, torch.float64)
    assert fixed == (tau == 0.5)
    for self_col in (r0, None):
        mask = TileMask(self_offset=self_col)
        lse, _ = rect_lse(x, y, inv_temp, c, mask, bs, fixed)
        g_x, g_y = rect_grad(x, y, inv_temp, c, mask, bs, fixed, lse, w)
        xd, yd = x.clone().requires_grad_(), y.clone().requires_grad_()
        want = oracles.row_lse(xd, yd, tau, self_col)
        want_x, want_y = oracles.weighted_grads(want, w, (xd, yd))
        torch.testing.assert_close(lse, want.detach(), **TOL)
        torch.testing.assert_close(g_x, want_x / inv_temp, **TOL)
        torch.testing.assert_close(g_y, want_y / inv_temp, **TOL)
    empty = x[:0]
    assert rect_lse(empty, y, inv_temp, c, TileMask(), bs, fixed)[0].shape == (0,)
    gx0, gy0 = rect_grad(empty, y, inv_temp, c, TileMask(), bs, fixed, lse[:0], w[:0])
    assert gx0.shape == (0, 4) and bool((gy0 == 0).all())
