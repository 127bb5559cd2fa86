r"""Distributed supervised-contrastive, retrieval and SigLIP losses: one autograd contract and
each objective's row passes.

Global batch: rank r holds ``n_r`` rows of each input; the global input is the concatenation
in rank order (offsets ``o_r = sum_{q<r} n_q``). Rank r owns its rows of the loss matrix
``S`` (its anchors / its samples) and computes them against *all* gathered columns, so the
global loss costs no more flops than one process computing every row against every column,
split over the ranks (``6 n_r N d`` per rank for a softmax loss, ``6 n_r N d`` for SigLIP in
one pass); single-tower losses do not use the symmetry of ``Z Z^T`` that the one-process
engine exploits (``4 N^2 d`` in all), so they cost 1.5x its flops in total.

The contract, written once in :class:`DistObjectiveFn` for every objective:

* gather the inputs (``O(N d)``), cast to the compute dtype, L2-normalise the gathered rows;
* per-row losses of the local rows; the loss is the all-reduced sum (``/ n`` for ``'mean'``);
* the gradient of ``sum_i w_i loss_i`` over *global* rows: the objective returns the gradient
  w.r.t. its local unit rows, after reduce-scattering what its rows send to other ranks'
  columns, and the local parts of ``d/d(inv_t)`` and ``d/d(bias)``, which are all-reduced;
* ``'mean'``/``'sum'``: all of it in forward, backward scales by ``grad_output``; ``'none'``:
  ``w`` is the upstream gradient, so backward runs the gradient pass and its collectives;
* chain through the normalisation ``(I - z z^T) g / |u|``, multiply by ``scale`` (the world
  size for ``gradient='ddp'``), ``d/dtau = -d/d(inv_t) / tau^2``, cast back.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import torch

from . import compute_dtype
from .collectives import all_reduce, gather_rows, reduce_scatter_rows
from .info_nce_dense import chain_normalize, normalize_rows, temperature_value
from .rows_masked import TileMask, rows_grad, rows_lse, siglip_rows
from .tiles import use_fixed_shift


class ObjConfig(NamedTuple):
    op: str                   # public name, for error messages
    group: object             # process group
    rank: int
    sizes: List[int]          # local rows (anchors / samples / pairs) per rank, the same everywhere
    scale: float              # world size ('ddp') or 1.0 ('exact')
    reduction: str
    bs: int
    want_grad: bool
    normalize: bool
    symmetric: bool = False               # retrieval
    neg_sizes: Optional[List[int]] = None  # retrieval: negative rows per rank (K n_r, or M_r shared)
    neg_per_anchor: int = 0               # retrieval: K for (n_r, K, d) negatives, 0 for shared
    neg_grad: bool = False                # retrieval: the negatives need a gradient


def _max_norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x, dim=1).max()) if x.shape[0] else 0.0


def _slice(cfg: ObjConfig) -> slice:
    o = sum(cfg.sizes[: cfg.rank])
    return slice(o, o + cfg.sizes[cfg.rank])


class SupConRows:
    """Supervised contrastive (Khosla et al.): row i's positives P(i) are the other rows with its
    label; loss_i = lse_i - (1/|P(i)|) sum_{p in P(i)} s_ip with lse over a != i, 0 if P(i) = {}.
    The positive sum is z_i . (c_{y_i} - z_i) / tau with c the class sums of Z: O(N d)."""

    n_inputs = 1

    def __init__(self, cfg: ObjConfig, labels: torch.Tensor):
        self.cfg, self.labels = cfg, labels                         # labels: gathered, (N,)

    def gather(self, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [gather_rows(self.cfg.op, xs[0], self.cfg.sizes, self.cfg.group)]

    def count(self) -> int:
        return int(self.valid_all.sum())

    def setup(self, units, inv_t, bias):
        cfg, (z,) = self.cfg, units
        self.z, self.inv_t, self.sl = z, inv_t, _slice(cfg)
        _, self.cls, cnt = torch.unique(self.labels, return_inverse=True, return_counts=True)
        n_pos = cnt[self.cls] - 1                                   # |P(i)|, (N,)
        self.valid_all = n_pos > 0
        self.n_pos, self.valid = n_pos[self.sl].to(z.dtype), self.valid_all[self.sl]
        self.csum = z.new_zeros(cnt.shape[0], z.shape[1]).index_add_(0, self.cls, z)   # (K, d) class sums
        self.c = inv_t * _max_norm(z) ** 2
        self.fixed = use_fixed_shift(self.c, z.dtype)
        self.mask = TileMask(self_col=self.sl.start)

    def losses(self) -> torch.Tensor:
        zl = self.z[self.sl]                                        # (R, d)
        lse = rows_lse(zl, self.z, self.inv_t, self.c, self.fixed, self.cfg.bs, self.mask)
        self.lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))   # -inf: N = 1, no column
        pos = self.inv_t * (zl * (self.csum[self.cls[self.sl]] - zl)).sum(1) / self.n_pos.clamp(min=1)
        return torch.where(self.valid, self.lse - pos, torch.zeros_like(lse))

    def grad(self, w: torch.Tensor):
        cfg, z, sl = self.cfg, self.z, self.sl
        zl, cl = z[sl], self.cls[sl]
        v = torch.where(self.valid, w, torch.zeros_like(w))        # rows without positives: no weight
        a = v / self.n_pos.clamp(min=1)                             # v_i / |P(i)|
        g_cols = torch.zeros_like(z)                                # (N, d): (VP)_R^T Z_R
        g = rows_grad(zl, z, self.inv_t, self.c, self.fixed, cfg.bs, self.lse, v, g_cols, self.mask)
        g.sub_(a[:, None] * (self.csum[cl] - zl))                   # - a_i sum_{p in P(i)} z_p
        dinv = (zl * g).sum()                                       # sum_i z_i . ((VG) Z)_i
        e = z.new_zeros(self.csum.shape).index_add_(0, cl, a[:, None] * zl)   # local a-weighted class sums
        g_cols.sub_(e[self.cls])                                    # - sum_{i in P(k), i local} a_i z_i
        g_cols[sl] += a[:, None] * zl                               #   (i = k is not in P(k))
        g += reduce_scatter_rows(cfg.op, g_cols, cfg.sizes, cfg.rank, cfg.group)
        return [g.mul_(self.inv_t)], dinv, None                     # (VG + (VG)^T) Z / tau, rows R


class RetrievalRows:
    """Anchors against every positive and every negative (the candidates); row i's positive is
    candidate i. ``ids``: a candidate positive j != i with ids[j] == ids[i] is not a negative of
    row i. Symmetric: also each positive against every anchor, the two directions averaged."""

    def __init__(self, cfg: ObjConfig, ids: Optional[torch.Tensor]):
        self.cfg, self.ids = cfg, ids                               # ids: gathered, (B,) or None
        self.n_inputs = 3 if cfg.neg_sizes is not None else 2

    def gather(self, xs):
        cfg = self.cfg
        a, p = xs[0], xs[1]
        d, K = a.shape[1], cfg.neg_per_anchor
        parts = [a, p] + ([xs[2].reshape(a.shape[0], K * d)] if K else [])
        G = gather_rows(cfg.op, torch.cat(parts, 1), cfg.sizes, cfg.group)   # (B, (2 + K) d)
        out = [G[:, :d], G[:, d:2 * d]]
        if K:
            out.append(G[:, 2 * d:].reshape(-1, d))                 # (B K, d), anchor-major
        elif cfg.neg_sizes is not None:
            out.append(gather_rows(cfg.op, xs[2], cfg.neg_sizes, cfg.group))  # (M, d)
        return out

    def count(self) -> int:
        return sum(self.cfg.sizes)

    def setup(self, units, inv_t, bias):
        cfg = self.cfg
        self.A, self.P = units[0], units[1]
        self.Ng = units[2] if len(units) > 2 else None
        self.inv_t, self.sl = inv_t, _slice(cfg)
        cand = max(_max_norm(self.P), _max_norm(self.Ng) if self.Ng is not None else 0.0)
        self.c = inv_t * _max_norm(self.A) * cand
        self.fixed = use_fixed_shift(self.c, self.A.dtype)
        ids = self.ids
        self.mask = None if ids is None else TileMask(row_ids=ids[self.sl], col_ids=ids, keep_col=self.sl.start)

    def _lse(self, x, cols, mask, neg):
        lse = rows_lse(x, cols, self.inv_t, self.c, self.fixed, self.cfg.bs, mask)
        if neg is not None:
            lse = torch.logaddexp(lse, rows_lse(x, neg, self.inv_t, self.c, self.fixed, self.cfg.bs))
        return lse

    def losses(self) -> torch.Tensor:
        al, pl = self.A[self.sl], self.P[self.sl]
        self.diag = self.inv_t * (al * pl).sum(1)                   # S_ii, the positives
        self.lse_a = self._lse(al, self.P, self.mask, self.Ng)
        if not self.cfg.symmetric:
            return self.lse_a - self.diag
        self.lse_p = self._lse(pl, self.A, self.mask, None)
        return 0.5 * (self.lse_a - self.diag) + 0.5 * (self.lse_p - self.diag)

    def grad(self, w: torch.Tensor):
        cfg, sl, it = self.cfg, self.sl, self.inv_t
        al, pl = self.A[sl], self.P[sl]
        hw = 0.5 * w if cfg.symmetric else w
        gp_cols = torch.zeros_like(self.P)                          # (B, d)
        ga = rows_grad(al, self.P, it, self.c, self.fixed, cfg.bs, self.lse_a, hw, gp_cols, self.mask)
        gn_cols = None
        if self.Ng is not None:
            gn_cols = torch.zeros_like(self.Ng) if cfg.neg_grad else None
            ga += rows_grad(al, self.Ng, it, self.c, self.fixed, cfg.bs, self.lse_a, hw, gn_cols)
        packed = [gp_cols]
        gp = torch.zeros_like(pl)
        if cfg.symmetric:
            ga_cols = torch.zeros_like(self.A)
            gp = rows_grad(pl, self.A, it, self.c, self.fixed, cfg.bs, self.lse_p, hw, ga_cols, self.mask)
            packed.append(ga_cols)
        dinv = (al * ga).sum() + (pl * gp).sum() - (w * (al * pl).sum(1)).sum()
        ga.sub_(w[:, None] * pl)                                    # positives: -w_i p_i on a_i,
        gp.sub_(w[:, None] * al)                                    #            -w_i a_i on p_i
        K, d = cfg.neg_per_anchor, al.shape[1]
        if K and gn_cols is not None:
            packed.append(gn_cols.reshape(-1, K * d))               # (B, K d), row-aligned with anchors
        mine = reduce_scatter_rows(cfg.op, torch.cat(packed, 1), cfg.sizes, cfg.rank, cfg.group)
        gp += mine[:, :d]
        if cfg.symmetric:
            ga += mine[:, d:2 * d]
        grads = [ga.mul_(it), gp.mul_(it)]
        if self.Ng is not None:
            if gn_cols is None:
                grads.append(None)
            elif K:
                grads.append(mine[:, -K * d:].reshape(-1, d).mul(it))
            else:
                grads.append(reduce_scatter_rows(cfg.op, gn_cols, cfg.neg_sizes, cfg.rank, cfg.group).mul(it))
        return grads, dinv, None


class SigLIPRows:
    """SigLIP: loss_i = sum_j softplus(-z_ij (inv_t a_i . b_j + bias)), z_ii = 1, else -1."""

    n_inputs = 2

    def __init__(self, cfg: ObjConfig):
        self.cfg = cfg

    def gather(self, xs):
        d = xs[0].shape[1]
        G = gather_rows(self.cfg.op, torch.cat([xs[0], xs[1]], 1), self.cfg.sizes, self.cfg.group)   # (B, 2d)
        return [G[:, :d], G[:, d:]]

    def count(self) -> int:
        return sum(self.cfg.sizes)

    def setup(self, units, inv_t, bias):
        self.A, self.B = units
        self.inv_t, self.bias, self.sl = inv_t, bias, _slice(self.cfg)

    def losses(self) -> torch.Tensor:
        return self.losses_and_grad(None)[0]

    def grad(self, w):
        return self.losses_and_grad(w)[1:]

    def losses_and_grad(self, w):
        """One pass over the tiles: the losses and, given w, the gradient (the loss has no normaliser)."""
        cfg, sl = self.cfg, self.sl
        al = self.A[sl]
        g_cols = torch.zeros_like(self.B) if w is not None else None   # (B, d): (WD)^T A_R
        losses, g, dbias = siglip_rows(al, self.B, self.inv_t, self.bias, cfg.bs, sl.start, w, g_cols)
        if w is None:
            return losses, None, None, None
        dinv = (al * g).sum()                                       # sum_ij H_ij a_i . b_j
        gb = reduce_scatter_rows(cfg.op, g_cols, cfg.sizes, cfg.rank, cfg.group)
        return losses, [g.mul_(self.inv_t), gb.mul_(self.inv_t)], dinv, dbias


class _Done(NamedTuple):
    """What backward needs of an objective whose gradient was computed in forward."""

    cfg: ObjConfig


def _losses_and_grad(obj, w):
    if hasattr(obj, "losses_and_grad"):
        return obj.losses_and_grad(w)
    losses = obj.losses()
    return (losses,) + tuple(obj.grad(w))


class DistObjectiveFn(torch.autograd.Function):
    """``apply(obj, temperature, bias, *inputs)``: the global loss of ``obj`` (a SupConRows,
    RetrievalRows or SigLIPRows) on every rank, or this rank's row losses for 'none'."""

    @staticmethod
    def forward(ctx, obj, temperature, bias, *inputs):
        cfg = obj.cfg
        ct = compute_dtype(inputs[0].dtype)
        gathered = obj.gather(inputs)
        units, norms = [], []
        for x in gathered:
            u, n = normalize_rows(x.to(ct)) if cfg.normalize else (x.to(ct), None)
            units.append(u)
            norms.append(n)
        inv_t = 1.0 / float(temperature_value(temperature, torch.float64, "cpu"))
        bias_v = float(temperature_value(bias, torch.float64, "cpu")) if bias is not None else 0.0
        obj.setup(units, inv_t, bias_v)
        ctx.obj, ctx.inv_t = obj, inv_t
        ctx.in_dtypes = [x.dtype for x in inputs]
        ctx.p_dtypes = [getattr(temperature, "dtype", None), getattr(bias, "dtype", None)]
        ctx.local = DistObjectiveFn._local(obj, inputs, units, norms)
        if cfg.reduction == "none":
            return obj.losses()
        n = obj.count()
        if not cfg.want_grad:
            return DistObjectiveFn._total(cfg, obj.losses(), n)
        w = units[0].new_full((cfg.sizes[cfg.rank],), 1.0 / max(n, 1) if cfg.reduction == "mean" else 1.0)
        losses, grads, dinv, dbias = _losses_and_grad(obj, w)
        tot = all_reduce(cfg.op, torch.stack([losses.sum(), dinv, dbias if dbias is not None else dinv * 0]),
                         "all-reduce of the loss", cfg.group)
        ctx.grads = DistObjectiveFn._finish(ctx, grads, tot[1], tot[2])
        ctx.local = None                                            # the gathered batch can go
        ctx.obj = _Done(cfg)
        return tot[0] / max(n, 1) if cfg.reduction == "mean" else tot[0]

    @staticmethod
    def _local(obj, inputs, units, norms):
        """This rank's unit rows and norms per input (for the normalisation's chain rule)."""
        cfg, out = obj.cfg, []
        for k, (u, n) in enumerate(zip(units, norms)):
            sizes = cfg.sizes
            if k == 2 and cfg.neg_sizes is not None:
                sizes = cfg.neg_sizes
            o = sum(sizes[: cfg.rank])
            sl = slice(o, o + sizes[cfg.rank])
            out.append((u[sl], n[sl] if n is not None else None, inputs[k].shape))
        return out

    @staticmethod
    def _total(cfg, losses, n):
        tot = all_reduce(cfg.op, losses.sum().reshape(1), "all-reduce of the loss", cfg.group)[0]
        return tot / max(n, 1) if cfg.reduction == "mean" else tot

    @staticmethod
    def _finish(ctx, grads, dinv, dbias):
        """Chain rule through the normalisation, DDP scale, d/dtau and d/dbias, input dtypes."""
        cfg, it = ctx.obj.cfg, ctx.inv_t
        out = []
        for g, (zl, nl, shape), dt in zip(grads, ctx.local, ctx.in_dtypes):
            if g is None:
                out.append(None)
                continue
            gu = chain_normalize(g, zl, nl) if cfg.normalize else g
            out.append((gu * cfg.scale).reshape(shape).to(dt))
        t_dt, b_dt = ctx.p_dtypes
        dtau = (dinv * (-it * it)).to(t_dt) if t_dt is not None else None   # d/dtau = -d/d(inv_t) / tau^2
        db = dbias.to(b_dt) if b_dt is not None else None
        return out, dtau, db

    @staticmethod
    def backward(ctx, g_out):
        cfg = ctx.obj.cfg
        if cfg.reduction != "none":
            grads, dtau, db = ctx.grads
            s = g_out.to(torch.float64)
            mul = lambda t: None if t is None else (t * s.to(t.dtype))
        else:
            grads, dinv, dbias = ctx.obj.grad(g_out.to(ctx.local[0][0].dtype))
            tot = all_reduce(cfg.op, torch.stack([dinv, dbias if dbias is not None else dinv * 0]),
                             "all-reduce of the temperature gradient", cfg.group)
            grads, dtau, db = DistObjectiveFn._finish(ctx, grads, tot[0], tot[1])
            mul = lambda t: t
        needs = ctx.needs_input_grad
        return (None, mul(dtau) if needs[1] else None, mul(db) if needs[2] else None,
                *[mul(g) if needs[3 + k] else None for k, g in enumerate(grads)])
