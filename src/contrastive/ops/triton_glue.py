"""autograd glue for the Triton kernels (``backend='triton'``): the same contract as the
torch engine's ``InfoNCEFn`` / ``ClipLossFn``. Normalisation and its gradient chain
(grad_u = (I - z z^T) grad_z / |u|) happen here in float32; the kernels see unit rows in
the input dtype and accumulate in float32. Triton is imported only when a kernel runs.
"""
from __future__ import annotations

import torch

from .info_nce_dense import chain_normalize, temperature_value


def _unit_rows(u: torch.Tensor, normalize: bool):
    """Kernel input (unit rows in u's dtype) and the float32 rows/norms for the chain rule."""
    x = u.float()
    if not normalize:
        return u.contiguous(), x, None
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)     # (N, 1)
    z = x / norms
    return z.to(u.dtype).contiguous(), z, norms


def _finish(g, z, norms, normalize):
    return chain_normalize(g, z, norms) if normalize else g


class TritonInfoNCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, temperature, exclude_self, normalize, reduction, bs, want_grad):
        from ..kernels import info_nce_triton

        zk, z, norms = _unit_rows(u, normalize)
        inv_t = 1.0 / float(temperature_value(temperature, torch.float64, "cpu"))
        t_dtype = temperature.dtype if isinstance(temperature, torch.Tensor) else None
        ctx.meta = (exclude_self, normalize, reduction, bs, inv_t, u.dtype, t_dtype)
        N = u.shape[0]
        if reduction == "none":
            loss, _, _, lse = info_nce_triton(zk, inv_t, exclude_self, None, False, bs, return_lse=True)
            ctx.save_for_backward(zk, z, norms if normalize else z.new_empty(0), lse)
            return loss
        w = torch.full((N,), 1.0 / N if reduction == "mean" else 1.0, device=u.device)
        loss, g, dinv = info_nce_triton(zk, inv_t, exclude_self, w, want_grad, bs)
        if want_grad:
            ctx.save_for_backward(_finish(g, z, norms, normalize), -dinv * inv_t * inv_t)
        return loss.mean() if reduction == "mean" else loss.sum()

    @staticmethod
    def backward(ctx, g_out):
        from ..kernels import info_nce_triton

        exclude_self, normalize, reduction, bs, inv_t, in_dtype, t_dtype = ctx.meta
        needs = ctx.needs_input_grad
        if reduction == "none":
            zk, z, norms, lse = ctx.saved_tensors
            _, g, dinv = info_nce_triton(zk, inv_t, exclude_self, g_out.float(), True, bs, lse=lse)
            grad_u, dtau, scale = _finish(g, z, norms, normalize), -dinv * inv_t * inv_t, 1.0
        else:
            grad_u, dtau = ctx.saved_tensors
            scale = g_out.float()
        return ((grad_u * scale).to(in_dtype) if needs[0] else None,
                (dtau * scale).to(t_dtype) if needs[1] else None, None, None, None, None, None)


class TritonClipFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, temperature, normalize, reduction, bs, want_grad):
        from ..kernels import clip_triton

        ak, za, na = _unit_rows(a, normalize)
        bk, zb, nb = _unit_rows(b, normalize)
        inv_t = 1.0 / float(temperature_value(temperature, torch.float64, "cpu"))
        t_dtype = temperature.dtype if isinstance(temperature, torch.Tensor) else None
        ctx.meta = (normalize, reduction, bs, inv_t, a.dtype, b.dtype, t_dtype)
        empty = za.new_empty(0)
        N = a.shape[0]
        if reduction == "none":
            loss, _, _, _, lse = clip_triton(ak, bk, inv_t, None, False, bs, return_lse=True)
            ctx.save_for_backward(ak, bk, za, zb, na if normalize else empty, nb if normalize else empty, *lse)
            return loss
        w = torch.full((N,), 1.0 / N if reduction == "mean" else 1.0, device=a.device)
        loss, ga, gb, dinv = clip_triton(ak, bk, inv_t, w, want_grad, bs)
        if want_grad:
            ctx.save_for_backward(_finish(ga, za, na, normalize), _finish(gb, zb, nb, normalize),
                                  -dinv * inv_t * inv_t)
        return loss.mean() if reduction == "mean" else loss.sum()

    @staticmethod
    def backward(ctx, g_out):
        from ..kernels import clip_triton

        normalize, reduction, bs, inv_t, a_dtype, b_dtype, t_dtype = ctx.meta
        needs = ctx.needs_input_grad
        if reduction == "none":
            ak, bk, za, zb, na, nb, lse_r, lse_c = ctx.saved_tensors
            _, ga, gb, dinv = clip_triton(ak, bk, inv_t, g_out.float(), True, bs, lse=(lse_r, lse_c))
            ga, gb = _finish(ga, za, na, normalize), _finish(gb, zb, nb, normalize)
            dtau, scale = -dinv * inv_t * inv_t, 1.0
        else:
            ga, gb, dtau = ctx.saved_tensors
            scale = g_out.float()
        return ((ga * scale).to(a_dtype) if needs[0] else None, (gb * scale).to(b_dtype) if needs[1] else None,
                (dtau * scale).to(t_dtype) if needs[2] else None, None, None, None, None)
