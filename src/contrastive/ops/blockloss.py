"""A general blockwise softmax objective: several logit blocks feed per-row partition functions.

The loss features of issue 25 (hardness weighting, Robinson's HCL, GIST guide masks, GTE
directions) are all of one shape. Rows i = 0..n-1 (one per loss term) each have one or more
*partitions*; a partition collects exponentials of logits from *blocks*, the tiles of
S = inv_temp X Y^T for a pair of inputs (X, Y):

* a block's **row side** feeds row i of a partition with entry (i, j) (e.g. query_to_doc);
* a rectangular block's **column side** feeds row j with entry (i, j) (doc_to_query: the same
  tiles, their column sums, as :func:`~.clip.clip_objective` does);
* a symmetric block (Y = X, :func:`~.tiles.walk` with ``upper``) visits the upper tiles once,
  its row side feeding row i with (i, j) and its column side row j with (j, i) = (i, j)
  (query_to_query, doc_to_doc, GIST's anchor-anchor and positive-positive blocks).

Each side has a mask (entries that are not candidates: self pairs, equal ids, a query's own
documents, a guide's false negatives), built per tile from O(N) vectors by the selectors of :mod:`.selectors`,
never as an N x N tensor; the row side may also boost some logits (Lan et al.'s hardness:
L_ij = s_ij (inv_temp + alpha) on the selected negatives, gradient through s_ij inv_temp only).

Pass 1 accumulates, per partition accumulator k (scale sigma_k: 1 for a softmax, 1 + beta and
beta for HCL), lse_k_i = log sum_j exp(sigma_k L_ij). Pass 2 walks the same tiles with
H_ij = sum_k coef_k_i sigma_k exp(sigma_k L_ij - lse_k_i) (from the row side, and the column
side's transpose), coef_k_i = d(sum_i w_i loss_i)/d lse_k_i, and accumulates
    g_X += inv_temp H Y_J,  g_Y += inv_temp H^T X_I,  d/d(inv_temp) += sum_ij H_ij s_ij
(the boost is a stop-gradient, so dL/ds = inv_temp everywhere). The positive logit
l_i = inv_temp x_i . y_pi(i) is a row dot product; its gradient is added in O(N d).

Every tile's logits come from one call, :func:`tile_logits` (the place a Matryoshka variant swaps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .common import rowdot
from .engine import Grads, Objective
from .gemm import tile_mm
from .hcl import Partition
from .selectors import AllButDiag, Cut, Everything, Sel, cut
from .tiles import TileBuffers, online_update, use_fixed_shift, walk


def tile_logits(xs: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The logit tile inv_temp X_I Y_J^T (``xs`` carries inv_temp): the one call site of the
    tile GEMM in this module, shapes (m, d), (n, d) -> (m, n)."""
    return tile_mm(xs, y, out)


@dataclass
class Side:
    """Which partition a block side feeds, its mask and (row side only) its boosted entries."""

    part: int
    mask: Sequence[Sel] = ()
    boost: Sel | None = None


@dataclass
class Block:
    """Tiles of inv_temp X Y^T for inputs ``x``, ``y`` (indices into the objective's inputs)."""

    x: int
    y: int
    row: Side | None
    col: Side | None = None
    sym: bool = False  # Y is X: upper tiles only, the column side is row j's entry (j, i)
    extra: dict = field(default_factory=dict)


