"""Margin contrastive loss (Hadsell, Chopra, LeCun 2006) with its closed-form backward
(docs/derivations/contrastive_loss.md).

Computed in float64 whatever the input dtype (the loss is O(B d), negligible beside the
encoder; float32 on MPS, which has no float64): a float32 distance up to 3.4e38 then squares
without overflow, and a per-pair loss that does not fit the output dtype is reported by
:func:`contrastive.functional.contrastive_loss` rather than returned as inf. ``D`` is taken
with a rescaled norm (:func:`contrastive.ops.scaling.safe_norm`), which neither overflows
nor underflows for any finite difference.
"""

from __future__ import annotations

from typing import Any

import torch

from .scaling import safe_norm


def loss_dtype(x: torch.Tensor) -> torch.dtype:
    """float64, except on devices without it (MPS: float32)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


class ContrastiveLossFn(torch.autograd.Function):
    """Per-pair losses y D^2/2 + (1 - y) max(0, m - D)^2/2, shape (B,), in float64."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, v: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
        ct = loss_dtype(u)
        diff = u.to(ct) - v.to(ct)  # (B, d)
        yc = y.to(ct)  # (B,)
        D = safe_norm(diff)  # (B,), no overflow/underflow
        hinge = (margin - D).clamp_min(0)  # max(0, m - D)
        # y D^2 / 2 as (sqrt(y/2) D)^2: finite whenever the loss is, and exactly 0 at y = 0
        # (where y * D^2 would be 0 * inf = NaN once D^2 overflows)
        sim_term = torch.where(yc > 0, (torch.sqrt(0.5 * yc) * D).square(), torch.zeros_like(D))
        ctx.save_for_backward(diff, D, yc, hinge)
        ctx.dtypes = (u.dtype, v.dtype, y.dtype)
        return sim_term + (1 - yc) * 0.5 * hinge.square()

    @staticmethod
    def backward(ctx, g):  # g: (B,)
        diff, D, yc, hinge = ctx.saved_tensors
        g = g.to(diff.dtype)
        # max(m - D, 0) / D, with the Clarke subgradient 0 at D = 0
        ratio = torch.where(D > 0, hinge / torch.where(D > 0, D, torch.ones_like(D)), torch.zeros_like(D))
        coef = g * (yc - (1 - yc) * ratio)  # g (Y - (1 - Y) max(m - D, 0) / D)
        # dL/dU = (U - V)(...), (B, d); a zero coefficient gives 0 even where diff is inf
        du = torch.where(coef[:, None] == 0, torch.zeros_like(diff), diff * coef[:, None])
        du_out = du.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        dv_out = (-du).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        dy = None
        if ctx.needs_input_grad[2]:
            # dL/dY = D^2/2 - max(0, m - D)^2/2
            dy = (g * (0.5 * D.square() - 0.5 * hinge.square())).to(ctx.dtypes[2])
        return du_out, dv_out, dy, None


def check_loss_fits(per_pair: torch.Tensor, out: torch.Tensor) -> None:
    """Raise when the loss, exact in float64, does not fit ``out``'s dtype (it became inf).

    Args:
        per_pair: the float64 per-pair losses ``(B,)``.
        out: the reduced loss in the output dtype.
    """
    if bool(torch.isfinite(out).all()):
        return
    big = ~torch.isfinite(per_pair.to(out.dtype))
    where = (
        f" (pair {int(torch.nonzero(big)[0, 0])}: {float(per_pair[big][0]):.3g})" if bool(big.any()) else ""
    )
    raise ValueError(
        f"contrastive_loss overflows {str(out.dtype).replace('torch.', '')}: the loss{where} is "
        f"larger than its largest value {torch.finfo(out.dtype).max:.3g}; the distances are too "
        f"large for this dtype: scale or normalise the embeddings, or pass float64 inputs"
    )
