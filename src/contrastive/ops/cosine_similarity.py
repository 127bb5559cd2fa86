"""Cosine similarity under a map M or a symmetric matrix A (CSML, Nguyen and Bai
2010), analytic backward (docs/derivations/cosine_similarity.md).

With r = sqrt(n m) the derivation's element formulas factor into rank-one products:

    map:  dsim/dM_ij = x_j (w_i - l v_i / n) / r + y_j (v_i - l w_i / m) / r
    sym:  dsim/dA_ij = y_i x_j / r - l x_i x_j / (2 n r) - l y_i y_j / (2 m r)   (independent entries)
    tied (packed upper triangle): G + G^T off the diagonal, G_ii on it.

The similarity is invariant to positive scalings of x, y (row by row), M and A, so the ops
compute it on copies rescaled by powers of two (:mod:`contrastive.ops.scaling`): rows of
any magnitude from the dtype's smallest normal to its largest finite value give the unit
rows' answer, where the raw products n m would underflow to 0 or overflow to inf. Gradients
with respect to the unscaled inputs are the scaled inputs' gradients times 2^-e.
The ops also check what only they see after rescaling: ``M x != 0`` (map) and
``x^T A x > 0`` (symmetric), raising ``ValueError`` with the fix.
"""

from __future__ import annotations

import torch

from . import compute_dtype
from .scaling import scaled_rows, scaled_whole, times_pow2


def packed_to_full(a: torch.Tensor, d: int) -> torch.Tensor:
    """(d(d+1)/2,) upper-triangular entries, row-major -> symmetric (d, d) (no arithmetic, so
    entries near the dtype's largest value do not overflow)."""
    iu = torch.triu_indices(d, d, device=a.device)
    A = a.new_zeros(d, d)
    A[iu[0], iu[1]] = a
    A[iu[1], iu[0]] = a
    return A


def packed_dim(k: int) -> int:
    d = int(round(((8 * k + 1) ** 0.5 - 1) / 2))
    if d * (d + 1) // 2 != k:
        raise ValueError(
            f"A has {k} entries, which is not d(d+1)/2 for any d; pass (d, d) or packed upper triangle"
        )
    return d


def check_symmetric(A: torch.Tensor) -> None:
    """Refuse a (d, d) ``A`` that is not symmetric to within sqrt(eps) of its largest entry.

    ``y^T A x / sqrt(x^T A x  y^T A y)`` is a cosine only for symmetric ``A``: the denominator
    sees the symmetric part of ``A`` alone, the numerator all of it, so an asymmetric ``A``
    gives "cosines" outside [-1, 1].
    """
    with torch.no_grad():
        Ah, _ = scaled_whole(A.detach().to(compute_dtype(A.dtype)))  # largest entry in [0.5, 1)
        asym = float((Ah - Ah.T).abs().max())
    tol = torch.finfo(A.dtype).eps ** 0.5
    if asym > tol:
        raise ValueError(
            f"A is not symmetric (max |A - A^T| is {asym:.2g} of its largest entry, more than "
            f"{tol:.1g}); the cosine y^T A x / sqrt(x^T A x y^T A y) needs A = A^T: pass "
            f"(A + A.T) / 2, or the packed upper triangle (whose tied gradient keeps A symmetric)"
        )


def _first(mask: torch.Tensor) -> int:
    return int(torch.nonzero(mask)[0, 0])


class MapCosineFn(torch.autograd.Function):
    """sim_b = <M x_b, M y_b> / (|M x_b| |M y_b|); x, y (B, d), M (k, d) -> (B,)."""

    @staticmethod
    def forward(ctx, x, y, M):
        ct = compute_dtype(x.dtype)
        (xc, ex), (yc, ey), (Mc, eM) = scaled_rows(x.to(ct)), scaled_rows(y.to(ct)), scaled_whole(M.to(ct))
        v, w = xc @ Mc.T, yc @ Mc.T  # v = Mx, w = My (scaled), (B, k)
        zero = (v == 0).all(1) | (w == 0).all(1)  # (B,)
        if bool(zero.any()):
            raise ValueError(
                f"pair {_first(zero)} maps to a zero vector (M x = 0 or M y = 0), whose direction "
                f"is undefined; remove zero inputs or change M"
            )
        (v, ev), (w, ew) = scaled_rows(v), scaled_rows(w)  # direction only: rescale again
        n, m, l = (v * v).sum(1), (w * w).sum(1), (v * w).sum(1)  # (B,), n, m in [0.25, k]
        r = torch.sqrt(n) * torch.sqrt(m)
        ctx.save_for_backward(xc, yc, Mc, v, w, n, m, l, r, ex, ey, eM, ev, ew)
        ctx.dtypes = (x.dtype, y.dtype, M.dtype)
        return l / r

    @staticmethod
    def backward(ctx, g):
        xc, yc, Mc, v, w, n, m, l, r, ex, ey, eM, ev, ew = ctx.saved_tensors
        g = g.to(xc.dtype)
        # dsim/dv = (w - l v / n) / r, dsim/dw = (v - l w / m) / r, each weighted by g_b;
        # times 2^-ev (2^-ew) for the rescaling of v (w)
        a = times_pow2((g / r)[:, None] * (w - (l / n)[:, None] * v), -ev[:, None])  # (B, k)
        c = times_pow2((g / r)[:, None] * (v - (l / m)[:, None] * w), -ew[:, None])  # (B, k)
        # seed: dsim/dM_ij = [(x_j w_i + v_i y_j) nm - l (x_j v_i m + n y_j w_i)] / (nm)^(3/2)
        # in scaled coordinates: v = M_hat x_hat, so dsim/dM_hat = a^T x_hat + c^T y_hat
        dM = None
        if ctx.needs_input_grad[2]:
            dM = times_pow2(a.T @ xc + c.T @ yc, -eM)  # (k, d)
        dx = times_pow2(a @ Mc, -ex[:, None]) if ctx.needs_input_grad[0] else None
        dy = times_pow2(c @ Mc, -ey[:, None]) if ctx.needs_input_grad[1] else None
        return tuple(None if t is None else t.to(dt) for t, dt in zip((dx, dy, dM), ctx.dtypes))


