"""The blockwise InfoNCE engine: O(N d) memory, no N x N matrix, analytic gradient.

S = Z Z^T is symmetric, so only upper-triangle tiles (I <= J) are computed.

Pass 1 (normalisers). With c = inv_t * max_i |z_i|^2 every logit lies in [-c, c]:
    E_IJ = exp(Z_I Z_J^T inv_t - c)         (diagonal zeroed if self is excluded)
    r_I += E_IJ 1,  r_J += E_IJ^T 1          (row sums, and column sums by symmetry)
    lse_i = log r_i + c
When exp(-2c) would underflow, a running max per row and per column replaces c.

Pass 2 (gradient of sum_i w_i loss_i, seed 002's (G + G^T) Z without G):
    P_IJ = E_IJ / r_I,  P_JI^T = E_IJ / r_J,  a = w / r
    H = W_I P_IJ + (W_J P_JI)^T = diag(a_I) E + E diag(a_J)
    g_I += H Z_J,  g_J += H^T Z_I             (the diagonal tile once: H is symmetric)
    g_i -= (w_i + w_p(i)) z_p(i)              (the one-hot part of G and G^T)
    grad_z = inv_t * g
The temperature gradient is then free: d(sum w l)/d(inv_t) = sum_i z_i . g_i / 2.

Flops 4 N^2 d (half the tiles, three GEMMs per tile in pass 2, one in pass 1), memory
O(N d + tile^2). See docs/derivations/info_nce.md.
"""
from __future__ import annotations

import torch

from . import compute_dtype
from .info_nce_dense import chain_normalize, normalize_rows, positive_index, temperature_value
from .tiles import TileBuffers, blocks, online_update, use_fixed_shift


def _max_sq_norm(z: torch.Tensor) -> float:
    return float((z * z).sum(1).max())


def lse_pass(z: torch.Tensor, inv_t: float, c: float, exclude_self: bool, bs: int, fixed: bool) -> torch.Tensor:
    """Pass 1: lse_i = log sum_k [k != i] exp(inv_t z_i . z_k), shape (N,)."""
    N = z.shape[0]
    zs = z * inv_t                                                  # 1/tau folded into one operand
    plan = blocks(N, bs)
    buf = TileBuffers(z.dtype, z.device)
    if fixed:
        r = z.new_zeros(N)
        shift = z.new_full((1, 1), -c)
        ones = z.new_ones(bs)
        for bi, (i0, i1) in enumerate(plan):
            zi = zs[i0:i1]
            for j0, j1 in plan[bi:]:
                E = buf.get("E", i1 - i0, j1 - j0)
                torch.addmm(shift, zi, z[j0:j1].T, out=E)           # S_IJ - c
                torch.exp(E, out=E)                                 # E_IJ in [exp(-2c), 1]
                if i0 == j0 and exclude_self:
                    E.fill_diagonal_(0.0)
                r[i0:i1].addmv_(E, ones[: j1 - j0])                 # row sums
                if i0 != j0:
                    r[j0:j1].add_(E.sum(0))                         # column sums (symmetry)
        return r.log_() + c
    # online max: one running max per row; a tile updates its rows and (by symmetry) its columns
    m = z.new_full((N,), float("-inf"))
    r = z.new_zeros(N)

    for bi, (i0, i1) in enumerate(plan):
        zi = zs[i0:i1]
        for j0, j1 in plan[bi:]:
            S = buf.get("S", i1 - i0, j1 - j0)
            torch.mm(zi, z[j0:j1].T, out=S)                         # S_IJ
            if i0 == j0 and exclude_self:
                S.fill_diagonal_(float("-inf"))
            online_update(m, r, slice(i0, i1), S.amax(1), lambda s: torch.exp(S - s[:, None]).sum(1))
            if i0 != j0:
                online_update(m, r, slice(j0, j1), S.amax(0), lambda s: torch.exp(S - s[None, :]).sum(0))
    return m + r.log()


