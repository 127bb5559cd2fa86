"""Matryoshka losses (Kusupati et al. 2022) on the engine, every prefix in one walk over the tiles.

With prefix dimensions d_1 < ... < d_K (weights mu_k) the loss is sum_k mu_k L(Z^(k)), where
z^(k)_i = x_i[:d_k] / |x_i[:d_k]| is row i's prefix normalised on its own (sentence-transformers'
MatryoshkaLoss). The engine hands the objective unit rows x = u / |u| (its usual normalisation;
every prefix loss is invariant to a row's scale, so nothing changes but the range is safe).

One tile, every prefix (:class:`PrefixTile`). Column chunks C_k = [d_{k-1}, d_k) of the same tile:

    S_k = S_{k-1} + X_I[:, C_k] Y_J[:, C_k]^T            (one full-width GEMM's worth in all)
    s^(k)_ij = S_k,ij rx^(k)_i ry^(k)_j                   (rank-1 rescaling, rx = 1 / |x_i[:d_k]|)

Pass 2: with H^(k) = d(loss)/d(logit^(k)) on the tile and Hh^(k) = diag(rx^(k)) H^(k) diag(ry^(k)),

    g_X[:, C_c] += (sum_{k >= c} Hh^(k)) Y_J[:, C_c]      (again one GEMM's worth)
    rho^(k)_i += sum_j H^(k)_ij cos^(k)_ij = rowsum(Hh^(k) * S_k)   (elementwise, no GEMM)

and after the walk the normalisation chain of each prefix, radial part
g_X[i, :d_k] -= rx^(k)_i^2 rho^(k)_i x_i[:d_k], everything times inv_temp;
d/d(inv_temp) of the tiles' part is sum_i rho_i (halved for a symmetric S, whose rho counts
both directions).

This module: the prefixes, the prefix rows and views, the prefix-aware tile and the two tile
passes of every prefix (:func:`joint_lse`, :func:`joint_grad`, rectangular or symmetric). The
objectives on top of them: :mod:`.matryoshka_objectives`. Memory O(K N + N d + K tile^2).
Derivation: docs/derivations/matryoshka.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .common import Blocks, Rows, row_slices
from .engine import present
from .tiles import TileBuffers, TileMask, online_update, walk

if TYPE_CHECKING:
    from .matryoshka_objectives import Joint


class Prefixes:
    """The prefix dimensions, ascending and distinct, with their weights (a repeated dimension's
    weights add up: w_1 L + w_2 L = (w_1 + w_2) L, as sentence-transformers counts it), and the
    column chunks [d_{k-1}, d_k).

    Examples:
        >>> p = Prefixes((8, 2, 4, 2), (1.0, 0.5, 1.0, 2.0))
        >>> p.dims, p.weights, p.bounds
        ((2, 4, 8), (2.5, 1.0, 1.0), [(0, 2), (2, 4), (4, 8)])
    """

    def __init__(self, dims: Sequence[int], weights: Sequence[float] | None = None):
        ws = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        merged: dict[int, float] = {}
        for d, w in zip(dims, ws):
            merged[int(d)] = merged.get(int(d), 0.0) + w
        self.dims = tuple(sorted(merged))
        self.weights = tuple(merged[d] for d in self.dims)
        self.bounds = [(0 if k == 0 else self.dims[k - 1], d) for k, d in enumerate(self.dims)]

    def __len__(self) -> int:
        return len(self.dims)


def prefix_norms(x: Blocks, bounds: Sequence[tuple[int, int]]) -> torch.Tensor:
    """|x_i[:d_k]| for every prefix, ``(K, N)``, ``ROWS`` rows at a time (x: the unit rows)."""
    out = x.new_empty(len(bounds), x.shape[0])
    for s in row_slices(x.shape[0]):
        xb = x[s]  # (rows, D)
        acc = torch.zeros(xb.shape[0], dtype=xb.dtype, device=xb.device)
        for k, (c0, c1) in enumerate(bounds):
            acc += torch.sum(xb[:, c0:c1] * xb[:, c0:c1], 1)  # |x_i[:d_k]|^2, cumulative
            out[k, s] = acc.sqrt()
    return out


def prefix_floor(dtype: torch.dtype, width: int) -> float:
    """The smallest prefix norm of a unit row that the tiles resolve: below it the prefix's
    products underflow the dtype (sqrt(tiny D / eps): 9e-15 for float32 at D = 768)."""
    fi = torch.finfo(dtype)
    return math.sqrt(fi.tiny * width / fi.eps)


class PrefixRows:
    """An input's unit rows ``x`` (the engine's :class:`~.common.Rows`) and ``inv`` ``(K, N)``,
    1 / |x_i[:d_k]| for every prefix; ``index`` is the input's position in the objective."""

    def __init__(self, x: Blocks, prefixes: Prefixes, index: int):
        self.x, self.prefixes, self.index = x, prefixes, index
        self.inv = prefix_norms(x, prefixes.bounds).reciprocal_()  # (K, N)

    def view(self, k: int, joint: Joint) -> PrefixView:
        return PrefixView(self, k, joint)

    def chain_(self, out: torch.Tensor, k: int, g: torch.Tensor) -> None:
        """out[:, :d_k] += rx (g - z (z . g)): a gradient g ``(N, d_k)`` with respect to z^(k)
        taken back to the unit rows (chain rule of z^(k) = x[:d_k] / |x[:d_k]|)."""
        view = self.view(k, None)  # type: ignore[arg-type]
        d = self.prefixes.dims[k]
        for s in row_slices(g.shape[0]):
            zb, gb = view[s], g[s]  # (rows, d_k)
            dot = torch.sum(zb * gb, 1, keepdim=True)  # z . g
            out[s, :d].add_((gb - zb * dot) * self.inv[k, s, None])


