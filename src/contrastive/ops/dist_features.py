r"""The distributed forms of the :mod:`.blockloss` objectives: retrieval's loss features
(:mod:`.retrieval_features`: GTE directions, hardness, HCL, GIST guide masks) and Robinson's
HCL on InfoNCE and the two-tower loss (:mod:`.hcl_objectives`).

Every one of them is a sum of per-row terms, each row's partitions made of that row's logits
against candidate sets. Rank r owns rows ``o_r .. o_r + n_r`` of the global batch and computes
their partitions completely: each block of the single-process objective becomes a rectangle of
this rank's rows (local inputs) against the gathered candidates (every rank's rows of the
column input), with the row side only:

* q.d (row side ``query_to_doc``): local anchors against every positive; its column side
  (``doc_to_query``: p_j against every anchor) becomes the row side of local positives against
  every anchor (the same logits, computed by the positive's owner: those tiles are walked twice
  over the ranks, once per direction, instead of once);
* q.q, d.d (the symmetric blocks ``query_to_query``, ``doc_to_doc``, GIST's
  ``contrast_anchors`` / ``contrast_positives``): local rows against every gathered row, the
  row side of the single-process block's row and column sides together;
* q.n, d.n: local anchors or positives against every negative.

Masks and boosts are the single-process ones with the local rows at their global indices
(self pairs at column o + i, a query's own hard negatives at (o + i) K .. (o + i + 1) K, ids and
guide embeddings gathered). :class:`DistBlock` runs :class:`~.blockloss.BlockObjective` on
[local inputs, gathered inputs], reduce-scatters the gathered inputs' gradients to their owners,
all-reduces d/d(inv_temp) and scales by ``cfg.scale``. The 'mean' weight is 1 / (global rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from . import validation as V
from .blockloss import Block, BlockObjective, Side
from .collectives import dtype_code, gather_rows, reduce_scatter_rows
from .common import normalize_rows
from .dist_objectives import RowConfig, _reduced, _RowOwner
from .engine import Build, Grads, present, whole
from .hcl import Partition
from .retrieval_features import GuideSel, guide_threshold
from .selectors import Everything, Sel

# ----------------------------------------------------------------------------- selectors


def key_sel(rk: torch.Tensor, ck: torch.Tensor) -> Sel:
    """Entries whose row key (local rows) equals the column key (gathered columns)."""

    def sel(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        return rk[i0:i1, None] == ck[None, j0:j1]

    return sel


def but_not(a: Sel, keep: Sel) -> Sel:
    """Entries selected by ``a`` and not by ``keep``."""

    def sel(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor | None:
        m = a(i0, i1, j0, j1)
        return None if m is None else m & ~present(keep(i0, i1, j0, j1))

    return sel


def negated(a: Sel) -> Sel:
    """Entries not selected by ``a`` (a boost on every candidate but some)."""

    def sel(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        return ~present(a(i0, i1, j0, j1))

    return sel


# ----------------------------------------------------------------------------- the objective

#: a gathered input: (global tensor, index of its local input, global -> local gradient)
Gathered = tuple[torch.Tensor, int, Callable[[torch.Tensor], torch.Tensor]]


class DistBlock(_RowOwner):
    """A :class:`~.blockloss.BlockObjective` over this rank's rows: inputs
    ``[*local, *gathered]``; the gathered inputs' gradients go back to their owners."""

    def __init__(
        self,
        cfg: RowConfig,
        inv_temp: float,
        local: list[torch.Tensor | None],
        gathered: list[Gathered],
        needs: Sequence[bool],
        blocks: Sequence[Block],
        parts: Sequence[Partition],
        pos: tuple[int, int, torch.Tensor | None],
        boost: float,
        rows_per_sample: int = 1,
    ):
        self.cfg, self.local, self.gathered, self.rows_per_sample = cfg, local, gathered, rows_per_sample
        zs = [*local, *(g for g, _, _ in gathered)]
        nd = [bool(need) and x is not None for x, need in zip(local, needs)]
        nd += [bool(needs[i]) for _, i, _ in gathered]
        self.obj = BlockObjective(zs, inv_temp, nd, blocks, parts, pos, boost, cfg.bs)
        self.n = self.obj.n

    def losses(self) -> torch.Tensor:
        return self.obj.losses()

    def grad(self, w: torch.Tensor) -> Grads:
        gs, d_inv, _ = self.obj.grad(w)
        nl = len(self.local)
        out = list(gs[:nl])
        for (_, i, back), g in zip(self.gathered, gs[nl:]):
            if g is None:
                continue
            mine = back(g)  # the gradient that every rank's rows send to this rank's rows of input i
            out[i] = mine if out[i] is None else present(out[i]).add_(mine)
        d_inv, _ = _reduced(self.cfg, d_inv, None)
        return [None if g is None else g.mul_(self.cfg.scale) for g in out], d_inv, None


