"""Cosine similarity under a learned map M or a learned symmetric matrix A (CSML, Nguyen and
Bai 2010); the derivation, with the errata below, is docs/derivations/cosine_similarity.md.

Map form, v = M x, w = M y, n = v.v, m = w.w, l = v.w:

    sim(x, y, M) = l / sqrt(n m)
    dsim/dM_ij = [(x_j w_i + v_i y_j) n m - l (x_j v_i m + n y_j w_i)] / (n m)^(3/2)

Symmetric form, n = x^T A x, m = y^T A y, l = y^T A x (the original derivation's first display lacks its
"=", and the second line of its dsim/dA_ij derivation has a wrong denominator; its last
line, used here, is right):

    sim(x, y, A) = l / sqrt(n m)
    dsim/dA_ij (entries independent) = (2 y_i x_j n m - l m x_i x_j - l n y_i y_j) / (2 (n m)^(3/2))
    tied, off-diagonal (A_ij = A_ji one parameter):
        ((y_i x_j + y_j x_i) n m - l m x_i x_j - l n y_i y_j) / (n m)^(3/2)
    tied, diagonal: the independent-entry form at i = j.

x^T A x must stay positive: a merely symmetric A can leave the PSD cone, so learners
project it (eigenvalue clipping) or use A = M^T M. See docs/derivations/cosine_similarity.md.
"""

import numpy as np


def sim_map(x, y, M):
    """sim(x, y, M) for batches of pairs: x, y (B, d), M (k, d) -> (B,)."""
    x, y, M = (np.asarray(a, dtype=np.float64) for a in (x, y, M))
    v, w = x @ M.T, y @ M.T  # v = Mx, w = My
    n, m, l = (v * v).sum(1), (w * w).sum(1), (v * w).sum(1)
    return l / np.sqrt(n * m)


def grad_map(x, y, M):
    """dsim_b/dM summed over the batch, (k, d), by the derivation's last formula, element by element
    in vectorised form."""
    x, y, M = (np.asarray(a, dtype=np.float64) for a in (x, y, M))
    v, w = x @ M.T, y @ M.T
    n, m, l = (v * v).sum(1), (w * w).sum(1), (v * w).sum(1)
    # [(x_j w_i + v_i y_j) n m - l (x_j v_i m + n y_j w_i)] / (n m)^(3/2), index b over pairs
    num = (np.einsum("bj,bi->bij", x, w) + np.einsum("bi,bj->bij", v, y)) * (n * m)[:, None, None]
    num -= l[:, None, None] * (
        np.einsum("bj,bi->bij", x, v) * m[:, None, None] + n[:, None, None] * np.einsum("bj,bi->bij", y, w)
    )
    return (num / ((n * m) ** 1.5)[:, None, None]).sum(0)


def sim_sym(x, y, A):
    """sim(x, y, A) = y^T A x / sqrt(x^T A x  y^T A y): x, y (B, d), A (d, d) -> (B,)."""
    x, y, A = (np.asarray(a, dtype=np.float64) for a in (x, y, A))
    n = np.einsum("bi,ij,bj->b", x, A, x, optimize=True)
    m = np.einsum("bi,ij,bj->b", y, A, y, optimize=True)
    l = np.einsum("bi,ij,bj->b", y, A, x, optimize=True)
    return l / np.sqrt(n * m)


def _nml(x, y, A):
    x, y, A = (np.asarray(a, dtype=np.float64) for a in (x, y, A))
    n = np.einsum("bi,ij,bj->b", x, A, x, optimize=True)
    m = np.einsum("bi,ij,bj->b", y, A, y, optimize=True)
    l = np.einsum("bi,ij,bj->b", y, A, x, optimize=True)
    return x, y, n, m, l


def grad_sym_untied(x, y, A):
    """dsim/dA_ij treating every entry as independent, summed over the batch, (d, d):
    (2 y_i x_j n m - l m x_i x_j - l n y_i y_j) / (2 (n m)^(3/2))."""
    x, y, n, m, l = _nml(x, y, A)
    nm = (n * m)[:, None, None]
    num = (
        2 * np.einsum("bi,bj->bij", y, x) * nm
        - (l * m)[:, None, None] * np.einsum("bi,bj->bij", x, x)
        - (l * n)[:, None, None] * np.einsum("bi,bj->bij", y, y)
    )
    return (num / (2 * nm**1.5)).sum(0)


