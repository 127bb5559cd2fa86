"""Distributed InfoNCE and two-tower losses over the global batch: the autograd glue.

Global batch: rank r holds B_r pairs; z1 = cat_r z1_r and z2 = cat_r z2_r (rank order),
B = sum_r B_r, Z = [z1; z2] (N = 2B rows), p(i) = (i + B) mod N. Rank r owns the rows
R_r = [o_r, o_r + B_r) u [B + o_r, B + o_r + B_r), o_r = sum_{q < r} B_q; p maps R_r onto
itself, so every positive is local.

Forward on rank r, no N x N matrix anywhere:
    Z = all-gather of [u1_r | u2_r]           (B, 2d) -> (N, d), O(N d) communication
    lse_i, i in R_r: rows Z_R against all N columns (:mod:`.info_nce_rows`)
    loss = all-reduce(sum_{i in R_r} loss_i), divided by N for 'mean'
Gradient of sum_i w_i loss_i, (WG + (WG)^T) Z / tau (docs/derivations/info_nce.md), split by
who holds WG's rows:
    ((WG) Z)_i,  i in R_r      local: the engine's g_rows minus w_i z_p(i)
    ((WG)^T Z)_k               sum over ranks r of ((WG)_{R_r})^T Z_{R_r}: every rank's
                               g_cols (N, d) reduce-scattered to the owner of row k; its one-hot
                               part, -w_p(k) z_p(k), is local since p(k) is in R_r
    d(sum w loss)/d(inv_temp)     sum_r sum_{i in R_r} z_i . ((WG) Z)_i, all-reduced
The embedding gradient is then multiplied by ``scale`` (world_size when a DDP-style reducer
will average it, 1 for the exact gradient); the temperature's is the full, all-reduced one.
With 'mean'/'sum' all of this runs in forward (backward only scales by grad_output and needs
no collective); with 'none' the weights w are the upstream gradient, known in backward,
which then runs pass 2 and its two collectives.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from . import compute_dtype
from .collectives import Group, all_reduce, gather_rows, reduce_scatter_rows
from .info_nce_dense import chain_normalize, normalize_rows, temperature_value
from .info_nce_rows import rows_grad, rows_lse
from .sym_tiles import max_sq_norm
from .tiles import use_fixed_shift


class RowShardSpec(NamedTuple):
    """How one distributed loss call shards its rows over the ranks, and what it computes."""

    op: str  # public name, for error messages
    group: Group  # process group (None: default)
    rank: int
    sizes: list[int]  # pairs per rank, identical on every rank
    scale: float  # world_size ('ddp') or 1.0 ('exact')
    reduction: str
    bs: int
    want_grad: bool
    normalize: bool
    exclude_self: bool = True


class GatherWithGradFn(torch.autograd.Function):
    """cat over ranks of x (sizes[r] rows each); backward: reduce-scatter (sum over ranks)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cfg: RowShardSpec) -> torch.Tensor:
        ctx.cfg = cfg
        return gather_rows(cfg.op, x, cfg.sizes, cfg.group)

    @staticmethod
    def backward(ctx, g):
        cfg = ctx.cfg
        return reduce_scatter_rows(cfg.op, g, cfg.sizes, cfg.rank, cfg.group), None


def _layout(cfg: RowShardSpec) -> tuple[int, int, int]:
    B_r, B = cfg.sizes[cfg.rank], sum(cfg.sizes)
    o = sum(cfg.sizes[: cfg.rank])
    return B_r, B, o


def _unit(x, normalize):
    return normalize_rows(x) if normalize else (x, None)


def _reduced(cfg, losses, d_inv_temp, n):
    """All-reduce [sum of local losses, local d/d(inv_temp)] in one collective."""
    tot = all_reduce(cfg.op, torch.stack([losses.sum(), d_inv_temp]), "all-reduce of the loss", cfg.group)
    return (tot[0] / n if cfg.reduction == "mean" else tot[0]), tot[1]


