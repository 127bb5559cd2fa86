"""Retrieval loss with in-batch and hard negatives, float64 forward and analytic gradient.

Anchors A (B, d), positives Pp (B, d), negatives Nn (M, d) ((B, K, d) flattened), candidates
C = [Pp; Nn], L = A C^T / tau; entries (i, j), j < B, j != i with ids[j] == ids[i] masked:

    row_i = logsumexp_j L_ij - L_ii,   col_j = logsumexp_{i < B} L_ij - L_jj  (j < B)
    loss_i = row_i   or   (row_i + col_i) / 2 when symmetric

With weights w, u = w (w / 2 symmetric), v = w / 2 (symmetric, else 0), R the row softmax,
K the column softmax of the B x B block, E = [I, 0]:

    D = diag(u) (R - E) + [(K - I) diag(v), 0]
    grad_A = D C / tau,  grad_C = D^T A / tau,  d/dtau = -sum_ij D_ij L_ij / tau

then through the normalisation. See docs/derivations/retrieval_loss.md.
"""

import numpy as np

from ._common import chain, logsumexp, unit


def _parts(anchors, positives, negatives, temperature, positive_ids, normalize):
    a, na = unit(anchors, normalize)
    p, npos = unit(positives, normalize)
    B, d = a.shape
    if negatives is None:
        n, nn = np.zeros((0, d)), np.zeros((0, 1))
    else:
        neg = np.asarray(negatives, dtype=np.float64).reshape(-1, d)
        n, nn = unit(neg, normalize)
    C = np.concatenate([p, n])  # (B + M, d) candidates
    L = a @ C.T / temperature
    mask = np.zeros_like(L, dtype=bool)
    if positive_ids is not None:
        ids = np.asarray(positive_ids)
        mask[:, :B] = (ids[:, None] == ids[None, :]) & ~np.eye(B, dtype=bool)
    Lm = np.where(mask, -np.inf, L)
    return a, na, p, npos, n, nn, C, L, Lm


def forward(
    anchors, positives, negatives=None, temperature=0.05, symmetric=False, positive_ids=None, normalize=True
):
    """Per-anchor losses (B,)."""
    a, _, p, _, _, _, _, L, Lm = _parts(anchors, positives, negatives, temperature, positive_ids, normalize)
    B = a.shape[0]
    diag = L[np.arange(B), np.arange(B)]
    row = logsumexp(Lm, 1) - diag
    if not symmetric:
        return row
    col = logsumexp(Lm[:, :B], 0) - diag
    return 0.5 * (row + col)


def grad(
    anchors,
    positives,
    negatives=None,
    temperature=0.05,
    symmetric=False,
    positive_ids=None,
    normalize=True,
    weights=None,
):
    """(d/d anchors, d/d positives, d/d negatives or None, d/dtau) of sum_i w_i loss_i (w = 1/B)."""
    a, na, p, npos, n, nn, C, L, Lm = _parts(
        anchors, positives, negatives, temperature, positive_ids, normalize
    )
    B = a.shape[0]
    w = np.full(B, 1.0 / B) if weights is None else np.asarray(weights, dtype=np.float64)
    u = 0.5 * w if symmetric else w
    R = np.exp(Lm - logsumexp(Lm, 1)[:, None])  # row softmax over candidates
    E = np.zeros_like(L)
    E[np.arange(B), np.arange(B)] = 1.0
    D = u[:, None] * (R - E)
    if symmetric:
        blk = Lm[:, :B]
        K = np.exp(blk - logsumexp(blk, 0)[None, :])  # column softmax over anchors
        D[:, :B] += (K - np.eye(B)) * (0.5 * w)[None, :]
    ga = D @ C / temperature
    gc = D.T @ a / temperature
    grad_temperature = -(D * L).sum() / temperature
    ga = chain(ga, a, na, normalize)
    gp = chain(gc[:B], p, npos, normalize)
    gn = None
    if negatives is not None:
        gn = chain(gc[B:], n, nn, normalize).reshape(np.shape(negatives))
    return ga, gp, gn, grad_temperature
