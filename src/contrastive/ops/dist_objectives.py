r"""The distributed back-end of every objective: row-owner passes on the engine contract.

A distributed objective is the single-process objective, the rows this rank owns, and the
collectives: InfoNCE (:class:`DistInfoNCE`), supervised contrastive (:class:`DistSupCon`),
retrieval and the two-tower loss, which is symmetric retrieval without negatives
(:class:`DistRetrieval`), and SigLIP (:class:`DistSigLIP`).

Global batch: rank r holds ``n_r`` rows of each input; the global input is their concatenation
in rank order, rank r's rows start at ``o_r = sum_{q<r} n_q``. Each objective here is an
:class:`~contrastive.ops.engine.Objective` run by :class:`~contrastive.ops.engine.EngineFn`
(the contract: compute dtype, normalisation and its chain rule, reductions, the 'none'
recompute, temperature and bias gradients, casting back) on this rank's inputs. It gathers the
*columns* it needs (``O(N d)``), computes its own rows against all of them with the engine's
tile passes (:mod:`.rect_tiles`, :class:`.siglip.SigLIPObjective`), and

* reduce-scatters the gradient its rows send to other ranks' columns to their owners, so the
  gradient it returns for its inputs is that of the *global* ``sum_i w_i loss_i``;
* all-reduces ``d/d(inv_temp)`` and ``d/d(bias)``, so every rank holds the full ones;
* multiplies the input gradients by ``scale`` (the world size for ``gradient='ddp'``, whose
  reducer averages over ranks).

Its losses and ``(w * losses).sum()`` are the local rows'; the caller all-reduces the loss
value (:func:`global_loss`). Each row and each tile entry is computed by exactly one rank:
the flops are those of one process visiting every row against every column, split over the
ranks. For InfoNCE and SupCon that is ``6 N^2 d`` in all, 1.5x the one-process engine's ``4 N^2 d``
(which visits the upper triangle of the symmetric ``Z Z^T`` only); retrieval, the two-tower
loss and SigLIP cost what they cost in one process. Every objective takes its logit bound
from :func:`.tiles.logit_bound` over the gathered rows, so all ranks use the same shift.

The loss features of issue 25 that run on :mod:`.blockloss` (retrieval's GTE directions,
hardness, guide masks; HCL) have their row-owner form in :mod:`.dist_features`; Matryoshka
is a run per prefix in :func:`objective_loss`.

The drivers of the public functions of :mod:`contrastive.distributed` are at the end:
:func:`objective_loss` validates on every rank, agrees on the settings, runs the row owner
through :class:`~.engine.EngineFn` and all-reduces the loss value; :func:`two_input_loss` is its
two-input form (``info_nce``, ``clip_loss``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch

from . import validation as V
from .collectives import (
    GRADIENTS,
    Group,
    agree,
    all_reduce,
    check_gradient,
    collective_device,
    dtype_code,
    gather_rows,
    reduce_scatter_rows,
    rows_or_empty,
)
from .common import Rows, rowdot
from .engine import Build, EngineFn, Grads, Objective, present, whole
from .info_nce import pair_dots, sub_pair_grad_
from .matryoshka import Prefixes
from .rect_tiles import rect_grad, rect_lse
from .siglip import SigLIPObjective
from .supcon import class_dots, class_sums, classes, row_losses, sub_positive_grad_
from .tiles import TileMask, check_block_size, logit_bound


class RowConfig(NamedTuple):
    op: str  # public name, for error messages
    group: Group  # process group
    rank: int
    sizes: list[int]  # rows (samples / anchors / pairs) per rank, the same everywhere
    scale: float  # world size ('ddp') or 1.0 ('exact')
    bs: int
    symmetric: bool = False  # retrieval
    neg_sizes: list[int] | None = None  # retrieval: negative rows per rank (K n_r, or M_r shared)
    neg_per_anchor: int = 0  # retrieval: K for (n_r, K, d) negatives, 0 for shared ones
    neg_grad: bool = False  # retrieval: the negatives need a gradient (on every rank)

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def rows(self) -> slice:
        return slice(self.offset, self.offset + self.sizes[self.rank])


def _reduced(
    cfg: RowConfig, d_inv: torch.Tensor, d_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """d/d(inv_temp) and d/d(bias) summed over ranks, in one all-reduce."""
    tot = all_reduce(
        cfg.op,
        torch.stack([d_inv, d_bias if d_bias is not None else d_inv.new_zeros(())]),
        "all-reduce of the temperature gradient",
        cfg.group,
    )
    return tot[0], (tot[1] if d_bias is not None else None)


def global_loss(cfg: RowConfig, local_sum: torch.Tensor) -> torch.Tensor:
    """The all-reduced value of the ranks' ``sum_i w_i loss_i``, differentiable as the local sum:
    its gradient (computed by the objective) is already that of the global loss."""
    total = all_reduce(cfg.op, local_sum.detach().clone().reshape(1), "all-reduce of the loss", cfg.group)[0]
    return local_sum + (total - local_sum.detach()) if local_sum.requires_grad else total


class _RowOwner(Objective):
    """An objective whose rows are this rank's share of the global ones."""

    cfg: RowConfig
    rows_per_sample = 1  # loss rows per sample of ``cfg.sizes`` (InfoNCE: two views)

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        """'mean' averages over the global rows: 1 / their number over every rank."""
        return like.new_full((self.n,), 1.0 / (self.rows_per_sample * sum(self.cfg.sizes)))