def _scaled_backward(ctx, g_out, n_inputs):
    """'mean'/'sum': the gradient was computed in forward; scale it by grad_output."""
    grads, dtau = ctx.saved_tensors[:-1], ctx.saved_tensors[-1]
    needs = ctx.needs_input_grad
    g_out = g_out.to(dtau.dtype)
    out = [(g * g_out).to(dt) if needs[k] else None for k, (g, dt) in enumerate(zip(grads, ctx.in_dtypes))]
    out.append((dtau * g_out).to(ctx.tau_dtype) if needs[n_inputs] else None)
    return tuple(out) + (None,)


class DistInfoNCEFn(torch.autograd.Function):
    """InfoNCE of the global batch; on each rank returns the global loss (or, for 'none',
    the local rows' losses in the order [z1_r; z2_r])."""

    @staticmethod
    def forward(
        ctx: Any, u1: torch.Tensor, u2: torch.Tensor, temperature: float | torch.Tensor, cfg: RowShardSpec
    ) -> torch.Tensor:
        ct = compute_dtype(u1.dtype)
        B_r, B, o = _layout(cfg)
        d = u1.shape[1]
        G = gather_rows(cfg.op, torch.cat([u1, u2], 1), cfg.sizes, cfg.group)  # (B, 2d): [z1 | z2]
        z, norms = _unit(torch.cat([G[:, :d], G[:, d:]]).to(ct), cfg.normalize)  # (N, d)
        inv_temp = 1.0 / float(temperature_value(temperature, torch.float64, "cpu"))
        c = inv_temp * max_sq_norm(z)
        fixed = use_fixed_shift(c, ct)
        own = torch.cat([torch.arange(o, o + B_r), torch.arange(B + o, B + o + B_r)]).to(z.device)
        zl = z[own]  # (2B_r, d) local rows
        selfs = (o, B + o) if cfg.exclude_self else (None, None)
        lse = torch.cat(
            [rows_lse(zl[k * B_r : (k + 1) * B_r], z, inv_temp, c, fixed, cfg.bs, selfs[k]) for k in (0, 1)]
        )  # (2B_r,)
        pl = (torch.arange(2 * B_r, device=z.device) + B_r) % (2 * B_r)  # local p(i)
        losses = lse - inv_temp * (zl * zl[pl]).sum(1)  # -log P_{i,p(i)}
        ctx.cfg, ctx.geom = cfg, (inv_temp, c, fixed)
        ctx.in_dtypes, ctx.tau_dtype = (u1.dtype, u2.dtype), getattr(temperature, "dtype", None)
        nl = norms[own] if cfg.normalize else z.new_empty(0)
        if cfg.reduction == "none":
            ctx.save_for_backward(z, zl, nl, lse)
            return losses
        N = 2 * B
        if not cfg.want_grad:
            return _reduced(cfg, losses, losses.new_zeros(()), N)[0]
        w = z.new_full((2 * B_r,), 1.0 / N if cfg.reduction == "mean" else 1.0)
        g, d_inv_temp = DistInfoNCEFn._grad(cfg, z, zl, lse, w, inv_temp, c, fixed)
        loss, d_inv_temp = _reduced(cfg, losses, d_inv_temp, N)
        gu = (chain_normalize(g, zl, nl) if cfg.normalize else g) * cfg.scale
        ctx.save_for_backward(
            gu[:B_r], gu[B_r:], d_inv_temp * (-inv_temp * inv_temp)
        )  # d/dtau = -d/d(inv_temp) / tau^2
        return loss

    @staticmethod
    def _grad(cfg, z, zl, lse, w, inv_temp, c, fixed):
        """(d(sum_{global i} w_i loss_i)/d zl (2B_r, d), local part of d/d(inv_temp)); collective."""
        B_r, B, o = _layout(cfg)
        d = z.shape[1]
        selfs = (o, B + o) if cfg.exclude_self else (None, None)
        g_cols = torch.zeros_like(z)  # (N, d): (WG)_R^T Z_R
        g = torch.cat(
            [
                rows_grad(
                    zl[k * B_r : (k + 1) * B_r],
                    z,
                    inv_temp,
                    c,
                    fixed,
                    cfg.bs,
                    lse[k * B_r : (k + 1) * B_r],
                    w[k * B_r : (k + 1) * B_r],
                    g_cols,
                    selfs[k],
                )
                for k in (0, 1)
            ]
        )  # (WP)_R Z, (2B_r, d)
        pl = (torch.arange(2 * B_r, device=z.device) + B_r) % (2 * B_r)
        zp = zl[pl]  # z_p(i)
        d_inv_temp = (zl * g).sum() - (w * (zl * zp).sum(1)).sum()  # sum_i z_i . ((WG) Z)_i
        g.sub_((w + w[pl])[:, None] * zp)  # one-hot parts of WG and (WG)^T
        mine = reduce_scatter_rows(
            cfg.op, torch.cat([g_cols[:B], g_cols[B:]], 1), cfg.sizes, cfg.rank, cfg.group
        )  # (B_r, 2d)
        g += torch.cat([mine[:, :d], mine[:, d:]])  # + ((WG)^T Z)_R
        return g.mul_(inv_temp), d_inv_temp  # (WG + (WG)^T) Z / tau

    @staticmethod
    def backward(ctx, g_out):
        cfg = ctx.cfg
        if cfg.reduction != "none":
            return _scaled_backward(ctx, g_out, 2)
        z, zl, nl, lse = ctx.saved_tensors
        inv_temp, c, fixed = ctx.geom
        g, d_inv_temp = DistInfoNCEFn._grad(cfg, z, zl, lse, g_out.to(z.dtype), inv_temp, c, fixed)
        d_inv_temp = all_reduce(
            cfg.op, d_inv_temp.reshape(1), "all-reduce of the temperature gradient", cfg.group
        )[0]
        gu = (chain_normalize(g, zl, nl) if cfg.normalize else g) * cfg.scale
        B_r, needs = zl.shape[0] // 2, ctx.needs_input_grad
        return (
            gu[:B_r].to(ctx.in_dtypes[0]) if needs[0] else None,
            gu[B_r:].to(ctx.in_dtypes[1]) if needs[1] else None,
            (d_inv_temp * (-inv_temp * inv_temp)).to(ctx.tau_dtype) if needs[2] else None,
            None,
        )