def grad_pass(z, inv_t, c, lse, w, exclude_self, bs, fixed) -> torch.Tensor:
    """Pass 2: d(sum_i w_i loss_i)/dz for z as free vectors, (N, d)."""
    N = z.shape[0]
    zs = z * inv_t
    plan = blocks(N, bs)
    buf = TileBuffers(z.dtype, z.device)
    g = torch.zeros_like(z)
    if fixed:
        a = w * torch.exp(c - lse)                                  # w_i / r_i
        shift = z.new_full((1, 1), -c)
    for bi, (i0, i1) in enumerate(plan):
        zi = zs[i0:i1]
        for j0, j1 in plan[bi:]:
            E = buf.get("E", i1 - i0, j1 - j0)
            H = buf.get("H", i1 - i0, j1 - j0)
            if fixed:
                torch.addmm(shift, zi, z[j0:j1].T, out=E)
                torch.exp(E, out=E)
                if i0 == j0 and exclude_self:
                    E.fill_diagonal_(0.0)
                torch.mul(E, a[j0:j1], out=H)                       # E diag(a_J)
                H.addcmul_(E, a[i0:i1, None])                       # + diag(a_I) E
            else:
                torch.mm(zi, z[j0:j1].T, out=E)
                torch.exp(E - lse[i0:i1, None], out=H)              # P_IJ
                if i0 == j0 and exclude_self:
                    H.fill_diagonal_(0.0)
                H.mul_(w[i0:i1, None])                              # W_I P_IJ
                if i0 == j0:
                    H.add_(H.T.clone())                             # + (W_I P_II)^T
                else:
                    torch.exp(E - lse[j0:j1][None, :], out=E)       # P_JI^T
                    H.addcmul_(E, w[j0:j1][None, :])                # + (W_J P_JI)^T
            if i0 == j0:
                g[i0:i1].addmm_(H, z[i0:i1])                        # H symmetric on the diagonal
            else:
                g[i0:i1].addmm_(H, z[j0:j1])                        # g_I += H Z_J
                g[j0:j1].addmm_(H.T, z[i0:i1])                      # g_J += H^T Z_I
    p = positive_index(N, z.device)
    g.sub_((w + w[p])[:, None] * z[p])                              # - (W onehot(p) + (W onehot(p))^T) Z
    return g.mul_(inv_t)                                            # (WG + (WG)^T) Z / tau


class InfoNCEFn(torch.autograd.Function):
    """Blockwise InfoNCE of stacked u (N, d). Returns the reduced loss (or per-row losses for
    ``reduction='none'``) in the compute dtype. With 'mean'/'sum' the gradient is computed
    during forward (the loss is a scalar, so backward only scales it); with 'none' the
    per-row upstream weights are known only in backward, which runs pass 2 with them."""

    @staticmethod
    def forward(ctx, u, temperature, exclude_self, normalize, reduction, bs, want_grad):
        ct = compute_dtype(u.dtype)
        x = u.to(ct)
        z, norms = normalize_rows(x) if normalize else (x, None)   # (N, d), (N, 1)
        t = float(temperature_value(temperature, torch.float64, "cpu"))
        inv_t = 1.0 / t
        c = inv_t * _max_sq_norm(z)
        fixed = use_fixed_shift(c, ct)
        N = z.shape[0]
        lse = lse_pass(z, inv_t, c, exclude_self, bs, fixed)       # (N,)
        p = positive_index(N, z.device)
        losses = lse - inv_t * (z * z[p]).sum(1)                    # -log P_{i,p(i)}
        t_dtype = temperature.dtype if isinstance(temperature, torch.Tensor) else None
        ctx.meta = (exclude_self, normalize, reduction, bs, fixed, inv_t, c, u.dtype, t_dtype)
        if reduction == "none":
            ctx.save_for_backward(z, norms if normalize else z.new_empty(0), lse)
            return losses
        if want_grad:
            w = z.new_full((N,), 1.0 / N if reduction == "mean" else 1.0)
            g = grad_pass(z, inv_t, c, lse, w, exclude_self, bs, fixed)
            dinv = (z * g).sum() / (2 * inv_t)                     # d loss / d(1/tau)
            grad_u = chain_normalize(g, z, norms) if normalize else g
            ctx.save_for_backward(grad_u, dinv * (-inv_t * inv_t))  # d loss / d tau = -dinv / tau^2
        return losses.mean() if reduction == "mean" else losses.sum()

    @staticmethod
    def backward(ctx, g_out):
        exclude_self, normalize, reduction, bs, fixed, inv_t, c, in_dtype, t_dtype = ctx.meta
        needs = ctx.needs_input_grad
        if reduction == "none":
            z, norms, lse = ctx.saved_tensors
            w = g_out.to(z.dtype)
            g = grad_pass(z, inv_t, c, lse, w, exclude_self, bs, fixed)
            grad_u = (chain_normalize(g, z, norms) if normalize else g).to(in_dtype) if needs[0] else None
            grad_t = None
            if needs[1]:
                grad_t = ((z * g).sum() / (2 * inv_t) * (-inv_t * inv_t)).to(t_dtype)
            return grad_u, grad_t, None, None, None, None, None
        grad_u, dtau = ctx.saved_tensors
        g_out = g_out.to(grad_u.dtype)
        return (
            (grad_u * g_out).to(in_dtype) if needs[0] else None,
            (dtau * g_out).to(t_dtype) if needs[1] else None,
            None, None, None, None, None,
        )
