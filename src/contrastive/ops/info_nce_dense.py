"""Dense InfoNCE / NT-Xent (SimCLR, Chen et al. 2020; van den Oord et al. 2018): holds the N x N
logits; the closed-form backward of docs/derivations/info_nce.md.

    L_ij = z_i . z_j / tau,  loss_i = logsumexp_{k (!= i)} L_ik - L_{i,p(i)},  p(i) = (i + N/2) mod N
    d(sum_i w_i loss_i)/dZ = (WG + (WG)^T) Z / tau,  G = P - onehot(p),  W = diag(w)
    d/dtau                 = -sum_ij w_i G_ij L_ij / tau
    z = u / |u|:  grad_u   = (grad_z - z (z . grad_z)) / |u|

The reference path and the oracle for the blockwise engine in :mod:`.info_nce`.
"""

from typing import Any

import torch

from .common import (
    Temperature,
    chain_normalize,
    compute_dtype,
    normalize_rows,
    positive_index,
    temperature_value,
)

__all__ = ["DenseInfoNCEFn", "dense_clip"]


class DenseInfoNCEFn(torch.autograd.Function):
    """Per-row losses (N,) of stacked u (N, d), in the compute dtype."""

    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, temperature: float | torch.Tensor, exclude_self: bool, normalize: bool
    ) -> torch.Tensor:
        ct = compute_dtype(u.dtype)
        x = u.to(ct)
        z, norms = normalize_rows(x) if normalize else (x, None)  # (N, d)
        inv_temp = 1 / temperature_value(temperature, ct, u.device)  # 0-d
        N = z.shape[0]
        p = positive_index(N, u.device)
        S = (z @ z.T) * inv_temp  # L_ij, (N, N)
        if exclude_self:
            S.fill_diagonal_(float("-inf"))
        lse = torch.logsumexp(S, dim=1)  # (N,)
        pos = (z * z[p]).sum(1) * inv_temp  # L_{i,p(i)}
        ctx.save_for_backward(z, norms if normalize else z.new_empty(0), lse, inv_temp)
        ctx.flags = (
            exclude_self,
            normalize,
            u.dtype,
            temperature.dtype if isinstance(temperature, torch.Tensor) else None,
        )
        return lse - pos

    @staticmethod
    def backward(ctx, g):  # g = w, (N,)
        z, norms, lse, inv_temp = ctx.saved_tensors
        exclude_self, normalize, in_dtype, temperature_dtype = ctx.flags
        g = g.to(z.dtype)
        N = z.shape[0]
        p = positive_index(N, z.device)
        L = (z @ z.T) * inv_temp  # (N, N)
        WG = torch.exp(L - lse[:, None])  # P_ij
        if exclude_self:
            WG.fill_diagonal_(0.0)
        WG[torch.arange(N, device=z.device), p] -= 1.0  # G = P - onehot(p)
        WG *= g[:, None]  # W G
        grad_temperature = None
        if temperature_dtype is not None and ctx.needs_input_grad[1]:
            # d/dtau = -inv_temp^2 d/d(inv_temp) = -sum w_i G_ij L_ij / tau (G_ii = 0 if excluded)
            grad_temperature = (-(WG * L).sum() * inv_temp).to(temperature_dtype)
        grad_u = None
        if ctx.needs_input_grad[0]:
            grad_z = (WG + WG.T) @ z * inv_temp  # (G + G^T) Z / tau, weighted
            grad_u = chain_normalize(grad_z, z, norms) if normalize else grad_z
            grad_u = grad_u.to(in_dtype)
        return grad_u, grad_temperature, None, None


def dense_clip(a: torch.Tensor, b: torch.Tensor, temperature: Temperature, normalize: bool) -> torch.Tensor:
    """The two-tower loss's per-row losses by plain autograd over the full N x N logits
    (``backend='dense'``, the reference path)."""
    ct = compute_dtype(a.dtype)
    a, b = a.to(ct), b.to(ct)
    if normalize:
        a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True)
        b = b / torch.linalg.vector_norm(b, dim=1, keepdim=True)
    S = a @ b.T / temperature
    d = torch.diagonal(S)
    return 0.5 * (torch.logsumexp(S, 1) - d) + 0.5 * (torch.logsumexp(S, 0) - d)
