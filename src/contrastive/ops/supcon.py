"""Supervised contrastive loss (Khosla et al. 2020, "L_out") on the engine, O(N d) memory.

Rows z_i with labels y_i, S = inv_temp Z Z^T, P(i) = {p != i : y_p = y_i}, n_i = |P(i)|:

    loss_i = lse_i - (1 / n_i) sum_{p in P(i)} S_ip,    lse_i = log sum_{a != i} exp S_ia

(0 for rows with n_i = 0). The positives never need a tile: with c_y = sum_{k : y_k = y} z_k
the class sums, sum_{p in P(i)} z_i . z_p = z_i . (c_{y_i} - z_i). The denominator is
NT-Xent's (self excluded), so the tile passes are :mod:`.sym_tiles`' with the self mask.

Gradient of sum_i w_i loss_i, v_i = w_i / n_i (0 without positives), cv_y = sum_{y_k = y} v_k z_k:
    g = (W P + (W P)^T) Z                              the tile passes
    g_k -= v_k (c_{y_k} - z_k) + (cv_{y_k} - v_k z_k)  d/dz_k of sum_i v_i z_i . (c_{y_i} - z_i)
    grad_z = inv_temp g,   d/d(inv_temp) = sum_k z_k . grad_z_k / (2 inv_temp)
So supervised contrastive costs what NT-Xent costs: the class sums are O(N d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import Blocks, row_slices, rowdot
from .engine import Build, Grads, Objective, present
from .sym_tiles import max_sq_norm, sym_grad, sym_lse
from .tiles import TileMask, use_fixed_shift


class SupConObjective(Objective):
    """SupCon of z (N, d) with integer labels (N,)."""

    def __init__(
        self,
        zs: Sequence[Blocks | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        labels: torch.Tensor,
        bs: int,
    ):
        z = self.z = present(zs[0])  # (N, d)
        self.n = z.shape[0]
        self.inv_temp, self.bs = inv_temp, bs
        _, self.cls = torch.unique(labels.to(z.device), return_inverse=True)  # (N,) class index
        counts = torch.bincount(self.cls)  # (K,)
        self.npos = (counts[self.cls] - 1).to(z.dtype)  # (N,) n_i = |P(i)|
        self.has = self.npos > 0  # rows that have a positive
        self.csum = z.new_zeros(counts.shape[0], z.shape[1])  # (K, d) c_y = sum_{y_k = y} z_k
        for s in row_slices(self.n):
            self.csum.index_add_(0, self.cls[s], z[s])
        self.mask = TileMask(self_offset=0)
        self.c = inv_temp * max_sq_norm(z)
        self.fixed = use_fixed_shift(self.c, z.dtype)
        lse = sym_lse(z, inv_temp, self.c, self.mask, bs, self.fixed)  # (N,) pass 1
        self.lse = torch.where(self.has, lse, torch.zeros_like(lse))  # N = 1 leaves no candidate

    def losses(self) -> torch.Tensor:
        z, cls = self.z, self.cls
        pos = z.new_empty(self.n)  # sum_{p in P(i)} z_i . z_p = z_i . (c_{y_i} - z_i), ROWS rows at a time
        for s in row_slices(self.n):
            pos[s] = rowdot(z[s], self.csum[cls[s]] - z[s])
        per_row = self.lse - self.inv_temp * pos / self.npos.clamp_min(1)
        return torch.where(self.has, per_row, torch.zeros_like(per_row))

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        """Average over the rows that have a positive (pytorch-metric-learning's convention)."""
        h = self.has.to(like.dtype)
        return h / h.sum().clamp_min(1)

    def grad(self, w: torch.Tensor) -> Grads:
        z, inv_temp = self.z, self.inv_temp
        w = torch.where(self.has, w, torch.zeros_like(w))  # rows without positives: no loss
        g = sym_grad(z, inv_temp, self.c, self.lse, w, self.mask, self.bs, self.fixed)  # (WP + (WP)^T) Z
        v = (w / self.npos.clamp_min(1))[:, None]  # (N, 1) v_i = w_i / n_i
        cls, csum = self.cls, self.csum
        cv = torch.zeros_like(csum)  # (K, d) cv_y = sum_{y_k = y} v_k z_k
        for s in row_slices(self.n):  # (ROWS, d) temporaries, never (N, d)
            cv.index_add_(0, cls[s], v[s] * z[s])
        for s in row_slices(self.n):
            vz = v[s] * z[s]
            g[s].sub_(v[s] * (csum[cls[s]] - z[s]) + (cv[cls[s]] - vz))  # the positives' part
        g.mul_(inv_temp)
        d_inv = rowdot(z, g).sum() / (2 * inv_temp)  # d/d(inv_temp)
        return [g], d_inv, None


def supcon_objective(labels: torch.Tensor, bs: int) -> Build:
    """The engine's ``build`` for SupCon of one ``(N, d)`` input with ``labels`` ``(N,)``."""

    def build(zs, inv_temp, bias, needs):
        return SupConObjective(zs, inv_temp, bias, needs, labels, bs)

    return build
