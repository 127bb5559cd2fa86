"""InfoNCE / NT-Xent (and its decoupled form, DCL) on the engine: the symmetric tile passes
of :mod:`.sym_tiles` plus the positives, O(N d).

Rows z_i (N = 2B stacked views), positive p(i) = (i + B) mod N, S = inv_temp Z Z^T:

    loss_i = lse_i - S_{i,p(i)},  lse_i = log sum_k [k a candidate of i] exp S_ik

Candidates: every k except i itself when ``exclude_self`` (SimCLR) and except p(i) when
``decoupled`` (DCL, Yeh et al. 2022: the positive left out of the denominator). Both masks are
symmetric (p is an involution), so the upper-triangle tiles suffice.

Gradient of sum_i w_i loss_i, the (W G + (W G)^T) Z / tau of NT-Xent (Chen et al. 2020, SimCLR;
docs/derivations/info_nce.md, "Gradient with respect to Z") without forming G:
    g = (W P + (W P)^T) Z               the tile passes (P the masked row softmax)
    g_i -= (w_i + w_p(i)) z_p(i)        the one-hot part of G and G^T
    grad_z = inv_temp g
    d/d(inv_temp) = sum_i z_i . grad_z_i / (2 inv_temp)    (every logit is degree 2 in Z)

Flops 4 N^2 d (half the tiles), memory O(N d + tile^2). See docs/derivations/info_nce.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import Blocks, positive_index, rolled, rowdot, sub_rows_
from .engine import Build, Grads, Objective, present
from .sym_tiles import sym_grad, sym_lse
from .tiles import TileMask, logit_bound


def pair_dots(z: Blocks) -> torch.Tensor:
    """z_i . z_p(i), p(i) = (i + n/2) mod n (two stacked views), ``(n,)``; the rows z[p] are
    never gathered into a copy."""
    n = z.shape[0]
    pos = z.new_empty(n)
    for i0, p0, k in rolled(n, n // 2):
        pos[i0 : i0 + k] = rowdot(z, z, i0, p0, k)
    return pos


def sub_pair_grad_(g: torch.Tensor, z: Blocks, w: torch.Tensor) -> None:
    """g_i -= (w_i + w_p(i)) z_p(i) in place: the one-hot part of W G + (W G)^T, from
    d/dz of -sum_i w_i z_i . z_p(i) (p an involution)."""
    n = z.shape[0]
    wp = (w + w.roll(-(n // 2)))[:, None]  # (n, 1) w_i + w_p(i)
    for i0, p0, k in rolled(n, n // 2):
        sub_rows_(g, z, wp, i0, p0, k)


class InfoNCEObjective(Objective):
    """Two-view InfoNCE of stacked z (N, d) on the symmetric tile passes."""

    def __init__(
        self,
        zs: Sequence[Blocks | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        exclude_self: bool,
        decoupled: bool,
        bs: int,
    ):
        z = self.z = present(zs[0])  # (N, d) rows, made block by block
        self.n = N = z.shape[0]
        self.inv_temp, self.bs = inv_temp, bs
        self.p = positive_index(N, z.device)  # (N,) p(i)
        self.mask = TileMask(
            self_offset=0 if exclude_self else None,
            row_key=self.p if decoupled else None,  # masked: j == p(i)
            col_key=torch.arange(N, device=z.device) if decoupled else None,
        )
        self.c, self.fixed = logit_bound(inv_temp, [z])  # every |S_ij| <= c
        self.lse = sym_lse(z, inv_temp, self.c, self.mask, bs, self.fixed)  # (N,) pass 1

    def losses(self) -> torch.Tensor:
        return self.lse - self.inv_temp * pair_dots(self.z)  # -log P_{i,p(i)}

    def grad(self, w: torch.Tensor) -> Grads:
        z, inv_temp = self.z, self.inv_temp
        g = sym_grad(z, inv_temp, self.c, self.lse, w, self.mask, self.bs, self.fixed)  # (WP + (WP)^T) Z
        sub_pair_grad_(g, z, w)  # - (W onehot(p) + its transpose) Z
        g.mul_(inv_temp)  # (WG + (WG)^T) Z / tau
        d_inv = rowdot(z, g).sum() / (2 * inv_temp)  # d/d(inv_temp)
        return [g], d_inv, None


def info_nce_objective(exclude_self: bool, decoupled: bool, bs: int) -> Build:
    """The engine's ``build`` for two-view InfoNCE of one stacked ``(N, d)`` input."""

    def build(zs, inv_temp, bias, needs):
        return InfoNCEObjective(zs, inv_temp, bias, needs, exclude_self, decoupled, bs)

    return build
