"""The row-block engine of the distributed losses against dense float64 formulas, in one
process: any contiguous row segment, self mask at any global offset, every tile boundary,
both shift paths."""

import itertools

import pytest
import torch

from contrastive.ops.info_nce_rows import rows_grad, rows_lse
from contrastive.ops.tiles import use_fixed_shift

from .. import oracles


def dense(x, y, inv_t, self_col, w):
    """(lse, W P y, (W P)^T x) of the row-sliced oracle: the autograd of sum_i w_i lse_i with
    respect to x and y, divided by inv_t (rows_grad leaves the 1 / tau to its caller)."""
    x, y = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    lse = oracles.row_lse(x, y, 1 / inv_t, self_col)
    g_x, g_y = oracles.weighted_grads(lse, w, (x, y))
    return lse.detach(), g_x / inv_t, g_y / inv_t


@pytest.mark.parametrize(
    "N, bs, seg", list(itertools.product([2, 7, 12], [1, 3, 5, 512], [(0, 2), (1, 6), (5, 12)]))
)
@pytest.mark.parametrize("tau", [0.5, 0.002])
def test_rows_engine_equals_dense(N, bs, seg, tau):
    r0, r1 = min(seg[0], N - 1), min(seg[1], N)
    g = torch.Generator().manual_seed(N * 100 + bs)
    y = torch.nn.functional.normalize(torch.randn(N, 4, generator=g, dtype=torch.float64), dim=1)
    x = y[r0:r1]
    w = torch.rand(r1 - r0, generator=g, dtype=torch.float64) + 0.5
    inv_t = 1 / tau
    c = inv_t
    fixed = use_fixed_shift(c, torch.float64)
    assert fixed == (tau == 0.5)
    for self_col in (r0, None):
        lse = rows_lse(x, y, inv_t, c, fixed, bs, self_col)
        g_cols = torch.zeros_like(y)
        g_rows = rows_grad(x, y, inv_t, c, fixed, bs, lse, w, g_cols, self_col)
        for got, want in zip((lse, g_rows, g_cols), dense(x, y, inv_t, self_col, w)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_rows_engine_rectangular_and_empty():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(3, 5, generator=g, dtype=torch.float64),
        torch.randn(8, 5, generator=g, dtype=torch.float64),
    )
    w = torch.ones(3, dtype=torch.float64)
    lse = rows_lse(a, b, 2.0, 30.0, True, 2)
    g_cols = torch.zeros_like(b)
    g_rows = rows_grad(a, b, 2.0, 30.0, True, 2, lse, w, g_cols)
    for got, want in zip((lse, g_rows, g_cols), dense(a, b, 2.0, None, w)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    empty = a[:0]
    assert rows_lse(empty, b, 2.0, 30.0, True, 2).shape == (0,)
    assert rows_grad(empty, b, 2.0, 30.0, True, 2, lse[:0], w[:0], g_cols).shape == (0, 5)
