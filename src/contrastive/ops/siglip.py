"""The sigmoid loss of SigLIP (Zhai et al. 2023) on the engine: one pass, no normaliser.

a (B, d), b (B, d), S = inv_temp A B^T + bias, y_ij = 1 on the diagonal and -1 elsewhere:

    loss_i = sum_j -log sigmoid(y_ij S_ij) = sum_j softplus(X_ij),   X_ij = -y_ij S_ij

Every entry is independent, so one visit of each tile gives the loss and, given the weights
w of sum_i w_i loss_i, the gradient:
    dS_ij = w_i d softplus(X_ij) / dS_ij = -y_ij w_i sigmoid(X_ij)
    g_a += dS B,  g_b += dS^T A  (times inv_temp),  d/d(bias) = sum_ij dS_ij,
    d/d(inv_temp) = sum_ij dS_ij a_i . b_j = sum_i a_i . g_a_i / inv_temp
For 'mean' / 'sum' that single pass runs in forward; for 'none' forward computes the losses
only and backward runs the pass again with the upstream weights. Nothing is kept per tile:
memory O(B d + tile^2) (open_clip's chunked loss keeps every chunk's logits for backward).
softplus(X) = -log sigmoid(-X) is exact for every X (no threshold approximation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .common import Blocks, rowdot
from .engine import Build, Grads, OnePassObjective, present
from .gemm import tile_mm
from .tiles import TileBuffers, walk


class SigLIPObjective(OnePassObjective):
    """Sigmoid loss of a (B, d), b (B, d) with scalar bias (or of some rows of a against all of b)."""

    def __init__(
        self,
        zs: Sequence[Blocks | None],
        inv_temp: float,
        bias: float,
        needs: Sequence[bool],
        bs: int,
        offset: int = 0,
    ):
        self.a, self.b = present(zs[0]), present(zs[1])
        self.n = self.a.shape[0]
        self.inv_temp, self.bias, self.bs, self.needs = inv_temp, bias, bs, needs
        self.offset = offset  # row i's positive is column offset + i (a rank's rows: its offset)

    def _pass(self, w: torch.Tensor | None) -> tuple[torch.Tensor, Grads | None]:
        a, b, inv_temp, bs = self.a, self.b, self.inv_temp, self.bs
        B = a.shape[0]
        buf = TileBuffers(a.dtype, a.device)
        shift = a.new_full((1, 1), self.bias)
        losses = a.new_zeros(B)
        if w is not None:
            ga, gb = a.new_zeros(a.shape), b.new_zeros(b.shape)  # (B, d), (C, d)
            d_bias = a.new_zeros(())
        for i0, i1, j0, j1, ai, a_i, b_j in walk(a, b, inv_temp, bs, buf):
            X = tile_mm(ai, b_j, buf.get("X", i1 - i0, j1 - j0), shift)  # S_IJ
            diag = X.diagonal(self.offset + i0 - j0)  # y = +1 entries (empty off-tile)
            diag.neg_()  # X = -y S
            losses[i0:i1] -= F.logsigmoid(X.neg()).sum(1)  # softplus(X) = -log sigmoid(-X)
            if w is None:
                continue
            X.sigmoid_()  # sigmoid(X)
            X.mul_(w[i0:i1, None])
            X.diagonal(self.offset + i0 - j0).neg_()  # dS = -y w sigmoid(X)
            d_bias += X.sum()  # d/d(bias) = sum dS
            ga[i0:i1].addmm_(X, b_j)  # g_a += dS B
            if self.needs[1]:
                gb[j0:j1].addmm_(X.T, a_i)  # g_b += dS^T A
        if w is None:
            return losses, None
        d_inv = rowdot(a, ga).sum()  # sum dS_ij a_i . b_j
        ga.mul_(inv_temp)
        gb.mul_(inv_temp)
        return losses, ([ga, gb if self.needs[1] else None], d_inv, d_bias)


def siglip_objective(bs: int) -> Build:
    """The engine's ``build`` for the sigmoid loss of inputs (a, b)."""

    def build(zs, inv_temp, bias, needs):
        return SigLIPObjective(zs, inv_temp, bias, needs, bs)

    return build
