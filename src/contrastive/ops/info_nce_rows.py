"""Row-block tiles: some rows X_R of a logit matrix against all its N columns Y, never held.

The engine of the distributed InfoNCE and two-tower losses (:mod:`contrastive.distributed`),
where each rank owns the rows of its own samples and sees every column (the gathered global
batch). These are the rectangular passes of :mod:`.rect_tiles` with the self mask
(column ``self_col + i`` of local row i), kept under the names the distributed glue calls.
With S = inv_temp X_R Y^T:

Pass 1: lse_i = log sum_j [j != self_col + i] exp S_ij  (fixed shift or online max).
Pass 2 (weights w_i, the upstream gradient of loss_i), H = W P = diag(w / r) E:
    g_rows_I += H_IJ Y_J        (R, d)  the (WP) Y part: stays with the rows' owner
    g_cols_J += H_IJ^T X_I      (N, d)  the (WP)^T X part: summed over all row owners
The positives' one-hot part of G = P - onehot and the factor inv_temp are the caller's; so is
the temperature gradient, sum_i x_i . g_rows_i = sum_ij H_ij x_i . y_j.

Flops 2 R N d in pass 1 and 4 R N d in pass 2; memory O((R + N) d + bs^2).
"""

from __future__ import annotations

import torch

from .engine import present
from .rect_tiles import rect_grad, rect_lse
from .tiles import TileMask


def rows_lse(
    x: torch.Tensor,
    y: torch.Tensor,
    inv_temp: float,
    c: float,
    fixed: bool,
    bs: int,
    self_col: int | None = None,
) -> torch.Tensor:
    """lse_i = log sum_j [j != self_col + i] exp(inv_temp x_i . y_j), shape (R,)."""
    return rect_lse(x, y, inv_temp, c, TileMask(self_offset=self_col), bs, fixed)[0]


def rows_grad(
    x: torch.Tensor,
    y: torch.Tensor,
    inv_temp: float,
    c: float,
    fixed: bool,
    bs: int,
    lse: torch.Tensor,
    w: torch.Tensor,
    g_cols: torch.Tensor,
    self_col: int | None = None,
) -> torch.Tensor:
    """Returns g_rows = (W P) Y, (R, d); adds (W P)^T X into ``g_cols`` (N, d) in place."""
    g_rows, g_y = rect_grad(x, y, inv_temp, c, TileMask(self_offset=self_col), bs, fixed, lse, w, need_y=True)
    g_cols.add_(present(g_y))  # (W P)^T X
    return g_rows