def _sym_forward(ctx, x, y, A):
    ct = compute_dtype(x.dtype)
    (xc, ex), (yc, ey), (Ac, eA) = scaled_rows(x.to(ct)), scaled_rows(y.to(ct)), scaled_whole(A.to(ct))
    Ax, Ay = xc @ Ac.T, yc @ Ac.T  # (A x_b), (A y_b), (B, d)
    n, m, l = (xc * Ax).sum(1), (yc * Ay).sum(1), (yc * Ax).sum(1)  # x^T A x, y^T A y, y^T A x
    bad = (n <= 0) | (m <= 0)
    if bool(bad.any()):
        raise ValueError(
            f"x^T A x or y^T A y is <= 0 for pair {_first(bad)}: A is not positive definite on "
            f"these inputs; project it with CosineMetric.project_psd() (eigenvalue clipping) or "
            f"learn A = M^T M through M"
        )
    r = torch.sqrt(n) * torch.sqrt(m)
    ctx.save_for_backward(xc, yc, Ac, n, m, l, r, ex, ey, eA)
    return l / r


def _sym_backward(ctx, g):
    """Gradients for independent entries of A (d, d), and for x and y."""
    xc, yc, Ac, n, m, l, r, ex, ey, eA = ctx.saved_tensors
    g = g.to(xc.dtype)
    gy = (g / r)[:, None] * yc  # (B, d)
    gx = (g * l / (2 * n * r))[:, None] * xc
    gyy = (g * l / (2 * m * r))[:, None] * yc
    # (2 y_i x_j nm - lm x_i x_j - ln y_i y_j) / (2 (nm)^(3/2)) = y_i x_j / r - l x_i x_j / (2nr) - l y_i y_j / (2mr)
    dA = times_pow2(gy.T @ xc - gx.T @ xc - gyy.T @ yc, -eA)
    # dsim/dx = (A^T y) / r - l (A + A^T) x / (2 n r); symmetric in the roles of x and y
    dx = times_pow2(gy @ Ac - gx @ (Ac + Ac.T), -ex[:, None])
    dy = times_pow2((g / r)[:, None] * (xc @ Ac.T) - gyy @ (Ac + Ac.T), -ey[:, None])
    return dx, dy, dA


class SymCosineFn(torch.autograd.Function):
    """sim_b = y^T A x / sqrt(x^T A x  y^T A y) with A (d, d), entries independent."""

    @staticmethod
    def forward(ctx, x, y, A):
        ctx.dtypes = (x.dtype, y.dtype, A.dtype)
        return _sym_forward(ctx, x, y, A)

    @staticmethod
    def backward(ctx, g):
        dx, dy, dA = _sym_backward(ctx, g)
        need = ctx.needs_input_grad
        return tuple(t.to(dt) if nd else None for t, dt, nd in zip((dx, dy, dA), ctx.dtypes, need))


class PackedSymCosineFn(torch.autograd.Function):
    """As SymCosineFn with A given by its d(d+1)/2 upper-triangular entries (tied gradient)."""

    @staticmethod
    def forward(ctx, x, y, a):
        d = x.shape[1]
        ctx.dtypes = (x.dtype, y.dtype, a.dtype)
        return _sym_forward(ctx, x, y, packed_to_full(a, d))

    @staticmethod
    def backward(ctx, g):
        dx, dy, G = _sym_backward(ctx, g)
        d = G.shape[0]
        # tied: off-diagonal ((y_i x_j + y_j x_i) nm - lm x_i x_j - ln y_i y_j) / (nm)^(3/2) = G_ij + G_ji;
        # diagonal G_ii
        tied = G + G.T - torch.diag(torch.diagonal(G))
        iu = torch.triu_indices(d, d, device=G.device)
        da = tied[iu[0], iu[1]]
        need = ctx.needs_input_grad
        return tuple(t.to(dt) if nd else None for t, dt, nd in zip((dx, dy, da), ctx.dtypes, need))