class PrefixView:
    """Prefix k of an input, normalised: ``view[i0:i1]`` is z^(k) rows, ``(i1 - i0, d_k)``,
    made on demand (what the objectives' O(N d) parts read, like :class:`~.common.Rows`)."""

    def __init__(self, family: PrefixRows, k: int, joint: Joint):
        self.family, self.k, self.joint = family, k, joint
        x = family.x
        self.dtype, self.device = x.dtype, x.device
        self.shape = torch.Size((x.shape[0], family.prefixes.dims[k]))

    def __getitem__(self, s: slice) -> torch.Tensor:
        i0, i1, _ = s.indices(self.shape[0])
        x, d, r = self.family.x, self.shape[1], self.family.inv[self.k, i0:i1, None]  # r: 1 / |x[:d]|
        if isinstance(x, Rows) and x.inv_norm is not None:  # u[:, :d] / |u| / |x[:d]|, d columns only
            return x.u[i0:i1, :d].to(self.dtype) * (x.inv_norm[i0:i1] * r)
        return x[i0:i1][:, :d] * r

    def new_zeros(self, *size: Any) -> torch.Tensor:
        return torch.zeros(*size, dtype=self.dtype, device=self.device)

    def new_empty(self, *size: Any) -> torch.Tensor:
        return torch.empty(*size, dtype=self.dtype, device=self.device)

    def new_ones(self, *size: Any) -> torch.Tensor:
        return torch.ones(*size, dtype=self.dtype, device=self.device)

    def new_full(self, size: tuple[int, ...], value: float) -> torch.Tensor:
        return torch.full(size, value, dtype=self.dtype, device=self.device)


