"""Cosine similarity under a map M or a symmetric matrix A (seed 003), analytic backward.

With r = sqrt(n m) the seed's element formulas factor into rank-one products:

    map:  dsim/dM_ij = x_j (w_i - l v_i / n) / r + y_j (v_i - l w_i / m) / r
    sym:  dsim/dA_ij = y_i x_j / r - l x_i x_j / (2 n r) - l y_i y_j / (2 m r)   (independent entries)
    tied (packed upper triangle): G + G^T off the diagonal, G_ii on it.
"""
import torch

from . import compute_dtype


def _packed_to_full(a: torch.Tensor, d: int) -> torch.Tensor:
    """(d(d+1)/2,) upper-triangular entries, row-major -> symmetric (d, d)."""
    iu = torch.triu_indices(d, d, device=a.device)
    A = a.new_zeros(d, d)
    A[iu[0], iu[1]] = a
    return A + A.T - torch.diag(torch.diagonal(A))


def packed_dim(k: int) -> int:
    d = int(round(((8 * k + 1) ** 0.5 - 1) / 2))
    if d * (d + 1) // 2 != k:
        raise ValueError(f"A has {k} entries, which is not d(d+1)/2 for any d; pass (d, d) or packed upper triangle")
    return d


class MapCosineFn(torch.autograd.Function):
    """sim_b = <M x_b, M y_b> / (|M x_b| |M y_b|); x, y (B, d), M (k, d) -> (B,)."""

    @staticmethod
    def forward(ctx, x, y, M):
        ct = compute_dtype(x.dtype)
        xc, yc, Mc = x.to(ct), y.to(ct), M.to(ct)
        v, w = xc @ Mc.T, yc @ Mc.T                                 # v = Mx, w = My, (B, k)
        n, m, l = (v * v).sum(1), (w * w).sum(1), (v * w).sum(1)    # (B,)
        r = torch.sqrt(n * m)
        ctx.save_for_backward(xc, yc, Mc, v, w, n, m, l, r)
        ctx.dtypes = (x.dtype, y.dtype, M.dtype)
        return l / r

    @staticmethod
    def backward(ctx, g):
        xc, yc, Mc, v, w, n, m, l, r = ctx.saved_tensors
        g = g.to(xc.dtype)
        # dsim/dv = (w - l v / n) / r, dsim/dw = (v - l w / m) / r, each weighted by g_b
        a = (g / r)[:, None] * (w - (l / n)[:, None] * v)          # (B, k)
        c = (g / r)[:, None] * (v - (l / m)[:, None] * w)          # (B, k)
        # seed: dsim/dM_ij = [(x_j w_i + v_i y_j) nm - l (x_j v_i m + n y_j w_i)] / (nm)^(3/2)
        dM = a.T @ xc + c.T @ yc if ctx.needs_input_grad[2] else None
        dx = a @ Mc if ctx.needs_input_grad[0] else None
        dy = c @ Mc if ctx.needs_input_grad[1] else None
        return tuple(None if t is None else t.to(dt) for t, dt in zip((dx, dy, dM), ctx.dtypes))


def _sym_forward(ctx, x, y, A):
    ct = compute_dtype(x.dtype)
    xc, yc, Ac = x.to(ct), y.to(ct), A.to(ct)
    Ax, Ay = xc @ Ac.T, yc @ Ac.T                                   # (A x_b), (A y_b), (B, d)
    n, m, l = (xc * Ax).sum(1), (yc * Ay).sum(1), (yc * Ax).sum(1)  # x^T A x, y^T A y, y^T A x
    r = torch.sqrt(n * m)
    ctx.save_for_backward(xc, yc, Ac, n, m, l, r)
    return l / r


def _sym_backward(ctx, g):
    """Gradients for independent entries of A (d, d), and for x and y."""
    xc, yc, Ac, n, m, l, r = ctx.saved_tensors
    g = g.to(xc.dtype)
    gy = (g / r)[:, None] * yc                                      # (B, d)
    gx = (g * l / (2 * n * r))[:, None] * xc
    gyy = (g * l / (2 * m * r))[:, None] * yc
    # (2 y_i x_j nm - lm x_i x_j - ln y_i y_j) / (2 (nm)^(3/2)) = y_i x_j / r - l x_i x_j / (2nr) - l y_i y_j / (2mr)
    dA = gy.T @ xc - gx.T @ xc - gyy.T @ yc
    # dsim/dx = (A^T y) / r - l (A + A^T) x / (2 n r); symmetric in the roles of x and y
    dx = gy @ Ac - gx @ (Ac + Ac.T)
    dy = (g / r)[:, None] * (xc @ Ac.T) - gyy @ (Ac + Ac.T)
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
        return _sym_forward(ctx, x, y, _packed_to_full(a, d))

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
