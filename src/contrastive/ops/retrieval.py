"""Retrieval loss with hard negatives (MultipleNegativesRanking-style) on the engine.

Anchors a (B, d), positives p (B, d), negatives n (M, d) (K per anchor flattened, or a shared
queue); the candidates are every positive and every negative, S = inv_temp a [p; n]^T:

    loss_i = lse_row_i - S_ii,   lse_row_i = log (sum_j exp S_ij + sum_m exp S_i,B+m)
    symmetric:  loss_i = (lse_row_i - S_ii) / 2 + (lse_col_i - S_ii) / 2,
                lse_col_j = log sum_i exp S_ij   (positive j against every anchor)

``positive_ids``: a positive j != i with the id of i's positive is not a negative of row i
(nor anchor i one of column j): masked per tile from the ids, never an N x N mask.

Pass 1: :func:`.rect_tiles.rect_lse` over (a, p) (rows, and columns when symmetric) and over
(a, n) (rows only); the two row parts combine by logaddexp. Pass 2, with u = w (w / 2 when
symmetric) and v = w / 2:
    g_a = (diag(u) R + C diag(v)) P + diag(u) R_n N,   g_p = (...)^T A,   g_n = (diag(u) R_n)^T A
    g_a_i -= w_i p_i,  g_p_i -= w_i a_i      (the positives)
and everything times inv_temp; d/d(inv_temp) = sum_i a_i . g_a_i / inv_temp. A negative tensor that
needs no gradient skips its GEMM.

The two-tower (CLIP) loss is the symmetric loss without negatives or ids (:func:`clip_objective`):
    loss_i = (lse_row_i - S_ii) / 2 + (lse_col_i - S_ii) / 2,   S = inv_temp A B^T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import Blocks, rowdot, sub_rows_
from .engine import Build, Grads, Objective, present
from .rect_tiles import rect_grad, rect_lse
from .tiles import TileMask, logit_bound


class RetrievalObjective(Objective):
    """Anchors (B, d), positives (B, d), optional negatives (M, d)."""

    def __init__(
        self,
        zs: Sequence[Blocks | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        symmetric: bool,
        positive_ids: torch.Tensor | None,
        bs: int,
    ):
        self.a, self.p, self.neg = present(zs[0]), present(zs[1]), zs[2]
        self.n = self.a.shape[0]
        self.inv_temp, self.bs, self.symmetric = inv_temp, bs, symmetric
        self.needs = needs
        ids = None if positive_ids is None else positive_ids.to(self.a.device)
        self.mask = TileMask(row_key=ids, col_key=ids, keep_offset=0) if ids is not None else TileMask()
        self.c, self.fixed = logit_bound(inv_temp, [self.a], [self.p, self.neg])
        lse_r, self.lse_c = rect_lse(
            self.a, self.p, inv_temp, self.c, self.mask, bs, self.fixed, cols=symmetric
        )
        if self.neg is not None:
            lse_n, _ = rect_lse(self.a, self.neg, inv_temp, self.c, TileMask(), bs, self.fixed)
            lse_r = torch.logaddexp(lse_r, lse_n)  # every candidate of row i
        self.lse_r = lse_r  # (B,)

    def losses(self) -> torch.Tensor:
        diag = self.inv_temp * rowdot(self.a, self.p)  # S_ii
        if self.symmetric:
            return 0.5 * (self.lse_r - diag) + 0.5 * (present(self.lse_c) - diag)
        return self.lse_r - diag

    def grad(self, w: torch.Tensor) -> Grads:
        a, p, neg, inv_temp = self.a, self.p, self.neg, self.inv_temp
        u = 0.5 * w if self.symmetric else w  # row-direction weights
        v = 0.5 * w if self.symmetric else None  # column-direction weights
        ga, gp = rect_grad(
            a,
            p,
            inv_temp,
            self.c,
            self.mask,
            self.bs,
            self.fixed,
            self.lse_r,
            u,
            self.lse_c,
            v,
            need_y=bool(self.needs[1]),
        )
        gn = None
        if neg is not None:
            ga_n, gn = rect_grad(
                a,
                neg,
                inv_temp,
                self.c,
                TileMask(),
                self.bs,
                self.fixed,
                self.lse_r,
                u,
                need_y=bool(self.needs[2]),
            )
            ga.add_(ga_n)
            if gn is not None:
                gn.mul_(inv_temp)
        sub_rows_(ga, p, w[:, None])  # positives: dS_ii -= w_i
        ga.mul_(inv_temp)
        if gp is not None:
            sub_rows_(gp, a, w[:, None])
            gp.mul_(inv_temp)
        d_inv = rowdot(a, ga).sum() / inv_temp  # sum_ij dS_ij a_i . c_j
        return [ga, gp, gn], d_inv, None


def retrieval_objective(symmetric: bool, positive_ids: torch.Tensor | None, bs: int) -> Build:
    """The engine's ``build`` for inputs (anchors, positives, negatives or None)."""

    def build(zs, inv_temp, bias, needs):
        return RetrievalObjective(zs, inv_temp, bias, needs, symmetric, positive_ids, bs)

    return build


def clip_objective(bs: int) -> Build:
    """The engine's ``build`` for the two-tower loss of inputs (a, b): symmetric retrieval of
    the anchors a against the positives b, without negatives."""

    def build(zs, inv_temp, bias, needs):
        return RetrievalObjective([*zs, None], inv_temp, bias, [*needs, False], True, None, bs)

    return build