def grad_sym_tied(x, y, A):
    """The tied gradient on the d(d+1)/2 upper-triangular parameters, as a (d, d)
    upper-triangular matrix: off-diagonal ((y_i x_j + y_j x_i) nm - lm x_i x_j - ln y_i y_j)
    / (nm)^(3/2); diagonal (2 y_i x_i nm - lm x_i^2 - ln y_i^2) / (2 (nm)^(3/2))."""
    x, y, n, m, l = _nml(x, y, A)
    nm = (n * m)[:, None, None]
    yx = np.einsum("bi,bj->bij", y, x)
    xx = np.einsum("bi,bj->bij", x, x)
    yy = np.einsum("bi,bj->bij", y, y)
    off = (
        (yx + yx.transpose(0, 2, 1)) * nm - (l * m)[:, None, None] * xx - (l * n)[:, None, None] * yy
    ) / nm**1.5
    diag = (2 * yx * nm - (l * m)[:, None, None] * xx - (l * n)[:, None, None] * yy) / (2 * nm**1.5)
    d = x.shape[1]
    out = np.where(np.eye(d, dtype=bool), diag, off).sum(0)
    return np.triu(out)


# Per-pair weighted sums, for learners whose objective is sum_b h(sim_b): its gradient is
# sum_b h'(sim_b) dsim_b/dM. Same formulas as above, factored into rank-one products so a
# batch costs two (B, k) x (B, d) products instead of a (B, k, d) array.


def grad_map_weighted(x, y, M, weights):
    """sum_b weights_b dsim_b/dM, (k, d): x, y (B, d), M (k, d), weights (B,).

    With r = sqrt(n m), the derivation's last formula splits into a term in x_j and one in y_j.
    """
    x, y, M, c = (np.asarray(a, dtype=np.float64) for a in (x, y, M, weights))
    v, w = x @ M.T, y @ M.T  # v = Mx, w = My, (B, k)
    n, m, l = (v * v).sum(1), (w * w).sum(1), (v * w).sum(1)
    r = np.sqrt(n * m)
    # [(x_j w_i + v_i y_j) n m - l (x_j v_i m + n y_j w_i)] / (n m)^(3/2)
    #   = x_j (w_i - l v_i / n) / r + y_j (v_i - l w_i / m) / r
    a = (c / r)[:, None] * (w - (l / n)[:, None] * v)  # (B, k), coefficient of x_j
    b = (c / r)[:, None] * (v - (l / m)[:, None] * w)  # (B, k), coefficient of y_j
    return a.T @ x + b.T @ y


def grad_sym_weighted(x, y, A, weights, tied=False):
    """sum_b weights_b dsim_b/dA, (d, d): x, y (B, d), A (d, d) symmetric, weights (B,).

    ``tied=False``: every entry independent (as :func:`grad_sym_untied`); ``tied=True``: the
    d(d+1)/2 upper-triangular parameters (as :func:`grad_sym_tied`), upper-triangular output.
    """
    x, y, n, m, l = _nml(x, y, A)
    c = np.asarray(weights, dtype=np.float64)
    r = np.sqrt(n * m)
    # (2 y_i x_j n m - l m x_i x_j - l n y_i y_j) / (2 (n m)^(3/2))
    #   = y_i x_j / r - l x_i x_j / (2 n r) - l y_i y_j / (2 m r)
    G = ((c / r)[:, None] * y).T @ x
    G -= ((c * l / (2 * n * r))[:, None] * x).T @ x
    G -= ((c * l / (2 * m * r))[:, None] * y).T @ y
    if not tied:
        return G
    # tied: off-diagonal G_ij + G_ji (the derivation's ((y_i x_j + y_j x_i) nm - ...) / (nm)^(3/2)),
    # diagonal G_ii
    return np.triu(G + G.T - np.diag(np.diag(G)))
