"""Row-block tiles: some rows X_R of a logit matrix against all its N columns Y, never held.

The engine of the distributed losses (:mod:`contrastive.distributed`), where each rank owns
the rows of its own samples and sees every column (the gathered global batch). With
S = inv_t X_R Y^T (R x N, visited one bs x bs tile at a time):

Pass 1 (normalisers), fixed shift c >= every |S_ij|:
    E_IJ = exp(S_IJ - c)                 (the self entry j = self_col + i zeroed if excluded)
    r_I += E_IJ 1,  lse_i = log r_i + c
When exp(-2c) would underflow (``use_fixed_shift``), a running max per row replaces c.

Pass 2 (weights w_i, the upstream gradient of loss_i), H = W P = diag(w / r) E:
    g_rows_I += H_IJ Y_J        (R, d)  the (WP) Y part: stays with the rows' owner
    g_cols_J += H_IJ^T X_I      (N, d)  the (WP)^T X part: summed over all row owners
The positives' one-hot part of G = P - onehot and the factor inv_t are the caller's; so is
the temperature gradient, sum_i x_i . g_rows_i = sum_ij H_ij x_i . y_j.

Flops 2 R N d in pass 1 and 4 R N d in pass 2; memory O((R + N) d + bs^2).
"""
from __future__ import annotations

from typing import Optional

import torch

from .tiles import TileBuffers, blocks, online_update


def _mask_self(T: torch.Tensor, i0: int, j0: int, self_col: Optional[int], value: float) -> None:
    """Set T[i, j] = value where global column j0 + j is row i0 + i's own column."""
    if self_col is not None:
        T.diagonal(self_col + i0 - j0).fill_(value)     # entries (i, i + offset): empty if no overlap


def rows_lse(x, y, inv_t: float, c: float, fixed: bool, bs: int, self_col: Optional[int] = None):
    """lse_i = log sum_j [j != self_col + i] exp(inv_t x_i . y_j), shape (R,)."""
    R, N = x.shape[0], y.shape[0]
    xs = x * inv_t                                                  # 1/tau folded into one operand
    buf = TileBuffers(x.dtype, x.device)
    if fixed:
        r = x.new_zeros(R)
        shift = x.new_full((1, 1), -c)
        ones = x.new_ones(bs)
        for i0, i1 in blocks(R, bs):
            for j0, j1 in blocks(N, bs):
                E = buf.get("E", i1 - i0, j1 - j0)
                torch.addmm(shift, xs[i0:i1], y[j0:j1].T, out=E)    # S_IJ - c
                torch.exp(E, out=E)                                 # in [exp(-2c), 1]
                _mask_self(E, i0, j0, self_col, 0.0)
                r[i0:i1].addmv_(E, ones[: j1 - j0])                 # row sums
        return r.log_() + c
    m, r = x.new_full((R,), float("-inf")), x.new_zeros(R)
    for i0, i1 in blocks(R, bs):
        for j0, j1 in blocks(N, bs):
            S = buf.get("S", i1 - i0, j1 - j0)
            torch.mm(xs[i0:i1], y[j0:j1].T, out=S)                  # S_IJ
            _mask_self(S, i0, j0, self_col, float("-inf"))
            online_update(m, r, slice(i0, i1), S.amax(1), lambda s: torch.exp(S - s[:, None]).sum(1))
    return m + r.log()


def rows_grad(x, y, inv_t: float, c: float, fixed: bool, bs: int, lse, w, g_cols,
              self_col: Optional[int] = None) -> torch.Tensor:
    """Returns g_rows = (W P) Y, (R, d); adds (W P)^T X into ``g_cols`` (N, d) in place."""
    R, N = x.shape[0], y.shape[0]
    xs = x * inv_t
    buf = TileBuffers(x.dtype, x.device)
    g_rows = torch.zeros_like(x)
    if fixed:
        a = w * torch.exp(c - lse)                                  # w_i / r_i
        shift = x.new_full((1, 1), -c)
    for i0, i1 in blocks(R, bs):
        for j0, j1 in blocks(N, bs):
            H = buf.get("H", i1 - i0, j1 - j0)
            if fixed:
                torch.addmm(shift, xs[i0:i1], y[j0:j1].T, out=H)
                torch.exp(H, out=H)                                 # E_IJ
                H.mul_(a[i0:i1, None])                              # diag(w_I / r_I) E = W_I P_IJ
            else:
                torch.mm(xs[i0:i1], y[j0:j1].T, out=H)
                H.sub_(lse[i0:i1, None]).exp_()                     # P_IJ
                H.mul_(w[i0:i1, None])                              # W_I P_IJ
            _mask_self(H, i0, j0, self_col, 0.0)
            g_rows[i0:i1].addmm_(H, y[j0:j1])                       # g_I += H Y_J
            g_cols[j0:j1].addmm_(H.T, x[i0:i1])                     # g_J += H^T X_I
    return g_rows
