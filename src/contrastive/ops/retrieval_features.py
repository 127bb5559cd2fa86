"""Retrieval's loss features as :mod:`.blockloss` blocks: GTE directions, hardness, HCL, GIST.

Inputs: queries (anchors) a ``(B, d)``, documents (positives) p ``(B, d)``, negatives n
``(M, d)`` (K per query flattened, row i K + k belonging to query i, or a shared set).
Blocks (each walked once, whatever reads it):

* q.d tiles a p^T: row side ``query_to_doc``, column side ``doc_to_query`` (p_j against every
  query); q.n tiles a n^T: row side ``query_to_doc``;
* q.q tiles a a^T (symmetric walk): ``query_to_query`` or GIST's ``contrast_anchors``, self
  masked; d.d tiles p p^T (symmetric walk) and p n^T: ``doc_to_doc`` (every document but the
  query's own: its positive and its own hard negatives), or GIST's ``contrast_positives``
  (p p^T only), self masked.

Masks, per tile from O(N) vectors: equal ``positive_ids`` (a duplicate document, in every
block; a row's own positive kept), the guide's false negatives (:class:`GuideSel`).
``"joint"``: one partition per row over every block named; ``"per_direction"``: query_to_doc and
doc_to_query each their own softmax, averaged. Hardness (Lan et al. 2025, as
sentence-transformers 6.3's MultipleNegativesRankingLoss): the query_to_doc logits of the
mode's negatives become s (1/tau + alpha), alpha s a stop-gradient: ``"in_batch_negatives"``
every candidate not the query's own (other positives, other queries' hard negatives),
``"hard_negatives"`` the query's own hard negatives, ``"all_negatives"`` every candidate but the
positive; a shared negative set counts as every query's own hard negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .blockloss import Block, BlockObjective, Side
from .common import normalize_rows
from .engine import Build
from .hcl import Partition
from .selectors import AllButDiag, Diag, Everything, Sel, eq_sel, transposed


class GuideSel:
    """GIST's false negatives of a tile: entry (i, j) is dropped when g(x_i, y_j) > thr_i
    (strict, so ties are kept), ``g`` the guide's cosine. The tile is one GEMM of the guide's
    unit rows; entries within ``tol`` (the bound on the GEMM's rounding) of the threshold are
    decided again by :func:`pair_sim`, the very function that made ``thr``, so a candidate whose
    guide embedding equals the positive's ties bit for bit. ``keep_diag``: never drop the
    global diagonal (the row's own positive)."""

    def __init__(self, gx: torch.Tensor, gy: torch.Tensor, thr: torch.Tensor, keep_diag: bool):
        self.gx, self.gy, self.thr, self.keep_diag = gx, gy, thr, keep_diag
        self.tol = 2.0 * gx.shape[1] * torch.finfo(gx.dtype).eps  # >= |GEMM - pair_sim| for unit rows

    def __call__(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        D = self.gx[i0:i1] @ self.gy[j0:j1].T  # (m, n) guide similarities
        D.sub_(self.thr[i0:i1, None])  # minus the row's threshold
        out = D > 0
        ii, jj = (D.abs_() <= self.tol).nonzero(as_tuple=True)
        if ii.numel():
            exact = pair_sim(self.gx[i0 + ii], self.gy[j0 + jj])
            out[ii, jj] = exact > self.thr[i0 + ii]
        if self.keep_diag:
            out.diagonal(i0 - j0).fill_(False)
        return out


def pair_sim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of unit rows ``(k, d)`` -> ``(k,)``: the threshold's function."""
    return (x * y).sum(-1)


def guide_threshold(ga: torch.Tensor, gp: torch.Tensor, margin: float, strategy: str) -> torch.Tensor:
    """thr_i = t_i - margin ('absolute') or t_i - |t_i| margin ('relative'), t_i = g(a_i, p_i)."""
    t = pair_sim(ga, gp)
    return t - margin if strategy == "absolute" else t - t.abs() * margin


class _Guide:
    """The guide's unit rows (anchors, positives, negatives or None) and the thresholds."""

    def __init__(self, rows: list[torch.Tensor | None], thr: torch.Tensor):
        self.rows, self.thr = rows, thr

    def sel(self, x: int, y: int, keep_diag: bool = False) -> GuideSel:
        gx, gy = self.rows[x], self.rows[y]
        assert gx is not None and gy is not None
        return GuideSel(gx, gy, self.thr, keep_diag)


def _unit_guide(
    guide: Sequence[torch.Tensor | None], dt: torch.dtype, margin: float, strategy: str
) -> _Guide:
    rows = [None if x is None else normalize_rows(x.to(dt))[0] for x in guide]
    ga, gp = rows[0], rows[1]
    assert ga is not None and gp is not None
    return _Guide(rows, guide_threshold(ga, gp, margin, strategy))


def _negated(sel: Sel) -> Sel:
    def f(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor | None:
        m = sel(i0, i1, j0, j1)
        return None if m is None else ~m

    return f


def retrieval_features_objective(
    *,
    B: int,
    K: int,
    directions: Sequence[str],
    partition_mode: str,
    hardness_mode: str | None,
    hardness_strength: float,
    hcl: tuple[float, float] | None,
    guide: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
    guide_margin: float,
    guide_margin_strategy: str,
    contrast_anchors: bool,
    contrast_positives: bool,
    positive_ids: torch.Tensor | None,
    bs: int,
) -> Build:
    """The engine's ``build`` for inputs (anchors, positives, negatives or None); ``K`` the hard
    negatives per query (0 for a shared set or none)."""

    def build(zs, inv_temp, bias, needs):
        a = zs[0]
        dev, dt = a.device, a.dtype
        full = [None if z is None else z.full() if hasattr(z, "full") else z for z in zs]
        M = 0 if full[2] is None else full[2].shape[0]
        ids = None if positive_ids is None else positive_ids.to(dev)
        dirs = set(directions)
        per_dir = partition_mode == "per_direction" and "doc_to_query" in dirs
        gs = None if guide is None else _unit_guide(guide, dt, guide_margin, guide_margin_strategy)
        # the query's own hard negatives among the M negative rows (a shared set: all of them)
        own_k = eq_sel(torch.arange(B, device=dev), torch.arange(M, device=dev) // max(K, 1))
        own: Sel = own_k if K else Everything()
        ids_m = None if ids is None else eq_sel(ids, ids, keep_diag=True)
        dg = Diag(dev)
        # hardness: which query_to_doc entries are boosted
        b_qd = b_qn = None
        if hardness_mode is not None and hardness_strength > 0.0:
            if hardness_mode in ("in_batch_negatives", "all_negatives"):
                b_qd = AllButDiag()
            if M and hardness_mode == "hard_negatives":
                b_qn = own
            elif M and hardness_mode == "all_negatives":
                b_qn = Everything()
            elif M and hardness_mode == "in_batch_negatives" and K:
                b_qn = _negated(own_k)
        boost = (inv_temp + hardness_strength) / inv_temp if (b_qd or b_qn) else 1.0
        parts: list[Partition]
        qd_mask: list[Sel | None] = [ids_m]
        if hcl is not None:
            beta, tau_plus = hcl
            dup = torch.zeros(B, device=dev, dtype=torch.long)
            if ids is not None:
                _, inv, cnt = torch.unique(ids, return_inverse=True, return_counts=True)
                dup = cnt[inv] - 1
            n_neg = (B - 1 - dup + M).to(dt)
            parts = [Partition(1.0, "hcl", beta, tau_plus, n_neg)]
            qd_mask.append(dg)  # HCL's accumulators see the negatives only
        elif per_dir:
            parts = [Partition(0.5), Partition(0.5)]
        else:
            parts = [Partition(1.0)]
        if gs is not None:
            qd_mask.append(gs.sel(0, 1, keep_diag=True))
        blocks = [
            Block(
                0,
                1,
                Side(0, [m for m in qd_mask if m is not None], b_qd),
                Side(1 if per_dir else 0, transposed([ids_m])) if "doc_to_query" in dirs else None,
            )
        ]
        if M:
            qn_mask: list[Sel] = [] if gs is None else [gs.sel(0, 2)]
            blocks.append(Block(0, 2, Side(0, qn_mask, b_qn)))
        for x, on, gi in (
            (0, "query_to_query" in dirs or contrast_anchors, 0),
            (1, "doc_to_doc" in dirs or contrast_positives, 1),
        ):
            if not on:
                continue
            m = [s for s in (dg, ids_m, None if gs is None else gs.sel(gi, gi)) if s is not None]
            blocks.append(Block(x, x, Side(0, m), Side(0, transposed(m)), sym=True))
        if "doc_to_doc" in dirs and M:
            blocks.append(Block(1, 2, Side(0, [own_k] if K else [])))  # a document's own hard negatives out
        return BlockObjective(full, inv_temp, needs, blocks, parts, (0, 1, None), boost, bs)

    return build
