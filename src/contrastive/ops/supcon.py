"""Supervised contrastive loss (Khosla et al. 2020, "L_out") on the engine, O(N d) memory.

Rows z_i with labels y_i, S = inv_temp Z Z^T, P(i) = {p != i : y_p = y_i}, n_i = |P(i)|:

    loss_i = lse_i - (1 / n_i) sum_{p in P(i)} S_ip,    lse_i = log sum_{a != i} exp S_ia

(0 for rows with n_i = 0). The positives never need a tile: with c_y = sum_{k : y_k = y} z_k
the class sums, sum_{p in P(i)} z_i . z_p = z_i . (c_{y_i} - z_i). The denominator is
NT-Xent's (self excluded), so the tile passes are :mod:`.sym_tiles`' with the self mask.

Gradient of sum_i w_i loss_i, v_i = w_i / n_i (0 without positives), cv_y = sum_{y_k = y} v_k z_k:
    g = (W P + (W P)^T) Z                          the tile passes
    g_k -= v_k (c_{y_k} - 2 z_k) + cv_{y_k}        d/dz_k of sum_i v_i z_i . (c_{y_i} - z_i)
    grad_z = inv_temp g,   d/d(inv_temp) = sum_k z_k . grad_z_k / (2 inv_temp)
So supervised contrastive costs what NT-Xent costs: the class sums are O(N d). The class-sum
helpers here serve the distributed form too (:class:`.dist_objectives.DistSupCon`), where the
rows i of a rank are a slice of the rows k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import Blocks, row_slices, rowdot
from .engine import Build, Grads, Objective, present
from .sym_tiles import sym_grad, sym_lse
from .tiles import TileMask, logit_bound


def classes(labels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(class index of each row ``(N,)``, rows per class ``(K,)``)."""
    _, cls = torch.unique(labels.to(device), return_inverse=True)
    return cls, torch.bincount(cls)


def class_sums(z: Blocks, cls: torch.Tensor, k: int, v: torch.Tensor | None = None) -> torch.Tensor:
    """c_y = sum_{i : y_i = y} v_i z_i (v = 1 when ``None``), ``(k, d)``, ``ROWS`` rows at a time."""
    out = z.new_zeros(k, z.shape[1])
    for s in row_slices(z.shape[0]):
        out.index_add_(0, cls[s], z[s] if v is None else v[s, None] * z[s])
    return out


def class_dots(z: Blocks, csum: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """sum_{p in P(i)} z_i . z_p = z_i . (c_{y_i} - z_i) for the rows of z, ``(n,)``."""
    pos = z.new_empty(z.shape[0])
    for s in row_slices(z.shape[0]):
        zs = z[s]
        pos[s] = rowdot(zs, csum[cls[s]] - zs)
    return pos


def row_losses(
    lse: torch.Tensor, pos: torch.Tensor, npos: torch.Tensor, has: torch.Tensor, inv_temp: float
) -> torch.Tensor:
    """loss_i = lse_i - inv_temp pos_i / n_i, 0 for the rows without a positive."""
    per_row = lse - inv_temp * pos / npos.clamp_min(1)
    return torch.where(has, per_row, torch.zeros_like(per_row))


def sub_positive_grad_(
    g: torch.Tensor,
    z: Blocks,
    v: torch.Tensor,
    csum: torch.Tensor,
    cls: torch.Tensor,
    g_all: torch.Tensor | None = None,
    cls_all: torch.Tensor | None = None,
) -> None:
    """Subtract d/dz of sum_i v_i z_i . (c_{y_i} - z_i), i over the rows of z, in place:

        g_i -= v_i (c_{y_i} - 2 z_i)          (z_i in its own term and in c_{y_i})
        g_all_k -= cv_{y_k},  cv_y = sum_{i : y_i = y} v_i z_i   (z_k in c_{y_i}, i != k)

    ``g_all``, ``cls_all``: the gradient and classes of every row the class sums run over (the
    gathered rows, distributed); by default those of z itself."""
    cv = class_sums(z, cls, csum.shape[0], v)  # (K, d)
    for s in row_slices(z.shape[0]):  # (ROWS, d) temporaries, never (N, d)
        zs = z[s]
        g[s].sub_(v[s, None] * (csum[cls[s]] - 2 * zs))
    g_all, cls_all = (g, cls) if g_all is None else (g_all, cls_all)
    for s in row_slices(g_all.shape[0]):
        g_all[s].sub_(cv[present(cls_all)[s]])


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
        self.cls, counts = classes(labels, z.device)  # (N,) class index, (K,) rows per class
        self.npos = (counts[self.cls] - 1).to(z.dtype)  # (N,) n_i = |P(i)|
        self.has = self.npos > 0  # rows that have a positive
        self.csum = class_sums(z, self.cls, counts.shape[0])  # (K, d) c_y = sum_{y_k = y} z_k
        self.mask = TileMask(self_offset=0)
        self.c, self.fixed = logit_bound(inv_temp, [z])
        lse = sym_lse(z, inv_temp, self.c, self.mask, bs, self.fixed)  # (N,) pass 1
        self.lse = torch.where(self.has, lse, torch.zeros_like(lse))  # N = 1 leaves no candidate

    def losses(self) -> torch.Tensor:
        pos = class_dots(self.z, self.csum, self.cls)
        return row_losses(self.lse, pos, self.npos, self.has, self.inv_temp)

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        """Average over the rows that have a positive (pytorch-metric-learning's convention)."""
        h = self.has.to(like.dtype)
        return h / h.sum().clamp_min(1)

    def grad(self, w: torch.Tensor) -> Grads:
        z, inv_temp = self.z, self.inv_temp
        w = torch.where(self.has, w, torch.zeros_like(w))  # rows without positives: no loss
        g = sym_grad(z, inv_temp, self.c, self.lse, w, self.mask, self.bs, self.fixed)  # (WP + (WP)^T) Z
        v = w / self.npos.clamp_min(1)  # (N,) v_i = w_i / n_i
        sub_positive_grad_(g, z, v, self.csum, self.cls)  # the positives' part
        g.mul_(inv_temp)
        d_inv = rowdot(z, g).sum() / (2 * inv_temp)  # d/d(inv_temp)
        return [g], d_inv, None


def supcon_objective(labels: torch.Tensor, bs: int) -> Build:
    """The engine's ``build`` for SupCon of one ``(N, d)`` input with ``labels`` ``(N,)``."""

    def build(zs, inv_temp, bias, needs):
        return SupConObjective(zs, inv_temp, bias, needs, labels, bs)

    return build
