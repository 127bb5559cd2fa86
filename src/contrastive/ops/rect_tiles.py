"""Tile passes over a rectangular logit matrix S = inv_temp X Y^T (queries X, candidates Y).

Serves the two-tower loss (row and column softmaxes), retrieval (anchors against positives
and negatives) and any other query/candidate objective; S is visited one bs x bs tile at a
time and never held.

Pass 1 (normalisers), fixed shift c >= every |S_ij| (masked entries zeroed):
    E_IJ = exp(S_IJ - c),  r_I += E_IJ 1  (rows),  k_J += E_IJ^T 1  (columns, when asked)
    lse_row_i = log r_i + c,  lse_col_j = log k_j + c
When exp(-2c) would underflow, running maxima per row (and column) replace c.

Pass 2, the softmax part of the gradient of sum_i u_i lse_row_i + sum_j v_j lse_col_j:
    dS = diag(u / r) E + E diag(v / k)      (row softmax R and column softmax C weighted)
    g_X += dS_IJ Y_J,  g_Y += dS_IJ^T X_I
The objective adds its positives' part and the factor inv_temp.

Flops 2 R C d in pass 1, 4 R C d in pass 2 (2 when Y needs no gradient).
"""

from __future__ import annotations

import torch

from .common import Blocks
from .gemm import tile_mm
from .matryoshka import PrefixView
from .tiles import TileBuffers, TileMask, online_update, walk


def rect_lse(
    x: Blocks,
    y: Blocks,
    inv_temp: float,
    c: float,
    mask: TileMask,
    bs: int,
    fixed: bool,
    cols: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row log-sum-exps (R,) of S = inv_temp x y^T over unmasked entries, and the column ones (C,)
    when ``cols``."""
    if isinstance(x, PrefixView):  # Matryoshka: every prefix in one walk (ops/matryoshka_objectives.Joint)
        return x.joint.lse(x, y, inv_temp, c, mask, bs, fixed, cols=cols, upper=False)
    R, C = x.shape[0], y.shape[0]
    buf = TileBuffers(x.dtype, x.device)
    if fixed:
        row = x.new_zeros(R)
        col = x.new_zeros(C if cols else 0)
        shift = x.new_full((1, 1), -c)
        ones = x.new_ones(bs)
        for i0, i1, j0, j1, xi, _, y_j in walk(x, y, inv_temp, bs, buf):
            E = tile_mm(xi, y_j, buf.get("E", i1 - i0, j1 - j0), shift)  # S_IJ - c
            E.exp_()  # in [exp(-2c), 1]
            mask.apply(E, i0, j0, 0.0)
            row[i0:i1].addmv_(E, ones[: j1 - j0])  # r_I += E 1
            if cols:
                col[j0:j1].add_(E.sum(0))  # k_J += E^T 1
        return row.log_() + c, (col.log_() + c if cols else None)
    mr, rr = x.new_full((R,), float("-inf")), x.new_zeros(R)
    Cc = C if cols else 0
    mc, rc = x.new_full((Cc,), float("-inf")), x.new_zeros(Cc)
    for i0, i1, j0, j1, xi, _, y_j in walk(x, y, inv_temp, bs, buf):
        S = tile_mm(xi, y_j, buf.get("S", i1 - i0, j1 - j0))
        mask.apply(S, i0, j0, float("-inf"))
        online_update(mr, rr, slice(i0, i1), S.amax(1), lambda s: torch.exp(S - s[:, None]).sum(1))  # noqa: B023 -- called at once
        if cols:
            online_update(
                mc,
                rc,
                slice(j0, j1),
                S.amax(0),
                lambda s: torch.exp(S - s[None, :]).sum(0),  # noqa: B023 -- called at once
            )
    return mr + rr.log(), (mc + rc.log() if cols else None)


def rect_grad(
    x: Blocks,
    y: Blocks,
    inv_temp: float,
    c: float,
    mask: TileMask,
    bs: int,
    fixed: bool,
    lse_r: torch.Tensor,
    u: torch.Tensor,
    lse_c: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    need_y: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dS Y, dS^T X) with dS = diag(u) R + C diag(v) (R, C the row and column softmaxes of
    the unmasked entries); the column term only when ``lse_c`` is given, g_Y only if ``need_y``."""
    if isinstance(x, PrefixView):  # Matryoshka: recorded, every prefix in one walk later
        rec = dict(inv_temp=inv_temp, c=c, mask=mask, bs=bs, fixed=fixed, lse_r=lse_r, u=u, lse_c=lse_c, v=v)
        return x.joint.grad(x, y, need_y, False, **rec)
    buf = TileBuffers(x.dtype, x.device)
    gx = x.new_zeros(x.shape)  # (R, d)
    gy = y.new_zeros(y.shape) if need_y else y.new_empty(0)  # (C, d)
    two = lse_c is not None and v is not None
    lc = lse_c if lse_c is not None else y.new_empty(0)  # (C,) column lse, or unused
    vc = v if v is not None else y.new_empty(0)  # (C,) column weights, or unused
    shift = None
    if fixed:
        alpha = u * torch.exp(c - lse_r)  # u_i / r_i
        beta = vc * torch.exp(c - lc)  # v_j / k_j (empty if one-sided)
        shift = x.new_full((1, 1), -c)
    for i0, i1, j0, j1, xi, x_i, y_j in walk(x, y, inv_temp, bs, buf):
        E = tile_mm(xi, y_j, buf.get("E", i1 - i0, j1 - j0), shift)  # S_IJ (- c)
        H = buf.get("H", i1 - i0, j1 - j0)
        if fixed:
            E.exp_()
            mask.apply(E, i0, j0, 0.0)
            torch.mul(E, alpha[i0:i1, None], out=H)  # diag(u_I / r_I) E
            if two:
                H.addcmul_(E, beta[j0:j1][None, :])  # + E diag(v_J / k_J)
        else:
            torch.exp(E - lse_r[i0:i1, None], out=H)  # row softmax R_IJ
            mask.apply(H, i0, j0, 0.0)
            H.mul_(u[i0:i1, None])
            if two:
                E.sub_(lc[j0:j1][None, :]).exp_()  # column softmax C_IJ
                mask.apply(E, i0, j0, 0.0)
                H.addcmul_(E, vc[j0:j1][None, :])
        gx[i0:i1].addmm_(H, y_j)  # g_X += dS Y
        if need_y:
            gy[j0:j1].addmm_(H.T, x_i)  # g_Y += dS^T X
    return gx, (gy if need_y else None)