class PrefixTile:
    """The prefix-aware tile: every prefix's logits of one tile from one GEMM's worth of chunk
    products, and (pass 2) every prefix's H folded back into the chunks in one GEMM's worth.

    Per tile: iterate :meth:`logits` (prefix k's logit tile while ``S`` holds S_k), hand each
    prefix's H to :meth:`take`, then :meth:`flush`; after the walk, :meth:`finish`.
    """

    def __init__(self, xf: PrefixRows, yf: PrefixRows, buf: TileBuffers, cols: bool):
        self.xf, self.yf, self.buf = xf, yf, buf
        self.bounds = xf.prefixes.bounds
        self.K = len(self.bounds)
        self.rho_x = xf.x.new_zeros(self.K, xf.x.shape[0])  # (K, R) sum_j Hh_ij S_ij
        self.rho_y = self.rho_x if yf is xf else yf.x.new_zeros(self.K, yf.x.shape[0] if cols else 0)
        self.cols = cols

    def logits(
        self,
        i0: int,
        i1: int,
        j0: int,
        j1: int,
        xi: torch.Tensor,
        y_j: torch.Tensor,
        shift: torch.Tensor | None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (k, L) for every prefix, ascending: L = s^(k)_IJ plus ``shift`` (``(1, 1)``) if
        given, in a buffer the next prefix overwrites. ``xi``: rows I times inv_temp, ``y_j``: rows J,
        both full width (the walk's tiles)."""
        m, n = i1 - i0, j1 - j0
        S = self.S = self.buf.get("S", m, n)
        L = self.buf.get("L", m, n)
        self.tile = (i0, i1, j0, j1)
        rx, ry = self.xf.inv, self.yf.inv
        for k, (c0, c1) in enumerate(self.bounds):
            if k == 0:
                torch.mm(xi[:, c0:c1], y_j[:, c0:c1].T, out=S)  # S_1 (inv_temp times the raw dots)
            else:
                S.addmm_(xi[:, c0:c1], y_j[:, c0:c1].T)  # S_k = S_{k-1} + chunk k
            torch.mul(S, rx[k, i0:i1, None], out=L)
            if shift is None:
                L.mul_(ry[k, None, j0:j1])
            else:
                torch.addcmul(shift, L, ry[k, None, j0:j1], out=L)  # S_k rx ry + shift
            yield k, L

    def take(self, k: int, H: torch.Tensor, diag: bool = False, row: torch.Tensor | None = None) -> None:
        """Prefix k's dS tile ``H`` (times diag(``row``) when given: a row factor the caller leaves
        to this pass instead of one of its own), called while ``S`` holds S_k: Hh^(k) =
        diag(rx) H diag(ry) is kept for :meth:`flush`, rho gets the row (and column) sums of
        Hh^(k) * S_k (not the columns on a symmetric walk's ``diag`` tile)."""
        i0, i1, j0, j1 = self.tile
        G = self.buf.get(f"G{k}", i1 - i0, j1 - j0)
        rx = self.xf.inv[k, i0:i1]
        torch.mul(H, (rx if row is None else rx * row)[:, None], out=G)
        G.mul_(self.yf.inv[k, None, j0:j1])  # Hh^(k)
        P = self.buf.get("P", i1 - i0, j1 - j0)
        torch.mul(G, self.S, out=P)  # Hh * S = inv_temp H * cos
        self.rho_x[k, i0:i1] += P.sum(1)
        if self.cols and not diag:
            self.rho_y[k, j0:j1] += P.sum(0)

    def flush(self, gx: torch.Tensor, gy: torch.Tensor | None, x_i: torch.Tensor, y_j: torch.Tensor) -> None:
        """g_X[:, C_c] += (sum_{k >= c} Hh^(k)) Y_J[:, C_c], and g_Y likewise (``None``: skip)."""
        i0, i1, j0, j1 = self.tile
        for k in reversed(range(self.K)):
            G = self.buf.get(f"G{k}", i1 - i0, j1 - j0)
            if k < self.K - 1:
                G.add_(self.buf.get(f"G{k + 1}", i1 - i0, j1 - j0))  # sum over the prefixes k' >= k
            c0, c1 = self.bounds[k]
            gx[i0:i1, c0:c1].addmm_(G, y_j[:, c0:c1])
            if gy is not None:
                gy[j0:j1, c0:c1].addmm_(G.T, x_i[:, c0:c1])

    def finish(self, gx: torch.Tensor, gy: torch.Tensor | None, inv_temp: float) -> torch.Tensor:
        """The radial part of each prefix's chain, then times inv_temp; returns
        sum_ij H_ij cos_ij over every prefix (the tiles' d/d(inv_temp), row side)."""
        _radial_(gx, self.xf, self.rho_x, inv_temp)
        if gy is not None and gy is not gx:
            _radial_(gy, self.yf, self.rho_y, inv_temp)
        gx.mul_(inv_temp)
        if gy is not None and gy is not gx:
            gy.mul_(inv_temp)
        return self.rho_x.sum() / inv_temp


def _radial_(g: torch.Tensor, fam: PrefixRows, rho: torch.Tensor, inv_temp: float) -> None:
    """g[i, C_c] -= (sum_{k >= c} rx^(k)_i^2 rho^(k)_i / inv_temp) x_i[C_c]."""
    q = rho * fam.inv.square() / inv_temp  # (K, N) rx^2 (z . g)
    Q = q.flip(0).cumsum(0).flip(0)  # Q[c] = sum_{k >= c} q[k]
    for s in row_slices(g.shape[0]):
        xb = fam.x[s]  # (rows, D)
        for c, (c0, c1) in enumerate(fam.prefixes.bounds):
            g[s, c0:c1].addcmul_(xb[:, c0:c1], Q[c, s, None], value=-1)


def joint_lse(
    xf: PrefixRows,
    yf: PrefixRows,
    inv_temp: float,
    c: float,
    mask: TileMask,
    bs: int,
    fixed: bool,
    cols: bool,
    upper: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pass 1 of every prefix: row log-sum-exps ``(K, R)`` of the unmasked logits (a symmetric
    S when ``upper``: upper tiles, column sums into the rows) and the column ones ``(K, C)``."""
    x, y = xf.x, yf.x
    K, R, C = len(xf.prefixes), x.shape[0], y.shape[0]
    buf = TileBuffers(x.dtype, x.device)
    pt = PrefixTile(xf, yf, buf, False)
    Cc = C if cols and not upper else 0
    if fixed:
        row, col = x.new_zeros(K, R), x.new_zeros(K, Cc)
        shift, ones = x.new_full((1, 1), -c), x.new_ones(bs)
        for i0, i1, j0, j1, xi, _, y_j in walk(x, y, inv_temp, bs, buf, upper):
            for k, E in pt.logits(i0, i1, j0, j1, xi, y_j, shift):
                E.exp_()  # exp(s - c), in [exp(-2c), 1]
                mask.apply(E, i0, j0, 0.0)
                row[k, i0:i1].addmv_(E, ones[: j1 - j0])
                if upper and i0 != j0:
                    row[k, j0:j1].add_(E.sum(0))  # column sums, by symmetry
                elif Cc:
                    col[k, j0:j1].add_(E.sum(0))
        return row.log_() + c, (col.log_() + c if Cc else None)
    mr, rr = x.new_full((K, R), float("-inf")), x.new_zeros(K, R)
    mc, rc = x.new_full((K, Cc), float("-inf")), x.new_zeros(K, Cc)
    for i0, i1, j0, j1, xi, _, y_j in walk(x, y, inv_temp, bs, buf, upper):
        for k, L in pt.logits(i0, i1, j0, j1, xi, y_j, None):
            mask.apply(L, i0, j0, float("-inf"))
            online_update(mr[k], rr[k], slice(i0, i1), L.amax(1), lambda s: torch.exp(L - s[:, None]).sum(1))  # noqa: B023 -- called at once
            if (upper and i0 != j0) or Cc:
                m_, r_ = (mr[k], rr[k]) if upper else (mc[k], rc[k])
                online_update(m_, r_, slice(j0, j1), L.amax(0), lambda s: torch.exp(L - s[None, :]).sum(0))  # noqa: B023 -- called at once
    return mr + rr.log(), (mc + rc.log() if Cc else None)


def joint_grad(
    xf: PrefixRows,
    yf: PrefixRows,
    inv_temp: float,
    c: float,
    mask: TileMask,
    bs: int,
    fixed: bool,
    lse_r: torch.Tensor,
    u: torch.Tensor,
    lse_c: torch.Tensor | None,
    v: torch.Tensor | None,
    need_y: bool,
    upper: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Pass 2 of every prefix, the softmax part of the gradient of sum_k sum_i u^(k)_i lse^(k)_i
    (+ the column terms v, lse_c), taken back to the unit rows and times inv_temp:
    ``(g_X (R, D), g_Y (C, D) or None, d/d(inv_temp))``. ``upper``: S symmetric (x is y), the
    weights ``u`` of :func:`.sym_tiles.sym_grad` (row softmax both ways); g_Y is then g_X."""
    x, y = xf.x, yf.x
    buf = TileBuffers(x.dtype, x.device)
    two = lse_c is not None and v is not None
    pt = PrefixTile(xf, yf, buf, need_y or upper)
    gx = x.new_zeros(x.shape)  # (R, D)
    gy = gx if upper else (y.new_zeros(y.shape) if need_y else None)  # (C, D)
    shift = None
    if fixed:
        alpha = u * torch.exp(c - lse_r)  # (K, R) u / r
        beta = present(v) * torch.exp(c - present(lse_c)) if two else None  # (K, C) v / k
        shift = x.new_full((1, 1), -c)
    for i0, i1, j0, j1, xi, x_i, y_j in walk(x, y, inv_temp, bs, buf, upper):
        diag = upper and i0 == j0
        for k, E in pt.logits(i0, i1, j0, j1, xi, y_j, shift):
            H = buf.get("H", i1 - i0, j1 - j0)
            if fixed:
                E.exp_()
                mask.apply(E, i0, j0, 0.0)
                if not upper and beta is None:  # H = diag(u / r) E, the row factor folded into take
                    pt.take(k, E, False, alpha[k, i0:i1])
                    continue
                if upper:
                    torch.mul(E, alpha[k, j0:j1], out=H)  # E diag(a_J)
                    H.addcmul_(E, alpha[k, i0:i1, None])  # + diag(a_I) E
                else:
                    torch.mul(E, alpha[k, i0:i1, None], out=H)  # diag(u / r) E
                    H.addcmul_(E, present(beta)[k, None, j0:j1])  # + E diag(v / k)
            else:
                torch.exp(E - lse_r[k, i0:i1, None], out=H)  # row softmax
                mask.apply(H, i0, j0, 0.0)
                H.mul_(u[k, i0:i1, None])
                if diag:
                    H.add_(H.T.clone())  # + (W_I P_II)^T
                elif upper or two:
                    lc, vc = (lse_r, u) if upper else (present(lse_c), present(v))
                    E.sub_(lc[k, None, j0:j1]).exp_()  # the other direction's softmax
                    mask.apply(E, i0, j0, 0.0)
                    H.addcmul_(E, vc[k, None, j0:j1])
            pt.take(k, H, diag)
        pt.flush(gx, None if diag else gy, x_i, y_j)
    d_inv = pt.finish(gx, gy, inv_temp)
    return gx, gy, (0.5 * d_inv if upper else d_inv)  # a symmetric S's rho counts both directions
