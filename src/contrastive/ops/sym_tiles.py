"""Tile passes over a symmetric logit matrix S = inv_temp Z Z^T (one tower), never held.

S is symmetric, so only upper-triangle tiles (I <= J) are visited; every mask must be
symmetric too (self, decoupled positives j = p(i) with p an involution, equal ids).

Pass 1 (normalisers). With c = inv_temp * max_i |z_i|^2 every logit lies in [-c, c]:
    E_IJ = exp(Z_I Z_J^T inv_temp - c)         (masked entries zeroed)
    r_I += E_IJ 1,  r_J += E_IJ^T 1          (row sums, and column sums by symmetry)
    lse_i = log r_i + c
When exp(-2c) would underflow, a running max per row and per column replaces c.

Pass 2 (the softmax part of the gradient of sum_i w_i lse_i), P the row softmax:
    H = W_I P_IJ + (W_J P_JI)^T = diag(a_I) E + E diag(a_J),   a = w / r
    g_I += H Z_J,  g_J += H^T Z_I             (the diagonal tile once: H is symmetric)
so g = (W P + (W P)^T) Z. The objective adds its positives' part and the factor inv_temp.

Flops 2 N^2 d in pass 1 (half the tiles, one GEMM each) and 3 N^2 d in pass 2.
"""

from __future__ import annotations

import torch

from .common import Blocks, rowdot
from .gemm import tile_mm
from .matryoshka import PrefixView
from .tiles import TileBuffers, TileMask, online_update, walk


def max_sq_norm(z: Blocks) -> float:
    """max_i |z_i|^2 (1 for unit rows): the fixed shift is inv_temp times this."""
    return float(rowdot(z, z).max())


def sym_lse(z: Blocks, inv_temp: float, c: float, mask: TileMask, bs: int, fixed: bool) -> torch.Tensor:
    """Pass 1: lse_i = log sum_k [(i, k) not masked] exp(inv_temp z_i . z_k), shape (N,)."""
    if isinstance(z, PrefixView):  # Matryoshka: every prefix in one walk (ops/matryoshka_objectives.Joint)
        return z.joint.lse(z, z, inv_temp, c, mask, bs, fixed, cols=False, upper=True)[0]
    N = z.shape[0]
    buf = TileBuffers(z.dtype, z.device)
    if fixed:
        r = z.new_zeros(N)
        shift = z.new_full((1, 1), -c)
        ones = z.new_ones(bs)
        for i0, i1, j0, j1, zi, _, z_j in walk(z, z, inv_temp, bs, buf, upper=True):
            E = tile_mm(zi, z_j, buf.get("E", i1 - i0, j1 - j0), shift)  # S_IJ - c
            E.exp_()  # E_IJ in [exp(-2c), 1]
            mask.apply(E, i0, j0, 0.0)
            r[i0:i1].addmv_(E, ones[: j1 - j0])  # row sums
            if i0 != j0:
                r[j0:j1].add_(E.sum(0))  # column sums (symmetry)
        return r.log_() + c
    m = z.new_full((N,), float("-inf"))  # running max per row
    r = z.new_zeros(N)
    for i0, i1, j0, j1, zi, _, z_j in walk(z, z, inv_temp, bs, buf, upper=True):
        S = tile_mm(zi, z_j, buf.get("S", i1 - i0, j1 - j0))
        mask.apply(S, i0, j0, float("-inf"))
        online_update(m, r, slice(i0, i1), S.amax(1), lambda s: torch.exp(S - s[:, None]).sum(1))  # noqa: B023 -- called at once
        if i0 != j0:
            online_update(m, r, slice(j0, j1), S.amax(0), lambda s: torch.exp(S - s[None, :]).sum(0))  # noqa: B023 -- called at once
    return m + r.log()


def sym_grad(
    z: Blocks,
    inv_temp: float,
    c: float,
    lse: torch.Tensor,
    w: torch.Tensor,
    mask: TileMask,
    bs: int,
    fixed: bool,
) -> torch.Tensor:
    """Pass 2: (W P + (W P)^T) Z, shape (N, d): d(sum_i w_i lse_i)/dz divided by inv_temp."""
    if isinstance(z, PrefixView):  # Matryoshka: recorded, every prefix in one walk later
        rec = dict(inv_temp=inv_temp, c=c, mask=mask, bs=bs, fixed=fixed, lse_r=lse, u=w, lse_c=None, v=None)
        return z.joint.grad(z, z, False, True, **rec)[0]
    buf = TileBuffers(z.dtype, z.device)
    g = z.new_zeros(z.shape)  # (N, d)
    shift = None
    if fixed:
        a = w * torch.exp(c - lse)  # w_i / r_i
        shift = z.new_full((1, 1), -c)
    for i0, i1, j0, j1, zi, z_i, z_j in walk(z, z, inv_temp, bs, buf, upper=True):
        E = tile_mm(zi, z_j, buf.get("E", i1 - i0, j1 - j0), shift)  # S_IJ (- c)
        H = buf.get("H", i1 - i0, j1 - j0)
        if fixed:
            E.exp_()
            mask.apply(E, i0, j0, 0.0)
            torch.mul(E, a[j0:j1], out=H)  # E diag(a_J)
            H.addcmul_(E, a[i0:i1, None])  # + diag(a_I) E
        else:
            torch.exp(E - lse[i0:i1, None], out=H)  # P_IJ
            mask.apply(H, i0, j0, 0.0)
            H.mul_(w[i0:i1, None])  # W_I P_IJ
            if i0 == j0:
                H.add_(H.T.clone())  # + (W_I P_II)^T
            else:
                E.sub_(lse[j0:j1][None, :]).exp_()  # P_JI^T
                mask.apply(E, i0, j0, 0.0)
                H.addcmul_(E, w[j0:j1][None, :])  # + (W_J P_JI)^T
        if i0 == j0:
            g[i0:i1].addmm_(H, z_i)  # H symmetric on the diagonal
        else:
            g[i0:i1].addmm_(H, z_j)  # g_I += H Z_J
            g[j0:j1].addmm_(H.T, z_i)  # g_J += H^T Z_I
    return g
