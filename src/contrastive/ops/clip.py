"""The blockwise two-tower (CLIP) loss: S = A B^T / tau rectangular, never held.

    loss_i = (lse_row_i - S_ii) / 2 + (lse_col_i - S_ii) / 2

Pass 1 (all tiles): E_IJ = exp(A_I B_J^T inv_t - c); rows r_I += E 1, columns k_J += E^T 1.
Pass 2 (gradient of sum_i w_i loss_i): with alpha = w / (2 r), beta = w / (2 k),
    dS_IJ = diag(alpha_I) E + E diag(beta_J)    (row softmax and column softmax terms)
    grad_a_I += dS_IJ B_J,  grad_b_J += dS_IJ^T A_I
    grad_a_i -= w_i b_i,  grad_b_i -= w_i a_i   (the positives on the diagonal)
and everything times inv_t. d(sum w l)/d(inv_t) = sum_i a_i . g_a_i (g before the inv_t).
When exp(-2c) would underflow, running maxima per row and per column replace c.
"""
from __future__ import annotations

import torch

from . import compute_dtype
from .info_nce_dense import chain_normalize, normalize_rows, temperature_value
from .tiles import TileBuffers, blocks, online_update, use_fixed_shift


def lse_pass(a, b, inv_t, c, bs, fixed):
    """Row and column log-sum-exps of S = inv_t a b^T, shapes (N,) and (M,)."""
    N, M = a.shape[0], b.shape[0]
    As = a * inv_t
    ra, rb = blocks(N, bs), blocks(M, bs)
    buf = TileBuffers(a.dtype, a.device)
    if fixed:
        row, col = a.new_zeros(N), a.new_zeros(M)
        shift = a.new_full((1, 1), -c)
        ones = a.new_ones(bs)
        for i0, i1 in ra:
            for j0, j1 in rb:
                E = buf.get("E", i1 - i0, j1 - j0)
                torch.addmm(shift, As[i0:i1], b[j0:j1].T, out=E)      # S_IJ - c
                torch.exp(E, out=E)
                row[i0:i1].addmv_(E, ones[: j1 - j0])
                col[j0:j1].add_(E.sum(0))
        return row.log_() + c, col.log_() + c
    mr, rr = a.new_full((N,), float("-inf")), a.new_zeros(N)
    mc, rc = a.new_full((M,), float("-inf")), a.new_zeros(M)
    for i0, i1 in ra:
        for j0, j1 in rb:
            S = buf.get("S", i1 - i0, j1 - j0)
            torch.mm(As[i0:i1], b[j0:j1].T, out=S)
            online_update(mr, rr, slice(i0, i1), S.amax(1), lambda s: torch.exp(S - s[:, None]).sum(1))
            online_update(mc, rc, slice(j0, j1), S.amax(0), lambda s: torch.exp(S - s[None, :]).sum(0))
    return mr + rr.log(), mc + rc.log()


def grad_pass(a, b, inv_t, c, lse_r, lse_c, w, bs, fixed):
    """(grad_a, grad_b) of sum_i w_i loss_i for a, b as free vectors."""
    N, M = a.shape[0], b.shape[0]
    As = a * inv_t
    buf = TileBuffers(a.dtype, a.device)
    ga, gb = torch.zeros_like(a), torch.zeros_like(b)
    half_w = 0.5 * w
    if fixed:
        alpha = half_w * torch.exp(c - lse_r)                          # w_i / (2 r_i)
        beta = half_w * torch.exp(c - lse_c)                           # w_j / (2 k_j)
        shift = a.new_full((1, 1), -c)
    for i0, i1 in blocks(N, bs):
        for j0, j1 in blocks(M, bs):
            E = buf.get("E", i1 - i0, j1 - j0)
            H = buf.get("H", i1 - i0, j1 - j0)
            if fixed:
                torch.addmm(shift, As[i0:i1], b[j0:j1].T, out=E)
                torch.exp(E, out=E)
                torch.mul(E, beta[j0:j1], out=H)                       # E diag(beta_J)
                H.addcmul_(E, alpha[i0:i1, None])                      # + diag(alpha_I) E
            else:
                torch.mm(As[i0:i1], b[j0:j1].T, out=E)
                torch.exp(E - lse_r[i0:i1, None], out=H)               # row softmax R_IJ
                H.mul_(half_w[i0:i1, None])
                torch.exp(E - lse_c[j0:j1][None, :], out=E)            # column softmax C_IJ
                H.addcmul_(E, half_w[j0:j1][None, :])
            ga[i0:i1].addmm_(H, b[j0:j1])                              # dS B
            gb[j0:j1].addmm_(H.T, a[i0:i1])                            # dS^T A
    ga.sub_(w[:, None] * b)                                            # positives on the diagonal
    gb.sub_(w[:, None] * a)
    return ga.mul_(inv_t), gb.mul_(inv_t)