class BlockObjective(Objective):
    """Per-row losses sum_k c_k f_k(lse_k_i, l_i) over partitions (see :mod:`.hcl`), on the
    blocks' tiles; inputs ``zs`` as full compute-dtype tensors.

    Args:
        zs: the inputs, ``(n_k, d)`` each (``None`` where absent).
        inv_temp: 1 / tau.
        needs: whether each input needs a gradient.
        blocks: the logit blocks.
        parts: the partitions (their accumulators' scales, weights, kinds).
        pos: (x, y, index): the positive logit of row i is inv_temp zs[x][i] . zs[y][index[i]].
        boost: the hardness factor (inv_temp + alpha) / inv_temp of boosted entries.
        bs: rows per tile.
    """

    def __init__(
        self,
        zs: Sequence[torch.Tensor | None],
        inv_temp: float,
        needs: Sequence[bool],
        blocks: Sequence[Block],
        parts: Sequence[Partition],
        pos: tuple[int, int, torch.Tensor | None],
        boost: float,
        bs: int,
    ):
        self.zs, self.inv_temp, self.needs, self.blocks, self.parts = list(zs), inv_temp, needs, blocks, parts
        self.bs, self.boost = bs, boost
        px, py, pidx = pos
        x = zs[px]
        assert x is not None
        self.n = x.shape[0]
        y = zs[py]
        assert y is not None
        self.pos_spec = (px, py, pidx)
        yp = y if pidx is None else y[pidx]  # (n, d) the positives in row order
        self.s_pos = rowdot(x, yp)  # (n,) s_ii
        rho = max(float(rowdot(z, z).max().sqrt()) for z in zs if z is not None and z.shape[0])
        self.c = inv_temp * boost * rho * rho  # every |L_ij| <= c
        dt = x.dtype
        self.fixed = [use_fixed_shift(max(abs(k) for k in p.scales) * self.c, dt) for p in parts]
        self._pass1()

    # -- pass 1 --------------------------------------------------------------------------
    def _pass1(self) -> None:
        dt, dev = self.zs[self.pos_spec[0]].dtype, self.zs[self.pos_spec[0]].device  # type: ignore[union-attr]
        n = self.n
        self.r = [[torch.zeros(n, dtype=dt, device=dev) for _ in p.scales] for p in self.parts]
        self.m = [
            [torch.full((n,), float("-inf"), dtype=dt, device=dev) for _ in p.scales] for p in self.parts
        ]
        for blk, tile, _, _, buf in self._tiles():
            i0, i1, j0, j1, S, diag = tile
            if blk.row is not None:
                L, c = self._side(blk.row, S, i0, i1, j0, j1, True, buf)
                self._acc(blk.row.part, L, c, slice(i0, i1), 1, buf)
            if blk.col is not None and not diag:
                L, c = self._side(blk.col, S, i0, i1, j0, j1, False, buf)
                self._acc(blk.col.part, L, c, slice(j0, j1), 0, buf)
        self.lse = []
        for k, p in enumerate(self.parts):
            out = []
            for a, sigma in enumerate(p.scales):
                shift = sigma * self.c
                if self.fixed[k]:
                    out.append(self.r[k][a].log() + shift)
                else:
                    out.append(self.m[k][a] + self.r[k][a].log())
            self.lse.append(out)
        del self.r, self.m

    def _tiles(self):
        """(block, (i0, i1, j0, j1, S tile, diagonal tile of a symmetric block)) for every tile;
        the S tile is a reused buffer, valid until the next step."""
        for blk in self.blocks:
            x, y = self.zs[blk.x], self.zs[blk.y]
            if x is None or y is None or x.shape[0] == 0 or y.shape[0] == 0:
                continue
            buf = TileBuffers(x.dtype, x.device)
            for i0, i1, j0, j1, xs, x_i, y_j in walk(x, y, self.inv_temp, self.bs, buf, upper=blk.sym):
                S = tile_logits(xs, y_j, buf.get("S", i1 - i0, j1 - j0))  # (m, n) inv_temp x y^T
                yield blk, (i0, i1, j0, j1, S, blk.sym and i0 == j0), x_i, y_j, buf

    def _side(
        self, side: Side, S: torch.Tensor, i0: int, i1: int, j0: int, j1: int, row: bool, buf: TileBuffers
    ) -> tuple[torch.Tensor, Cut | None]:
        """The side's logits (boosted where selected) and its dropped entries, tile orientation."""
        L = S
        b = side.boost if row else None
        if b is not None and self.boost != 1.0:
            L = buf.get("L", i1 - i0, j1 - j0)
            if isinstance(b, (Everything, AllButDiag)):
                torch.mul(S, self.boost, out=L)  # s (inv_temp + alpha) on the boosted set
                if isinstance(b, AllButDiag):
                    L.diagonal(i0 - j0).copy_(S.diagonal(i0 - j0))  # the positive keeps s / tau
            else:
                sel = b(i0, i1, j0, j1)
                if sel is None:
                    L = S
                else:
                    torch.addcmul(S, S, sel.to(S.dtype), value=self.boost - 1.0, out=L)
        return L, cut(side.mask, i0, i1, j0, j1)

    def _scaled(
        self, L: torch.Tensor, sigma: float, shift: torch.Tensor | float, buf: TileBuffers
    ) -> torch.Tensor:
        """sigma L - shift in the tile buffer "T" (``shift`` a scalar or a row/column vector)."""
        T = buf.get("T", *L.shape)
        if sigma == 1.0:
            torch.sub(L, shift, out=T)
        else:
            torch.mul(L, sigma, out=T)
            T.sub_(shift)
        return T

    def _acc(self, k: int, L: torch.Tensor, c: Cut | None, sl: slice, dim: int, buf: TileBuffers) -> None:
        """Add the tile's exponentials to partition k's accumulators at rows ``sl``: row sums
        (``dim=1``) or column sums (``dim=0``)."""
        for a, sigma in enumerate(self.parts[k].scales):
            if self.fixed[k]:
                T = self._scaled(L, sigma, sigma * self.c, buf).exp_()  # in [exp(-2 sigma c), 1]
                if c is not None:
                    c.zero_(T)
                self.r[k][a][sl] += T.sum(dim)
            else:
                T = self._scaled(L, sigma, 0.0, buf)
                if c is not None:
                    c.neg_inf_(T)
                online_update(self.m[k][a], self.r[k][a], sl, T.amax(dim), _expsum(T, dim))

    # -- losses and pass 2 ---------------------------------------------------------------
    def losses(self) -> torch.Tensor:
        ell = self.inv_temp * self.s_pos
        out = torch.zeros_like(ell)
        for p, lse in zip(self.parts, self.lse):
            out += p.weight * p.loss(lse, ell, self.inv_temp)
        return out

    def grad(self, w: torch.Tensor) -> Grads:
        t = self.inv_temp
        ell = t * self.s_pos
        d_ell = torch.zeros_like(ell)  # d(sum w loss)/d l_i
        d_inv = ell.new_zeros(())
        coefs = []
        for p, lse in zip(self.parts, self.lse):
            c_acc, c_ell, c_t = p.derivs(lse, ell, t, p.weight * w)
            coefs.append(c_acc)  # per accumulator: coef_k_i sigma_k
            d_ell += c_ell
            d_inv += c_t  # direct dependence on inv_temp (HCL's clamp floor)
        gs = [None if z is None or not need else torch.zeros_like(z) for z, need in zip(self.zs, self.needs)]
        for blk, tile, x_i, y_j, buf in self._tiles():
            i0, i1, j0, j1, S, diag = tile
            H = buf.get("H", i1 - i0, j1 - j0)
            H.zero_()
            if blk.row is not None:
                L, c = self._side(blk.row, S, i0, i1, j0, j1, True, buf)
                self._dlogits(H, blk.row.part, coefs, L, c, slice(i0, i1), 1, buf)
            if blk.col is not None and not diag:
                L, c = self._side(blk.col, S, i0, i1, j0, j1, False, buf)
                self._dlogits(H, blk.col.part, coefs, L, c, slice(j0, j1), 0, buf)
            HY = H @ y_j  # (m, d)
            d_inv += (x_i * HY).sum()  # sum_ij H_ij s_ij, each logit once
            if diag:
                HY.addmm_(H.T, y_j)  # a diagonal tile: the logits (i, j) and (j, i) both read z_i
            gx, gy = gs[blk.x], gs[blk.y]
            if gx is not None:
                gx[i0:i1].add_(HY, alpha=t)  # g_X += inv_temp H Y_J
            if gy is not None and not diag:
                gy[j0:j1].addmm_(H.T, x_i, alpha=t)  # g_Y += inv_temp H^T X_I
        px, py, pidx = self.pos_spec
        x, y = self.zs[px], self.zs[py]
        assert x is not None and y is not None
        gpx = gs[px]
        if gpx is not None:
            yp = y if pidx is None else y[pidx]
            gpx.add_(yp * (t * d_ell)[:, None])  # dl_i/dx_i = inv_temp y_pi(i)
        gpy = gs[py]
        if gpy is not None:
            src = x * (t * d_ell)[:, None]
            if pidx is None:
                gpy.add_(src)
            else:
                gpy.index_add_(0, pidx, src)
        d_inv += (d_ell * self.s_pos).sum()
        return gs, d_inv, None

    def _dlogits(
        self,
        H: torch.Tensor,
        k: int,
        coefs: list,
        L: torch.Tensor,
        c: Cut | None,
        sl: slice,
        dim: int,
        buf: TileBuffers,
    ) -> None:
        """H += sum_a coef_a sigma_a exp(sigma_a L - lse_a) over partition k's accumulators, the
        coefficients indexed by rows (``dim=1``) or columns (``dim=0``) of the tile."""
        for a, sigma in enumerate(self.parts[k].scales):
            coef = coefs[k][a]
            if coef is None:
                continue
            lse, cf = self.lse[k][a][sl], coef[sl]
            T = self._scaled(L, sigma, lse[:, None] if dim == 1 else lse[None, :], buf)
            if c is not None:
                # a dropped entry may sit far above the lse of the kept ones: cap it so that its
                # exp stays finite before it is zeroed (kept entries are <= 0 up to rounding)
                T.clamp_(max=1.0).exp_()
                c.zero_(T)
            else:
                T.exp_()  # the accumulator's softmax
            H.addcmul_(T, cf[:, None] if dim == 1 else cf[None, :])


def _expsum(T: torch.Tensor, dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``shift -> sum over dim of exp(T - shift)`` (``shift`` indexed by the other dimension)."""
    if dim == 1:
        return lambda s: torch.exp(T - s[:, None]).sum(1)
    return lambda s: torch.exp(T - s[None, :]).sum(0)
