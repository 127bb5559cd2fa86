"""The cosine similarity learner's objectives, their gradients and its solvers.

The objective is a sum over pairs of a function of the learned cosine plus a pull toward
the starting metric; its gradient is therefore a per-pair weighted sum of the cosine's
``dsim/dM`` (map form) or ``dsim/dA`` (symmetric form), which come from
:mod:`contrastive.reference.cosine_similarity` (``grad_map_weighted``,
``grad_sym_weighted``). Everything here is NumPy float64; nothing is public API.

Losses (minimised; ``P``, ``N`` = numbers of similar and dissimilar pairs, ``c_b`` the cosine):

    csml:   J = -(1/P) sum_{similar} c_b + alpha (1/N) sum_{dissimilar} c_b + beta ||W - W0||_F^2
    margin: J =  (1/P) sum_{similar} D_b^2 / 2
               + alpha (1/N) sum_{dissimilar} max(0, margin - D_b)^2 / 2 + beta ||W - W0||_F^2,
            D_b = 1 - c_b (cosine distance)

with ``W`` the map ``M`` or the matrix ``A``. The symmetric form keeps ``A`` positive definite
by eigenvalue clipping, ``P(S) = Q max(Lambda, floor) Q^T``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ..reference import cosine_similarity as ref

OBJECTIVES = ("csml", "margin")


def pair_loss(sim, similar, objective, alpha, margin):
    """Loss value and dJ/dc_b for cosines ``sim`` (B,) and a boolean mask ``similar`` (B,).

    Pairs whose cosine is not finite (a zero-norm side) contribute nothing.
    """
    ok = np.isfinite(sim)
    c = np.where(ok, sim, 0.0)
    n_pos = max(int((similar & ok).sum()), 1)
    n_neg = max(int((~similar & ok).sum()), 1)
    if objective == "csml":
        # J_b = -c_b / P (similar), alpha c_b / N (dissimilar)
        dl = np.where(similar, -1.0 / n_pos, alpha / n_neg)
        loss = dl * c
    else:
        dist = 1.0 - c
        hinge = np.maximum(margin - dist, 0.0)
        # dD/dc = -1: d(D^2/2)/dc = -D, d(max(0, m - D)^2/2)/dc = max(0, m - D)
        loss = np.where(similar, 0.5 * dist**2 / n_pos, alpha * 0.5 * hinge**2 / n_neg)
        dl = np.where(similar, -dist / n_pos, alpha * hinge / n_neg)
    dl = np.where(ok, dl, 0.0)
    return float(np.where(ok, loss, 0.0).sum()), dl


def map_loss_grad(M, x, y, similar, M0, objective, alpha, margin, beta):
    """J(M) and dJ/dM, (k, d), for pairs x, y (B, d)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = ref.sim_map(x, y, M)  # (B,)
    loss, dl = pair_loss(sim, similar, objective, alpha, margin)
    keep = dl != 0
    # dJ/dM = sum_b J'(c_b) dc_b/dM  (cosine_similarity.md, map form)  +  2 beta (M - M0)
    grad = ref.grad_map_weighted(x[keep], y[keep], M, dl[keep]) if keep.any() else np.zeros_like(M)
    diff = M - M0
    return loss + beta * float((diff * diff).sum()), grad + 2.0 * beta * diff


def project_psd(S, floor):
    """Eigenvalue clipping: the nearest (Frobenius) symmetric matrix with eigenvalues >= floor."""
    lam, Q = np.linalg.eigh((S + S.T) / 2)
    return (Q * np.maximum(lam, floor)) @ Q.T