class ClipLossFn(torch.autograd.Function):
    """Blockwise two-tower loss; same reduction contract as the single-tower InfoNCEFn."""

    @staticmethod
    def forward(ctx, a_in, b_in, temperature, normalize, reduction, bs, want_grad):
        ct = compute_dtype(a_in.dtype)
        xa, xb = a_in.to(ct), b_in.to(ct)
        (a, na), (b, nb) = (normalize_rows(xa), normalize_rows(xb)) if normalize else ((xa, None), (xb, None))
        inv_t = 1.0 / float(temperature_value(temperature, torch.float64, "cpu"))
        c = inv_t * float((a * a).sum(1).max().sqrt() * (b * b).sum(1).max().sqrt())
        fixed = use_fixed_shift(c, ct)
        lse_r, lse_c = lse_pass(a, b, inv_t, c, bs, fixed)
        diag = inv_t * (a * b).sum(1)                                   # S_ii
        losses = 0.5 * (lse_r - diag) + 0.5 * (lse_c - diag)
        t_dtype = temperature.dtype if isinstance(temperature, torch.Tensor) else None
        ctx.meta = (normalize, reduction, bs, fixed, inv_t, c, a_in.dtype, b_in.dtype, t_dtype)
        empty = a.new_empty(0)
        if reduction == "none":
            ctx.save_for_backward(a, b, na if normalize else empty, nb if normalize else empty, lse_r, lse_c)
            return losses
        if want_grad:
            N = a.shape[0]
            w = a.new_full((N,), 1.0 / N if reduction == "mean" else 1.0)
            ga, gb = grad_pass(a, b, inv_t, c, lse_r, lse_c, w, bs, fixed)
            dtau = -(a * ga).sum() / inv_t * inv_t * inv_t             # -d/d(inv_t) / tau^2
            if normalize:
                ga, gb = chain_normalize(ga, a, na), chain_normalize(gb, b, nb)
            ctx.save_for_backward(ga, gb, dtau)
        return losses.mean() if reduction == "mean" else losses.sum()

    @staticmethod
    def backward(ctx, g_out):
        normalize, reduction, bs, fixed, inv_t, c, a_dtype, b_dtype, t_dtype = ctx.meta
        needs = ctx.needs_input_grad
        if reduction == "none":
            a, b, na, nb, lse_r, lse_c = ctx.saved_tensors
            ga, gb = grad_pass(a, b, inv_t, c, lse_r, lse_c, g_out.to(a.dtype), bs, fixed)
            dtau = -(a * ga).sum() / inv_t * inv_t * inv_t
            if normalize:
                ga, gb = chain_normalize(ga, a, na), chain_normalize(gb, b, nb)
            g_out = 1.0
        else:
            ga, gb, dtau = ctx.saved_tensors
            g_out = g_out.to(ga.dtype)
        return (
            (ga * g_out).to(a_dtype) if needs[0] else None,
            (gb * g_out).to(b_dtype) if needs[1] else None,
            (dtau * g_out).to(t_dtype) if needs[2] else None,
            None, None, None, None,
        )
