"""Margin contrastive loss (seed 000) with the seed's closed-form backward."""
import torch

from . import compute_dtype


class ContrastiveLossFn(torch.autograd.Function):
    """Per-pair losses y D^2/2 + (1 - y) max(0, m - D)^2/2, shape (B,), in the compute dtype."""

    @staticmethod
    def forward(ctx, u, v, y, margin: float):
        ct = compute_dtype(u.dtype)
        diff = u.to(ct) - v.to(ct)                                  # (B, d)
        yc = y.to(ct)                                               # (B,)
        D = torch.linalg.vector_norm(diff, dim=1)                   # (B,)
        hinge = (margin - D).clamp_min(0)                           # max(0, m - D)
        ctx.save_for_backward(diff, D, yc, hinge)
        ctx.dtypes = (u.dtype, v.dtype, y.dtype)
        return yc * 0.5 * D.square() + (1 - yc) * 0.5 * hinge.square()

    @staticmethod
    def backward(ctx, g):                                           # g: (B,)
        diff, D, yc, hinge = ctx.saved_tensors
        g = g.to(diff.dtype)
        # max(m - D, 0) / D, with the Clarke subgradient 0 at D = 0
        ratio = torch.where(D > 0, hinge / torch.where(D > 0, D, torch.ones_like(D)), torch.zeros_like(D))
        coef = yc - (1 - yc) * ratio                                # Y - (1 - Y) max(m - D, 0) / D
        du = diff * (g * coef)[:, None]                             # dL/dU = (U - V)(...), (B, d)
        du_out = du.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        dv_out = (-du).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        dy = None
        if ctx.needs_input_grad[2]:
            dy = (g * (0.5 * D.square() - 0.5 * hinge.square())).to(ctx.dtypes[2])  # dL/dY
        return du_out, dv_out, dy, None