class DistInfoNCE(_RowOwner):
    """InfoNCE rows of this rank: with Z = [z1; z2] (N = 2B gathered rows), its rows are
    z1_r = Z[o:o + B_r] and z2_r = Z[B + o:B + o + B_r], each against all N columns with its
    own column masked (``exclude_self``). p(i) = (i + B) mod N maps them onto themselves, so in
    the local order [z1_r; z2_r] every positive is local, at (i + B_r) mod 2 B_r: the losses and
    the positives' gradient are :mod:`.info_nce`'s on the local rows.

    Gradient of sum_i w_i loss_i (:mod:`.info_nce`: (WG + (WG)^T) Z / tau), split by owner:
        ((WP) Z)_i, i local                 rect_grad's row part
        ((WP)^T Z)_k = sum_r ((WP)_{R_r})^T Z_{R_r}: its column part (N, d), reduce-scattered
        - (w_i + w_p(i)) z_p(i)              local
        d/d(inv_temp) = sum_k z_k . g_k / 2  (every logit is degree 2 in Z), all-reduced
    """

    rows_per_sample = 2

    def __init__(
        self,
        zs: list[torch.Tensor | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        cfg: RowConfig,
        exclude_self: bool,
    ):
        self.cfg, self.inv_temp = cfg, inv_temp
        z1, z2 = present(zs[0]), present(zs[1])  # (B_r, d) local unit rows each
        self.m, d, B, o = z1.shape[0], z1.shape[1], sum(cfg.sizes), cfg.offset
        G = gather_rows(cfg.op, torch.cat([z1, z2], 1), cfg.sizes, cfg.group)  # (B, 2d): [z1 | z2]
        self.z = torch.cat([G[:, :d], G[:, d:]])  # (N, d) Z = [z1; z2]
        self.zl = torch.cat([z1, z2])  # (2 B_r, d) local rows
        self.n = 2 * self.m
        self.masks = [TileMask(self_offset=k if exclude_self else None) for k in (o, B + o)]
        self.c, self.fixed = logit_bound(inv_temp, [self.z])
        self.lse = torch.cat(
            [
                rect_lse(
                    self.zl[k * self.m : (k + 1) * self.m], self.z, inv_temp, self.c, mask, cfg.bs, self.fixed
                )[0]
                for k, mask in enumerate(self.masks)
            ]
        )  # (2 B_r,) pass 1

    def losses(self) -> torch.Tensor:
        return self.lse - self.inv_temp * pair_dots(self.zl)  # -log P_{i,p(i)}

    def grad(self, w: torch.Tensor) -> Grads:
        cfg, z, zl, m = self.cfg, self.z, self.zl, self.m
        B, d = sum(cfg.sizes), zl.shape[1]
        g_rows, g_cols = [], None  # g_cols (N, d): (WP)_R^T Z_R, summed over the two halves
        for k, mask in enumerate(self.masks):
            s = slice(k * m, (k + 1) * m)
            gx, gy = rect_grad(zl[s], z, self.inv_temp, self.c, mask, cfg.bs, self.fixed, self.lse[s], w[s])
            g_rows.append(gx)  # ((WP) Z)_R
            g_cols = present(gy) if g_cols is None else g_cols.add_(present(gy))
        g_cols = present(g_cols)
        g = torch.cat(g_rows)  # (2 B_r, d)
        sub_pair_grad_(g, zl, w)  # - (W onehot(p) + its transpose) Z
        mine = reduce_scatter_rows(
            cfg.op, torch.cat([g_cols[:B], g_cols[B:]], 1), cfg.sizes, cfg.rank, cfg.group
        )  # (B_r, 2d): ((WP)^T Z)_R from every rank
        g[:m] += mine[:, :d]
        g[m:] += mine[:, d:]
        d_inv, _ = _reduced(cfg, rowdot(zl, g).sum() / 2, None)  # sum_k z_k . g_k / 2
        g.mul_(self.inv_temp * cfg.scale)
        return [g[:m], g[m:]], d_inv, None


class DistSupCon(_RowOwner):
    """SupCon rows of this rank: z_R against all N gathered rows, self (column o + i) masked;
    positives by class sums of the gathered rows (see :mod:`.supcon`)."""

    def __init__(
        self,
        zs: list[torch.Tensor | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        cfg: RowConfig,
        labels: torch.Tensor,
    ):
        self.cfg, self.inv_temp, zl = cfg, inv_temp, present(zs[0])  # zl: (R, d) local unit rows
        self.zl, self.n = zl, zl.shape[0]
        self.z = z = gather_rows(cfg.op, zl, cfg.sizes, cfg.group)  # (N, d)
        self.cls, counts = classes(labels, z.device)  # (N,) class index, (K,) rows per class
        npos = counts[self.cls] - 1  # (N,) |P(i)|
        self.count = int((npos > 0).sum())  # global rows with a positive
        self.npos, self.has = npos[cfg.rows].to(z.dtype), npos[cfg.rows] > 0
        self.csum = class_sums(z, self.cls, counts.shape[0])  # (K, d) class sums of all N rows
        self.mask = TileMask(self_offset=cfg.offset)
        self.c, self.fixed = logit_bound(inv_temp, [z])
        lse, _ = rect_lse(zl, z, inv_temp, self.c, self.mask, cfg.bs, self.fixed)  # (R,) pass 1
        self.lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # -inf: N = 1, no column

    def losses(self) -> torch.Tensor:
        pos = class_dots(self.zl, self.csum, self.cls[self.cfg.rows])
        return row_losses(self.lse, pos, self.npos, self.has, self.inv_temp)

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        return self.has.to(like.dtype) / max(self.count, 1)  # mean over global rows with a positive

    def grad(self, w: torch.Tensor) -> Grads:
        cfg, z, zl, cl = self.cfg, self.z, self.zl, self.cls[self.cfg.rows]
        w = torch.where(self.has, w, torch.zeros_like(w))  # rows without positives: no loss
        gx, gy_ = rect_grad(zl, z, self.inv_temp, self.c, self.mask, cfg.bs, self.fixed, self.lse, w)
        gy = present(gy_)  # (N, d): need_y is on
        v = w / self.npos.clamp_min(1)  # v_i = w_i / |P(i)|
        # d/dz of -sum_{i local} v_i z_i . (c_{y_i} - z_i): the local rows' part into gx, the
        # class sums' part into every row's gy
        sub_positive_grad_(gx, zl, v, self.csum, cl, gy, self.cls)
        gx += reduce_scatter_rows(cfg.op, gy, cfg.sizes, cfg.rank, cfg.group)  # (WP)^T Z from every rank
        d_inv, _ = _reduced(cfg, rowdot(zl, gx).sum() / 2, None)  # sum_k z_k . g_k / 2
        return [gx.mul_(self.inv_temp * cfg.scale)], d_inv, None


class DistRetrieval(_RowOwner):
    """Retrieval rows of this rank: its anchors against every positive and negative (gathered).
    The symmetric direction's column normalisers (a positive against every anchor) are sums over
    all ranks' anchor rows: each rank's partial log-sum-exps are all-gathered and combined."""

    def __init__(
        self,
        zs: list[torch.Tensor | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        cfg: RowConfig,
        ids: torch.Tensor | None,
    ):
        self.cfg, self.inv_temp = cfg, inv_temp
        self.al, self.pl, nl = present(zs[0]), present(zs[1]), zs[2]  # local unit rows
        self.n, d, K = self.al.shape[0], self.al.shape[1], cfg.neg_per_anchor
        rows = [self.pl] + ([present(nl).reshape(self.n, K * d)] if K else [])
        G = gather_rows(cfg.op, torch.cat(rows, 1), cfg.sizes, cfg.group)  # (B, (1 + K) d)
        self.P = G[:, :d]  # (B, d) every positive
        self.N = (
            G[:, d:].reshape(-1, d)
            if K
            else (
                gather_rows(cfg.op, present(nl), cfg.neg_sizes, cfg.group)
                if cfg.neg_sizes is not None
                else None
            )
        )
        o = cfg.offset
        self.mask = (
            TileMask(row_key=ids[cfg.rows], col_key=ids, keep_offset=o) if ids is not None else TileMask()
        )
        self.c, self.fixed = logit_bound(inv_temp, [self.al], [self.P, self.N])
        bs, sym = cfg.bs, cfg.symmetric
        lse_r, lse_c = rect_lse(self.al, self.P, inv_temp, self.c, self.mask, bs, self.fixed, cols=sym)
        if self.N is not None:
            lse_n, _ = rect_lse(self.al, self.N, inv_temp, self.c, TileMask(), bs, self.fixed)
            lse_r = torch.logaddexp(lse_r, lse_n)  # every candidate of row i
        self.lse_r = lse_r  # (R,)
        if sym:  # (W, B) partials -> (B,)
            parts = gather_rows(cfg.op, present(lse_c)[None, :], [1] * len(cfg.sizes), cfg.group)
            self.lse_c = torch.logsumexp(parts, 0)

    def losses(self) -> torch.Tensor:
        diag = self.inv_temp * (self.al * self.pl).sum(1)  # S_ii
        if self.cfg.symmetric:
            return 0.5 * (self.lse_r - diag) + 0.5 * (self.lse_c[self.cfg.rows] - diag)
        return self.lse_r - diag

    def grad(self, w: torch.Tensor) -> Grads:
        cfg, al, it = self.cfg, self.al, self.inv_temp
        sym, d, K = cfg.symmetric, al.shape[1], cfg.neg_per_anchor
        u = 0.5 * w if sym else w  # row-direction weights
        v = None
        if sym:  # column j's weight, owned by j's rank
            v = 0.5 * gather_rows(cfg.op, w, cfg.sizes, cfg.group)  # (B,)
        ga, gp_ = rect_grad(
            al,
            self.P,
            it,
            self.c,
            self.mask,
            cfg.bs,
            self.fixed,
            self.lse_r,
            u,
            self.lse_c if sym else None,
            v,
        )  # (R, d), (B, d)
        gp = present(gp_)  # need_y is on
        gn = None
        if self.N is not None:
            ga_n, gn = rect_grad(
                al, self.N, it, self.c, TileMask(), cfg.bs, self.fixed, self.lse_r, u, need_y=cfg.neg_grad
            )
            ga.add_(ga_n)
        ga.sub_(w[:, None] * self.pl)  # positives: dS_ii -= w_i
        d_inv = (al * ga).sum()  # sum over local rows of dS_ij a_i . c_j
        packed = [gp] + ([gn.reshape(-1, K * d)] if K and gn is not None else [])
        mine = reduce_scatter_rows(cfg.op, torch.cat(packed, 1), cfg.sizes, cfg.rank, cfg.group)
        gp_l = mine[:, :d] - w[:, None] * al  # + the positives' part of dS^T A
        gn_l = None
        if gn is not None:
            gn_l = (
                mine[:, d:].reshape(-1, d)
                if K
                # unpaired negatives (K = 0): neg_sizes is set whenever N is
                else reduce_scatter_rows(cfg.op, gn, cast(list[int], cfg.neg_sizes), cfg.rank, cfg.group)
            )
        d_inv, _ = _reduced(cfg, d_inv, None)
        s = it * cfg.scale
        return [ga.mul_(s), gp_l.mul_(s), None if gn_l is None else gn_l.mul_(s)], d_inv, None


class DistSigLIP(_RowOwner):
    """SigLIP rows of this rank: its a rows against every gathered b, positives at column o + i,
    loss and gradient in one pass (:class:`.siglip.SigLIPObjective` with an offset)."""

    def __init__(
        self,
        zs: list[torch.Tensor | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        cfg: RowConfig,
    ):
        assert bias is not None  # the sigmoid loss always has its bias
        self.cfg = cfg
        b = gather_rows(cfg.op, present(zs[1]), cfg.sizes, cfg.group)  # (B, d)
        self.inner = SigLIPObjective([zs[0], b], inv_temp, bias, (True, True), cfg.bs, offset=cfg.offset)
        self.n = present(zs[0]).shape[0]

    def losses(self) -> torch.Tensor:
        return self.inner.losses()

    def losses_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, Grads]:
        cfg = self.cfg
        losses, ([ga, gb], d_inv, d_bias) = self.inner.losses_and_grad(w)
        gb = reduce_scatter_rows(
            cfg.op, present(gb), cfg.sizes, cfg.rank, cfg.group
        )  # dS^T A from every rank
        d_inv, d_bias = _reduced(cfg, d_inv, d_bias)
        return losses, ([present(ga).mul_(cfg.scale), gb.mul_(cfg.scale)], d_inv, d_bias)

    def grad(self, w: torch.Tensor) -> Grads:
        return self.losses_and_grad(w)[1]


def dist_build(
    kind: str, cfg: RowConfig, extra: torch.Tensor | None = None, exclude_self: bool = True
) -> Build:
    """The engine's ``build`` for ``kind`` in 'info_nce' (inputs z1, z2), 'clip' (inputs a, b),
    'supcon' (extra: global labels), 'retrieval' (extra: global positive ids or None),
    'siglip'."""

    def build(
        rows: list[Rows | None], inv_temp: float, bias: float | None, needs: Sequence[bool]
    ) -> Objective:
        zs = [None if r is None else whole(r) for r in rows]  # the collectives need whole tensors
        if kind == "info_nce":
            return DistInfoNCE(zs, inv_temp, bias, needs, cfg, exclude_self)
        if kind == "clip":  # symmetric retrieval without negatives (cfg.symmetric is set)
            return DistRetrieval([*zs, None], inv_temp, bias, needs, cfg, None)
        if kind == "supcon":
            return DistSupCon(zs, inv_temp, bias, needs, cfg, present(extra))
        if kind == "retrieval":
            return DistRetrieval(zs, inv_temp, bias, needs, cfg, extra)
        return DistSigLIP(zs, inv_temp, bias, needs, cfg)

    return build


def check_embeddings(op, named, normalize, check_finite):
    """Check the (name, tensor) embeddings of one rank: floating, one dtype and device, finite,
    nonzero rows when normalising (a rank may hold 0 rows)."""
    ref_name, ref = named[0]
    for name, x in named:
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} is {x.dtype} and {ref_name} is {ref.dtype}; cast both to one dtype")
        V.check_same_device(ref_name, ref, name, x)
        if x.shape[-1] != ref.shape[-1]:
            raise ValueError(
                f"{name} has embedding dimension {x.shape[-1]} and {ref_name} {ref.shape[-1]}; "
                f"they must agree"
            )
        flat = x.reshape(-1, x.shape[-1])
        if check_finite and flat.shape[0]:
            V.check_finite(name, flat)
        if normalize and flat.shape[0]:
            V.check_nonzero_rows(name, flat)


def objective_loss(
    op,
    state,
    gradient,
    block_size,
    reduction,
    normalize,
    temperature,
    bias,
    inputs,
    validate,
    n_counts,
    setting_names,
    build,
    matryoshka=None,
):
    """The driver of the objectives on the engine contract: validate on every rank
    (``validate()`` returns the local row counts and the setting values; it may fill in
    ``inputs``), agree, then ``build(cfg, sizes)`` returns the engine's build (it may gather
    labels or ids), :class:`~contrastive.ops.engine.EngineFn` runs it and the loss value is
    all-reduced.

    ``matryoshka``: ``(dims, weights, [(name, local tensor or None)])`` or ``None``. The loss is
    then ``sum_k w_k`` of the objective on the inputs' prefixes ``[..., :d_k]``, each normalised
    on its own by the engine (exactly the single-process Matryoshka loss): one agreement, one
    engine run per prefix (a walk per prefix, not fused into one as in one process)."""
    group, rank, world = state
    err, counts, settings, tau_value, b_value = None, None, None, 0.0, 0.0
    prefixes, mrl_code = None, 0.0
    x0 = inputs[0]
    try:
        check_gradient(gradient)
        check_block_size(block_size, 1, torch.device("cpu"))  # validate here, size later
        V.check_reduction(reduction)
        counts, settings = validate()
        if matryoshka is not None:
            dims, weights, named = matryoshka
            prefixes = check_prefixes(dims, weights, named, normalize)
            mrl_code = prefix_code(prefixes)
        temperature = V.check_param("temperature", temperature, x0, True)
        tau_value = float(temperature.detach() if isinstance(temperature, torch.Tensor) else temperature)
        if bias is not None:
            bias = V.check_param("bias", bias, x0, False)
            b_value = float(bias.detach() if isinstance(bias, torch.Tensor) else bias)
    except (TypeError, ValueError) as e:
        err = e
    ok = err is None
    want_grad = torch.is_grad_enabled() and any(
        isinstance(x, torch.Tensor) and x.requires_grad for x in list(inputs) + [temperature, bias]
    )
    checks = [
        ("embedding dimension", x0.shape[-1] if ok else 0),
        ("embedding dtype", dtype_code(x0) if ok else 0),
        ("temperature", tau_value),
        ("bias", b_value),
        ("normalize", bool(normalize)),
        ("reduction", V.REDUCTIONS.index(reduction) if ok else 0),
        ("need for a gradient (requires_grad on the inputs, torch.no_grad)", want_grad),
        ("gradient", GRADIENTS.index(gradient) if ok else 0),
        ("matryoshka_dims and matryoshka_weights", mrl_code),
    ] + list(zip(setting_names, settings if ok and settings is not None else [0] * len(setting_names)))
    sizes = agree(
        op,
        group,
        collective_device(x0, group),
        err,
        tuple(counts) if ok and counts is not None else (0,) * n_counts,
        checks,
    )
    if sum(sizes[0]) == 0:
        raise ValueError(
            f"contrastive.distributed.{op}: the global batch is empty (every rank passed 0 rows)"
        )
    cfg = dict(
        op=op,
        group=group,
        rank=rank,
        sizes=sizes[0],
        scale=float(world) if gradient == "ddp" else 1.0,
        bs=check_block_size(block_size, max(sum(s) for s in sizes), x0.device),
    )
    engine_build, row_cfg = build(cfg, sizes)
    if prefixes is None:
        out = EngineFn.apply(engine_build, bool(normalize), reduction, want_grad, temperature, bias, *inputs)
    else:
        out = None
        for d_k, w_k in zip(prefixes.dims, prefixes.weights):  # sum_k w_k L(x[..., :d_k])
            part = w_k * EngineFn.apply(
                engine_build,
                True,
                reduction,
                want_grad,
                temperature,
                bias,
                *[None if x is None else x[..., :d_k] for x in inputs],
            )
            out = part if out is None else out + part
    if reduction != "none":
        out = global_loss(row_cfg, out)
    return out.to(x0.dtype)


def check_prefixes(
    dims: Any, weights: Any, named: Sequence[tuple[str, torch.Tensor | None]], normalize: bool
) -> Prefixes | None:
    """The Matryoshka prefixes of one rank's inputs (``named``: (name, tensor or None)), as the
    single-process functions check them."""
    ref = present(named[0][1])
    prefixes = V.check_matryoshka(dims, weights, ref.shape[-1], normalize)
    for name, x in named:
        if prefixes is not None and x is not None and x.numel():
            V.check_prefix_rows(name, x, prefixes)
    return prefixes


def prefix_code(prefixes: Prefixes | None) -> float:
    """One number standing for the prefixes and their weights, compared across ranks (0: off)."""
    if prefixes is None:
        return 0.0
    return float(zlib.crc32(repr((prefixes.dims, prefixes.weights)).encode()) + 1)


def two_input_loss(
    op,
    kind,
    x,
    y,
    temperature,
    flags,
    reduction,
    normalize,
    check_finite,
    block_size,
    gradient,
    state,
    matryoshka=(None, None),
    hcl=(None, 0.0),
):
    """info_nce (kind 'info_nce', inputs z1, z2) or clip_loss ('clip', inputs a, b) on the
    engine contract: validate on every rank, agree, run the row-owner objective (its HCL form
    with ``hcl`` = (beta, tau_plus), beta not None)."""
    nx, ny = ("z1", "z2") if kind == "info_nce" else ("a", "b")
    local = {}
    exclude_self = bool(dict(flags).get("exclude_self", True))
    mrl = None if matryoshka == (None, None) else (*matryoshka, [(nx, x), (ny, y)])

    def validate():
        rows_or_empty(nx, x)
        rows_or_empty(ny, y)
        V.check_same_shape(nx, x, ny, y)
        check_embeddings(op, [(nx, x), (ny, y)], normalize, check_finite)
        local["hcl"] = V.check_hcl(*hcl)
        if local["hcl"] is not None and mrl is not None:
            raise ValueError("hcl_beta and matryoshka_dims do not combine yet; drop one of them")
        h = local["hcl"] or (-1.0, 0.0)
        return [x.shape[0]], [v for _, v in flags] + list(h)

    def build(cfg, sizes):
        rc = RowConfig(**cfg, symmetric=kind == "clip")
        if local["hcl"] is not None:
            B = sum(rc.sizes)
            n_neg = 2 * B - (2 if exclude_self else 1) if kind == "info_nce" else B - 1
            V.check_hcl_engine(op, "auto", False, n_neg)  # the same global sizes on every rank
            from .dist_features import dist_hcl_build  # it builds on this module

            return dist_hcl_build(kind, rc, exclude_self, *local["hcl"]), rc
        return dist_build(kind, rc, exclude_self=exclude_self), rc

    return objective_loss(
        op,
        state,
        gradient,
        block_size,
        reduction,
        normalize,
        temperature,
        None,
        [x, y],
        validate,
        1,
        [name for name, _ in flags] + ["hcl_beta", "hcl_tau_plus"],
        build,
        mrl,
    )


def siglip_build(cfg, sizes):
    rc = RowConfig(**cfg)
    return dist_build("siglip", rc), rc
