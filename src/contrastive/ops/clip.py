"""The two-tower (CLIP) loss on the engine: S = inv_temp A B^T rectangular, never held.

    loss_i = (lse_row_i - S_ii) / 2 + (lse_col_i - S_ii) / 2

Pass 1 (:func:`.rect_tiles.rect_lse`): row and column log-sum-exps.
Pass 2 (:func:`.rect_tiles.rect_grad`) with u = v = w / 2:
    dS = diag(u / r) E + E diag(v / k),  g_a = dS B,  g_b = dS^T A
    g_a_i -= w_i b_i,  g_b_i -= w_i a_i   (the positives on the diagonal)
and everything times inv_temp. d(sum w l)/d(inv_temp) = sum_i a_i . g_a_i / inv_temp.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import Blocks, rowdot, sub_rows_
from .engine import Build, Grads, Objective, present
from .rect_tiles import rect_grad, rect_lse
from .tiles import TileMask, use_fixed_shift


def shift_bound(inv_temp: float, *sides: Sequence[Blocks | None]) -> float:
    """c = inv_temp * max |x| * max |y| over the two sides' rows: every |S_ij| <= c."""
    rho = []
    for side in sides:
        rho.append(max(float(rowdot(x, x).max().sqrt()) for x in side if x is not None and x.shape[0]))
    return inv_temp * rho[0] * rho[1]


class ClipObjective(Objective):
    """Two-tower loss of a (N, d), b (N, d)."""

    def __init__(
        self, zs: Sequence[Blocks | None], inv_temp: float, bias: float | None, needs: Sequence[bool], bs: int
    ):
        self.a, self.b = present(zs[0]), present(zs[1])  # (N, d) each
        self.n = self.a.shape[0]
        self.inv_temp, self.bs, self.needs = inv_temp, bs, needs
        self.c = shift_bound(inv_temp, [self.a], [self.b])
        self.fixed = use_fixed_shift(self.c, self.a.dtype)
        self.mask = TileMask()
        self.lse_r, self.lse_c = rect_lse(
            self.a, self.b, inv_temp, self.c, self.mask, bs, self.fixed, cols=True
        )

    def losses(self) -> torch.Tensor:
        diag = self.inv_temp * rowdot(self.a, self.b)  # S_ii
        return 0.5 * (self.lse_r - diag) + 0.5 * (present(self.lse_c) - diag)

    def grad(self, w: torch.Tensor) -> Grads:
        a, b, inv_temp = self.a, self.b, self.inv_temp
        half = 0.5 * w
        ga, gb_ = rect_grad(
            a,
            b,
            inv_temp,
            self.c,
            self.mask,
            self.bs,
            self.fixed,
            self.lse_r,
            half,
            self.lse_c,
            half,
            need_y=True,
        )
        gb = present(gb_)
        sub_rows_(ga, b, w[:, None])  # positives on the diagonal
        sub_rows_(gb, a, w[:, None])
        ga.mul_(inv_temp)
        gb.mul_(inv_temp)
        d_inv = rowdot(a, ga).sum() / inv_temp  # sum_ij dS_ij a_i . b_j
        return [ga, gb], d_inv, None


def clip_objective(bs: int) -> Build:
    """The engine's ``build`` for the two-tower loss of inputs (a, b)."""

    def build(zs, inv_temp, bias, needs):
        return ClipObjective(zs, inv_temp, bias, needs, bs)

    return build
