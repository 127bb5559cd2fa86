r"""Row-block tile passes with per-tile masks, and SigLIP's one-pass row tiles.

The row engine of the distributed supervised-contrastive, retrieval and SigLIP losses
(:mod:`.dist_objectives`): a rank's rows ``X_R`` against every column ``Y`` of the gathered
global batch, ``S = inv_t X_R Y^T`` visited one ``bs x bs`` tile at a time, never held. It
generalises :mod:`.info_nce_rows` (whose only mask is the self column) with masks computed in
the tile from ``O(N)`` vectors (:class:`TileMask`):

* the self entry, column ``self_col + i`` of row ``i``;
* entries whose ids are equal, ``row_ids[i] == col_ids[j]`` over the first ``len(col_ids)``
  columns (false negatives of a retrieval batch: two anchors with the same positive
  document), except row ``i``'s own positive at column ``keep_col + i``.

Softmax passes (as in :mod:`.info_nce_rows`, with the fixed shift ``c`` or an online max):

    pass 1:  lse_i = log sum_j [not masked] exp(S_ij)
    pass 2:  H = diag(w) P (masked entries 0);  g_rows = H Y  (R, d);  g_cols += H^T X  (N, d)

SigLIP (no normaliser, so one pass gives the loss and, given the weights, the gradient):

    t_ij = inv_t x_i . y_j + bias,  z_ij = +1 at j = pos_col + i, else -1
    loss_i = sum_j softplus(-z_ij t_ij)        D_ij = d loss_i / d t_ij = -z_ij sigmoid(-z_ij t_ij)
    H = diag(w) D:  g_rows = H Y,  g_cols += H^T X,  d/d(bias) = sum H,  d/d(inv_t) = sum_i x_i . g_rows_i

Flops: ``2 R N d`` per pass-1 tile sweep, ``4 R N d`` per pass-2 sweep; memory
``O((R + N) d + bs^2)``; a mask costs one ``bs x bs`` boolean comparison per tile.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from .tiles import TileBuffers, blocks, online_update


class TileMask(NamedTuple):
    """Which entries of row block ``x`` against columns ``y`` are left out (see the module)."""

    self_col: Optional[int] = None          # row i's own column is self_col + i: excluded
    row_ids: Optional[torch.Tensor] = None  # (R,) ids of the rows
    col_ids: Optional[torch.Tensor] = None  # (n_ids,) ids of the first n_ids columns
    keep_col: Optional[int] = None          # row i's positive, keep_col + i, is never masked


def _apply_mask(T: torch.Tensor, i0: int, j0: int, mask: Optional[TileMask], value: float) -> None:
    """Fill the masked entries of tile T (rows i0.., columns j0..) with ``value`` in place."""
    if mask is None:
        return
    if mask.row_ids is not None and j0 < mask.col_ids.shape[0]:
        n = min(T.shape[1], mask.col_ids.shape[0] - j0)
        eq = mask.row_ids[i0:i0 + T.shape[0], None] == mask.col_ids[None, j0:j0 + n]   # (bi, n) bool
        if mask.keep_col is not None:
            eq.diagonal(mask.keep_col + i0 - j0).fill_(False)                            # the positive stays
        T[:, :n].masked_fill_(eq, value)
    if mask.self_col is not None:
        T.diagonal(mask.self_col + i0 - j0).fill_(value)                                 # empty if no overlap


def rows_lse(x: torch.Tensor, y: torch.Tensor, inv_t: float, c: float, fixed: bool, bs: int,
             mask: Optional[TileMask] = None) -> torch.Tensor:
    """lse_i = log sum_{j not masked} exp(inv_t x_i . y_j), shape (R,); -inf for a row with no
    column left."""
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
                _apply_mask(E, i0, j0, mask, 0.0)
                r[i0:i1].addmv_(E, ones[: j1 - j0])                 # row sums
        return r.log_() + c
    m, r = x.new_full((R,), float("-inf")), x.new_zeros(R)
    for i0, i1 in blocks(R, bs):
        for j0, j1 in blocks(N, bs):
            S = buf.get("S", i1 - i0, j1 - j0)
            torch.mm(xs[i0:i1], y[j0:j1].T, out=S)                  # S_IJ
            _apply_mask(S, i0, j0, mask, float("-inf"))
            online_update(m, r, slice(i0, i1), S.amax(1), lambda s: torch.exp(S - s[:, None]).sum(1))
    return m + r.log()


def rows_grad(x: torch.Tensor, y: torch.Tensor, inv_t: float, c: float, fixed: bool, bs: int,
              lse: torch.Tensor, w: torch.Tensor, g_cols: Optional[torch.Tensor],
              mask: Optional[TileMask] = None) -> torch.Tensor:
    """Returns g_rows = (W P) Y, (R, d); adds (W P)^T X into ``g_cols`` (N, d) in place unless
    it is None. P_ij = exp(inv_t x_i . y_j - lse_i) off the mask; rows with w_i = 0 must have a
    finite lse_i (pass 0 for a row without columns)."""
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
            _apply_mask(H, i0, j0, mask, 0.0)
            g_rows[i0:i1].addmm_(H, y[j0:j1])                       # g_I += H Y_J
            if g_cols is not None:
                g_cols[j0:j1].addmm_(H.T, x[i0:i1])                 # g_J += H^T X_I
    return g_rows


def siglip_rows(x: torch.Tensor, y: torch.Tensor, inv_t: float, bias: float, bs: int, pos_col: int,
                w: Optional[torch.Tensor] = None, g_cols: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """SigLIP row losses (R,) and, when ``w`` is given, g_rows = (W D) Y (R, d) and
    d(sum_i w_i loss_i)/d(bias) (a 0-d tensor), adding (W D)^T X into ``g_cols`` in place.
    Row i's positive is column pos_col + i."""
    R, N = x.shape[0], y.shape[0]
    xs = x * inv_t
    buf = TileBuffers(x.dtype, x.device)
    zero = x.new_zeros(1)
    shift = x.new_full((1, 1), bias)
    losses = x.new_zeros(R)
    g_rows = torch.zeros_like(x) if w is not None else None
    dbias = x.new_zeros(()) if w is not None else None
    for i0, i1 in blocks(R, bs):
        for j0, j1 in blocks(N, bs):
            U = buf.get("U", i1 - i0, j1 - j0)
            torch.addmm(shift, xs[i0:i1], y[j0:j1].T, out=U)        # t_IJ = inv_t x.y + bias
            pos = U.diagonal(pos_col + i0 - j0)                     # the positives in this tile
            pos.neg_()                                              # U = -z t
            L = buf.get("L", i1 - i0, j1 - j0)
            torch.logaddexp(U, zero, out=L)                         # softplus(-z t) = -log sigmoid(z t)
            losses[i0:i1] += L.sum(1)
            if w is None:
                continue
            torch.sigmoid(U, out=U)                                 # sigmoid(-z t)
            pos.neg_()                                              # D = -z sigmoid(-z t)
            U.mul_(w[i0:i1, None])                                  # H = W D
            dbias += U.sum()                                        # d/d(bias) = sum_ij H_ij
            g_rows[i0:i1].addmm_(U, y[j0:j1])                       # g_I += H Y_J
            if g_cols is not None:
                g_cols[j0:j1].addmm_(U.T, x[i0:i1])                 # g_J += H^T X_I
    return losses, g_rows, dbias