class DistClipFn(torch.autograd.Function):
    """Two-tower loss of the global batch (a = cat_r a_r, b = cat_r b_r); rank r owns the
    rows and the columns o_r .. o_r + B_r of S = a b^T / tau. Same contract as DistInfoNCEFn."""

    @staticmethod
    def forward(
        ctx: Any, a_in: torch.Tensor, b_in: torch.Tensor, temperature: float | torch.Tensor, cfg: RowShardSpec
    ) -> torch.Tensor:
        ct = compute_dtype(a_in.dtype)
        B_r, B, o = _layout(cfg)
        d = a_in.shape[1]
        G = gather_rows(cfg.op, torch.cat([a_in, b_in], 1), cfg.sizes, cfg.group)  # (B, 2d): [a | b]
        (a, na), (b, nb) = _unit(G[:, :d].to(ct), cfg.normalize), _unit(G[:, d:].to(ct), cfg.normalize)
        inv_temp = 1.0 / float(temperature_value(temperature, torch.float64, "cpu"))
        c = inv_temp * (max_sq_norm(a) * max_sq_norm(b)) ** 0.5
        fixed = use_fixed_shift(c, ct)
        s = slice(o, o + B_r)
        lse_r = rows_lse(a[s], b, inv_temp, c, fixed, cfg.bs)  # rows i of S, i local
        lse_c = rows_lse(b[s], a, inv_temp, c, fixed, cfg.bs)  # columns j of S, j local
        diag = inv_temp * (a[s] * b[s]).sum(1)  # S_ii
        losses = 0.5 * (lse_r - diag) + 0.5 * (lse_c - diag)
        ctx.cfg, ctx.geom = cfg, (inv_temp, c, fixed)
        ctx.in_dtypes, ctx.tau_dtype = (a_in.dtype, b_in.dtype), getattr(temperature, "dtype", None)
        empty = a.new_empty(0)
        nl = (na[s], nb[s]) if cfg.normalize else (empty, empty)
        if cfg.reduction == "none":
            ctx.save_for_backward(a, b, *nl, lse_r, lse_c)
            return losses
        if not cfg.want_grad:
            return _reduced(cfg, losses, losses.new_zeros(()), B)[0]
        w = a.new_full((B_r,), 1.0 / B if cfg.reduction == "mean" else 1.0)
        ga, gb, d_inv_temp = DistClipFn._grad(cfg, a, b, lse_r, lse_c, w, inv_temp, c, fixed)
        loss, d_inv_temp = _reduced(cfg, losses, d_inv_temp, B)
        if cfg.normalize:
            ga, gb = chain_normalize(ga, a[s], nl[0]), chain_normalize(gb, b[s], nl[1])
        ctx.save_for_backward(ga * cfg.scale, gb * cfg.scale, d_inv_temp * (-inv_temp * inv_temp))
        return loss

    @staticmethod
    def _grad(cfg, a, b, lse_r, lse_c, w, inv_temp, c, fixed):
        B_r, B, o = _layout(cfg)
        s = slice(o, o + B_r)
        hw = 0.5 * w
        ga_cols, gb_cols = torch.zeros_like(a), torch.zeros_like(b)  # (B, d) each
        ga = rows_grad(a[s], b, inv_temp, c, fixed, cfg.bs, lse_r, hw, gb_cols)  # row softmax: (W R) b
        gb = rows_grad(b[s], a, inv_temp, c, fixed, cfg.bs, lse_c, hw, ga_cols)  # column softmax: (W C^T) a
        d_inv_temp = (a[s] * ga).sum() + (b[s] * gb).sum() - (w * (a[s] * b[s]).sum(1)).sum()
        ga.sub_(w[:, None] * b[s])  # positives on the diagonal
        gb.sub_(w[:, None] * a[s])
        mine = reduce_scatter_rows(cfg.op, torch.cat([ga_cols, gb_cols], 1), cfg.sizes, cfg.rank, cfg.group)
        d = a.shape[1]
        ga += mine[:, :d]
        gb += mine[:, d:]
        return ga.mul_(inv_temp), gb.mul_(inv_temp), d_inv_temp

    @staticmethod
    def backward(ctx, g_out):
        cfg = ctx.cfg
        if cfg.reduction != "none":
            return _scaled_backward(ctx, g_out, 2)
        a, b, na, nb, lse_r, lse_c = ctx.saved_tensors
        inv_temp, c, fixed = ctx.geom
        ga, gb, d_inv_temp = DistClipFn._grad(cfg, a, b, lse_r, lse_c, g_out.to(a.dtype), inv_temp, c, fixed)
        d_inv_temp = all_reduce(
            cfg.op, d_inv_temp.reshape(1), "all-reduce of the temperature gradient", cfg.group
        )[0]
        B_r, B, o = _layout(cfg)
        s = slice(o, o + B_r)
        if cfg.normalize:
            ga, gb = chain_normalize(ga, a[s], na), chain_normalize(gb, b[s], nb)
        needs = ctx.needs_input_grad
        return (
            (ga * cfg.scale).to(ctx.in_dtypes[0]) if needs[0] else None,
            (gb * cfg.scale).to(ctx.in_dtypes[1]) if needs[1] else None,
            (d_inv_temp * (-inv_temp * inv_temp)).to(ctx.tau_dtype) if needs[2] else None,
            None,
        )


def __getattr__(name: str) -> Any:
    # ``DistConfig``, this class's old name, clashed with ``contrastive.train.dist.DistConfig``
    if name == "DistConfig":
        import warnings

        warnings.warn(
            "contrastive.ops.info_nce_dist.DistConfig is deprecated; it is now RowShardSpec "
            "(not to be confused with contrastive.train.dist.DistConfig)",
            DeprecationWarning,
            stacklevel=2,
        )
        return RowShardSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