def sym_loss_grad(A, x, y, similar, A0, objective, alpha, margin, beta):
    """J(A) and its gradient over symmetric perturbations (symmetric (d, d) matrix)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = ref.sim_sym(x, y, A)
    loss, dl = pair_loss(sim, similar, objective, alpha, margin)
    keep = dl != 0
    # entries independent: sum_b J'(c_b) dc_b/dA_ij  (cosine_similarity.md)  +  2 beta (A - A0)
    G = ref.grad_sym_weighted(x[keep], y[keep], A, dl[keep]) if keep.any() else np.zeros_like(A)
    diff = A - A0
    G = G + 2.0 * beta * diff
    # along a symmetric direction E, dJ = <G, E> = <(G + G^T)/2, E>
    return loss + beta * float((diff * diff).sum()), (G + G.T) / 2


def pack(S):
    """Upper triangle of a symmetric (d, d), row-major, (d(d+1)/2,)."""
    return S[np.triu_indices(S.shape[0])]


def unpack(s, d):
    S = np.zeros((d, d))
    S[np.triu_indices(d)] = s
    return S + S.T - np.diag(np.diag(S))


def tie(H):
    """Gradient over symmetric matrices -> gradient over the packed upper triangle: an
    off-diagonal parameter moves A_ij and A_ji (H_ij + H_ji), a diagonal one A_ii (H_ii)."""
    return pack(H + H.T - np.diag(np.diag(H)))


def clipped_chain(S, H, floor):
    """A = P(S) and the gradient over S of J(P(S)) from H = dJ/dA (symmetric).

    P(S) = Q phi(Lambda) Q^T with phi = max(., floor); its derivative (Daleckii-Krein) is
    dA = Q (Gamma o (Q^T dS Q)) Q^T, Gamma_ij = (phi_i - phi_j) / (lam_i - lam_j), phi'(lam_i)
    on ties. So dJ/dS = Q (Gamma o (Q^T H Q)) Q^T; with nothing clipped it is H itself.
    An eigenvalue below the floor gets no gradient: the learner restarts from S = P(S) so
    that one the objective wants larger can grow again.
    """
    lam, Q = np.linalg.eigh(S)
    phi = np.maximum(lam, floor)
    A = (Q * phi) @ Q.T
    if H is None:
        return A, None
    dlam = lam[:, None] - lam[None, :]
    dphi = phi[:, None] - phi[None, :]
    tied = np.abs(dlam) <= 1e-12 * max(1.0, float(np.abs(lam).max()))
    # one-sided derivative: an eigenvalue sitting on the floor may still grow
    slope = (lam >= floor * (1 - 1e-9)).astype(float)
    gamma = np.where(tied, slope[:, None] * np.ones_like(dlam), dphi / np.where(tied, 1.0, dlam))
    return A, Q @ (gamma * (Q.T @ H @ Q)) @ Q.T


def lbfgs(fun_grad, p0, max_iter, tol):
    """scipy's L-BFGS-B on a flat parameter vector; returns (p, n_iter, converged)."""
    res = minimize(
        fun_grad,
        p0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "ftol": float(tol), "gtol": float(tol) * 1e-2},
    )
    return res.x, int(res.nit), bool(res.success)


def projected_gradient(fun_grad, p0, project, max_iter, tol):
    """Projected gradient descent with Barzilai-Borwein steps and Armijo backtracking along
    the projection arc, p <- project(p - t g). Returns (p, n_iter, converged)."""
    p = project(p0)
    f, g = fun_grad(p)
    gnorm = float(np.linalg.norm(g))
    step = 1.0 / gnorm if gnorm > 0 else 1.0
    for it in range(1, int(max_iter) + 1):
        t = step
        for _ in range(40):
            p_new = project(p - t * g)
            f_new, g_new = fun_grad(p_new)
            s = p_new - p
            # Armijo along the arc: f(p+) <= f(p) + 1e-4 <g, p+ - p>
            if f_new <= f + 1e-4 * float((g * s).sum()):
                break
            t *= 0.5
        else:
            return p, it, True  # no decrease possible at machine precision
        yv = g_new - g
        sy = float((s * yv).sum())
        step = float((s * s).sum()) / sy if sy > 0 else 2.0 * t
        converged = abs(f - f_new) <= tol * max(1.0, abs(f), abs(f_new))
        p, f, g = p_new, f_new, g_new
        if converged:
            return p, it, True
    return p, int(max_iter), False