def _at(i: int | None) -> int:
    """The index of a gathered input that the block's direction made sure to gather."""
    assert i is not None
    return i


def _scatter(cfg: RowConfig, sizes: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda g: reduce_scatter_rows(cfg.op, g, sizes, cfg.rank, cfg.group)


# ----------------------------------------------------------------------------- HCL InfoNCE / CLIP


def dist_hcl_build(kind: str, cfg: RowConfig, exclude_self: bool, beta: float, tau_plus: float) -> Build:
    """The engine's build of HCL InfoNCE (``kind`` 'info_nce', inputs z1, z2: local rows
    ``[z1_r; z2_r]`` against Z = [z1; z2]) or the HCL two-tower loss ('clip', inputs a, b)."""

    def build(rows, inv_temp, bias, needs):
        zs = [None if r is None else whole(r) for r in rows]
        B, o, m = sum(cfg.sizes), cfg.offset, cfg.sizes[cfg.rank]
        if kind == "info_nce":
            z1, z2 = present(zs[0]), present(zs[1])  # (B_r, d) each
            d, dev = z1.shape[1], z1.device
            G = gather_rows(cfg.op, torch.cat([z1, z2], 1), cfg.sizes, cfg.group)  # (B, 2d)
            Z = torch.cat([G[:, :d], G[:, d:]])  # (2B, d)
            mine = torch.arange(o, o + m, device=dev)
            gi = torch.cat([mine, mine + B])  # (2 B_r,) global index of the local rows
            pg = torch.cat([mine + B, mine])  # p(i) = (i + B) mod 2B
            cols = torch.arange(2 * B, device=dev)
            masks = [key_sel(pg, cols)] + ([key_sel(gi, cols)] if exclude_self else [])
            n_neg = torch.full((2 * m,), 2 * B - (2 if exclude_self else 1), dtype=z1.dtype, device=dev)
            back = _scatter(cfg, cfg.sizes)

            def to_local(g: torch.Tensor) -> torch.Tensor:  # (2B, d) -> (2 B_r, d)
                r = back(torch.cat([g[:B], g[B:]], 1))  # (B_r, 2d)
                return torch.cat([r[:, :d], r[:, d:]])

            obj = DistBlock(
                cfg,
                inv_temp,
                [torch.cat([z1, z2])],
                [(Z, 0, to_local)],
                [True],
                [Block(0, 1, Side(0, masks))],
                [Partition(1.0, "hcl", beta, tau_plus, n_neg)],
                (0, 1, pg),
                1.0,
                rows_per_sample=2,
            )
            return _TwoViews(obj, m)
        a, b = present(zs[0]), present(zs[1])
        dev = a.device
        A = gather_rows(cfg.op, a, cfg.sizes, cfg.group)  # (B, d)
        Bt = gather_rows(cfg.op, b, cfg.sizes, cfg.group)
        self_sel = key_sel(torch.arange(o, o + m, device=dev), torch.arange(B, device=dev))
        n_neg = torch.full((m,), B - 1, dtype=a.dtype, device=dev)
        back = _scatter(cfg, cfg.sizes)
        return DistBlock(
            cfg,
            inv_temp,
            [a, b],
            [(Bt, 1, back), (A, 0, back)],
            [True, True],
            [Block(0, 2, Side(0, [self_sel])), Block(1, 3, Side(1, [self_sel]))],
            [Partition(0.5, "hcl", beta, tau_plus, n_neg), Partition(0.5, "hcl", beta, tau_plus, n_neg)],
            (0, 1, None),
            1.0,
        )

    return build


class _TwoViews(_RowOwner):
    """InfoNCE's one stacked local input ``[z1_r; z2_r]`` presented as the inputs (z1, z2)."""

    def __init__(self, obj: DistBlock, m: int):
        self.obj, self.m, self.cfg, self.n, self.rows_per_sample = obj, m, obj.cfg, obj.n, 2

    def losses(self) -> torch.Tensor:
        return self.obj.losses()

    def grad(self, w: torch.Tensor) -> Grads:
        (g,), d_inv, _ = self.obj.grad(w)
        g = present(g)
        return [g[: self.m], g[self.m :]], d_inv, None


# ----------------------------------------------------------------------------- retrieval


def dist_features_build(
    cfg: RowConfig,
    *,
    directions: Sequence[str],
    partition_mode: str,
    hardness_mode: str | None,
    hardness_strength: float,
    hcl: tuple[float, float] | None,
    guide: list[torch.Tensor | None] | None,
    guide_margin: float,
    guide_margin_strategy: str,
    contrast_anchors: bool,
    contrast_positives: bool,
    ids: torch.Tensor | None,
) -> Build:
    """The engine's build of the retrieval features on this rank's anchors; ``ids`` the global
    positive ids, ``guide`` this rank's guide rows (anchors, positives, negatives or None)."""

    def build(rows, inv_temp, bias, needs):
        al, pl = present(whole(rows[0])), present(whole(rows[1]))  # (n, d) local unit rows
        nl = None if rows[2] is None else whole(rows[2])  # (n K, d) or (M_r, d)
        dev, dt = al.device, al.dtype
        B, o, n, K = sum(cfg.sizes), cfg.offset, al.shape[0], cfg.neg_per_anchor
        dirs = set(directions)
        per_dir = partition_mode == "per_direction" and "doc_to_query" in dirs
        qq = "query_to_query" in dirs or contrast_anchors
        dd = "doc_to_doc" in dirs or contrast_positives
        back = _scatter(cfg, cfg.sizes)
        gathered: list = [(gather_rows(cfg.op, pl, cfg.sizes, cfg.group), 1, back)]  # 3: P (B, d)
        iN = iA = None
        if nl is not None:
            nsz = cast(list[int], cfg.neg_sizes)  # set whenever negatives are
            iN = 3 + len(gathered)
            gathered.append((gather_rows(cfg.op, nl, nsz, cfg.group), 2, _scatter(cfg, nsz)))  # N (M, d)
        if qq or "doc_to_query" in dirs:
            iA = 3 + len(gathered)
            gathered.append((gather_rows(cfg.op, al, cfg.sizes, cfg.group), 0, back))  # A (B, d)
        M = 0 if iN is None else gathered[iN - 3][0].shape[0]
        mine = torch.arange(o, o + n, device=dev)  # global index of the local rows
        diag = key_sel(mine, torch.arange(B, device=dev))  # self / own positive at column o + i
        own_k = key_sel(mine, torch.arange(M, device=dev) // max(K, 1))  # the query's own hard negatives
        ids_m = None if ids is None else but_not(key_sel(ids[o : o + n].to(dev), ids.to(dev)), diag)
        gs = None
        if guide is not None:  # guide unit rows: local ones for the rows, gathered for the columns
            gl = [None if x is None else normalize_rows(x.to(dt))[0] for x in guide]
            thr = guide_threshold(present(gl[0]), present(gl[1]), guide_margin, guide_margin_strategy)
            gg: list[torch.Tensor | None] = [gather_rows(cfg.op, present(gl[0]), cfg.sizes, cfg.group)]
            gg.append(gather_rows(cfg.op, present(gl[1]), cfg.sizes, cfg.group))
            gn = gl[2]  # guide negatives: the negatives' split
            gg.append(
                None if gn is None else gather_rows(cfg.op, gn, cast(list[int], cfg.neg_sizes), cfg.group)
            )

            def gsel(x: int, y: int, keep_diag: bool = False) -> Sel:
                s = GuideSel(present(gl[x]), present(gg[y]), thr, False)
                return but_not(s, diag) if keep_diag else s

            gs = gsel
        b_qd = b_qn = None
        if hardness_mode is not None and hardness_strength > 0.0:
            if hardness_mode in ("in_batch_negatives", "all_negatives"):
                b_qd = negated(diag)
            if M and hardness_mode == "hard_negatives":
                b_qn = own_k if K else Everything()
            elif M and hardness_mode == "all_negatives":
                b_qn = Everything()
            elif M and hardness_mode == "in_batch_negatives" and K:
                b_qn = negated(own_k)
        boost = (inv_temp + hardness_strength) / inv_temp if (b_qd or b_qn) else 1.0
        qd_mask: list[Sel | None] = [ids_m]
        if hcl is not None:
            beta, tau_plus = hcl
            dup = torch.zeros(n, device=dev, dtype=torch.long)
            if ids is not None:
                _, inv, cnt = torch.unique(ids.to(dev), return_inverse=True, return_counts=True)
                dup = (cnt[inv] - 1)[o : o + n]
            n_neg = (B - 1 - dup + M).to(dt)
            parts = [Partition(1.0, "hcl", beta, tau_plus, n_neg)]
            qd_mask.append(diag)  # HCL's accumulators see the negatives only
        elif per_dir:
            parts = [Partition(0.5), Partition(0.5)]
        else:
            parts = [Partition(1.0)]
        if gs is not None:
            qd_mask.append(gs(0, 1, keep_diag=True))
        blocks = [Block(0, 3, Side(0, [m for m in qd_mask if m is not None], b_qd))]
        if "doc_to_query" in dirs:  # p_i against every anchor, the q.d block's column side
            blocks.append(Block(1, _at(iA), Side(1 if per_dir else 0, [] if ids_m is None else [ids_m])))
        if iN is not None:
            blocks.append(Block(0, iN, Side(0, [] if gs is None else [gs(0, 2)], b_qn)))
        for x, on, gi, col in ((0, qq, 0, iA), (1, dd, 1, 3)):
            if on:
                m = [s for s in (diag, ids_m, None if gs is None else gs(gi, gi)) if s is not None]
                blocks.append(Block(x, _at(col), Side(0, m)))
        if "doc_to_doc" in dirs and iN is not None:
            blocks.append(Block(1, iN, Side(0, [own_k] if K else [])))  # a document's own hard negatives out
        needs_g = [True, True, cfg.neg_grad]
        return DistBlock(cfg, inv_temp, [al, pl, nl], gathered, needs_g, blocks, parts, (0, 1, None), boost)

    return build


# ----------------------------------------------------------------------------- checks

DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")

#: the feature settings that every rank must pass alike (see :func:`feature_settings`)
FEATURE_SETTINGS = [
    "directions",
    "partition_mode",
    "hardness_mode",
    "hardness_strength",
    "hcl_beta",
    "hcl_tau_plus",
    "use of guide",
    "guide width",
    "guide dtype",
    "guide_margin",
    "guide_margin_strategy",
    "contrast_anchors",
    "contrast_positives",
]


def check_dist_features(
    anchors: torch.Tensor,
    negatives: torch.Tensor | None,
    check_finite: bool,
    *,
    directions: Any,
    partition_mode: Any,
    hardness_mode: Any,
    hardness_strength: Any,
    hcl_beta: Any,
    hcl_tau_plus: Any,
    guide: Any,
    guide_margin: Any,
    guide_margin_strategy: Any,
    contrast_anchors: Any,
    contrast_positives: Any,
) -> dict:
    """The retrieval features of one rank checked as :func:`contrastive.retrieval_loss` checks
    them; returns them validated, ``plain`` when the row-owner retrieval runs them (the two plain
    direction sets without features), the guide as this rank's rows (negatives flattened)."""
    dirs = V.check_directions(directions, partition_mode)
    hardness_mode, hardness_strength = V.check_hardness(hardness_mode, hardness_strength)
    hcl = V.check_hcl(hcl_beta, hcl_tau_plus)
    contrast_anchors = V.check_bool("contrast_anchors", contrast_anchors)
    contrast_positives = V.check_bool("contrast_positives", contrast_positives)
    if guide is not None:
        if anchors.shape[0]:
            guide, guide_margin = V.check_guide(
                guide, anchors, negatives, guide_margin, guide_margin_strategy, check_finite
            )
        else:  # a rank without rows: (0, g) guide rows (check_guide refuses empty batches)
            V.check_guide(
                [torch.ones(1, x.shape[-1], dtype=x.dtype, device=x.device) for x in guide[:2]],
                torch.ones(1, anchors.shape[1], dtype=anchors.dtype, device=anchors.device),
                None,
                guide_margin,
                guide_margin_strategy,
                False,
            )
            gn = guide[2] if len(guide) == 3 else None
            guide = (guide[0], guide[1], None if gn is None else gn.reshape(-1, guide[0].shape[-1]))
        guide = list(guide)
    V.check_feature_combination(
        dirs, hardness_mode, hcl, guide is not None, contrast_anchors, contrast_positives
    )
    plain_dirs = dirs == ("query_to_doc",) or (
        set(dirs) == {"query_to_doc", "doc_to_query"} and partition_mode == "per_direction"
    )
    no_features = (hardness_mode is None or hardness_strength == 0.0) and hcl is None and guide is None
    return dict(
        plain=plain_dirs and no_features,
        directions=dirs,
        partition_mode=partition_mode,
        hardness_mode=hardness_mode,
        hardness_strength=float(hardness_strength),
        hcl=hcl,
        guide=guide,
        guide_margin=float(guide_margin),
        guide_margin_strategy=guide_margin_strategy,
        contrast_anchors=bool(contrast_anchors),
        contrast_positives=bool(contrast_positives),
    )


def feature_settings(f: dict) -> list[float]:
    """The values of :data:`FEATURE_SETTINGS` for validated features ``f``."""
    g = f["guide"]
    return [
        sum(1 << DIRECTIONS.index(d) for d in f["directions"]),
        float(f["partition_mode"] == "per_direction"),
        V.HARDNESS_MODES.index(f["hardness_mode"]),
        f["hardness_strength"],
        -1.0 if f["hcl"] is None else f["hcl"][0],
        0.0 if f["hcl"] is None else f["hcl"][1],
        0.0 if g is None else 1.0 + (g[2] is not None),
        0.0 if g is None else g[0].shape[-1],
        0.0 if g is None else dtype_code(g[0]),
        f["guide_margin"],
        float(f["guide_margin_strategy"] == "relative"),
        float(f["contrast_anchors"]),
        float(f["contrast_positives"]),
    ]
