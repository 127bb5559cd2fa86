"""Supervised contrastive loss (Khosla et al. 2020, L_out), float64 forward and analytic gradient.

    L_ij = z_i . z_j / tau,  P(i) = {p != i : y_p = y_i},  n_i = |P(i)|
    loss_i = log sum_{a != i} exp L_ia - (1 / n_i) sum_{p in P(i)} L_ip     (0 when n_i = 0)

With weights w (1 / #rows with a positive for the mean), D = W (P - M / n) on rows with a
positive (P the self-excluded row softmax, M the positive mask), zero elsewhere:

    grad_Z = (D + D^T) Z / tau,   d/dtau = -sum_ij D_ij L_ij / tau

then through the normalisation. See docs/derivations/supcon_loss.md.
"""

import numpy as np

from ._common import chain, logsumexp, unit


def _parts(z, labels, temperature, normalize):
    labels = np.asarray(labels)
    zn, norms = unit(z, normalize)
    N = zn.shape[0]
    L = zn @ zn.T / temperature  # L_ij
    Lm = L.copy()
    np.fill_diagonal(Lm, -np.inf)  # a != i
    M = (labels[:, None] == labels[None, :]) & ~np.eye(N, dtype=bool)  # positives P(i)
    n = M.sum(1)
    return zn, norms, L, Lm, M, n


def forward(z, labels, temperature=0.1, normalize=True):
    """Per-row losses (N,)."""
    _, _, L, Lm, M, n = _parts(z, labels, temperature, normalize)
    lse = logsumexp(Lm, 1)
    pos = np.where(M, L, 0.0).sum(1) / np.maximum(n, 1)  # mean of L_ip over P(i)
    return np.where(n > 0, lse - pos, 0.0)


def mean_weights(labels):
    """w_i = 1 / #(rows with a positive) on those rows, 0 elsewhere."""
    labels = np.asarray(labels)
    has = ((labels[:, None] == labels[None, :]).sum(1) > 1).astype(np.float64)
    return has / max(has.sum(), 1.0)


def grad(z, labels, temperature=0.1, normalize=True, weights=None):
    """(d/dz, d/dtau) of sum_i w_i loss_i (w defaults to the 'mean' weights)."""
    zn, norms, L, Lm, M, n = _parts(z, labels, temperature, normalize)
    w = mean_weights(labels) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.where(n > 0, w, 0.0)
    P = np.exp(Lm - logsumexp(Lm, 1)[:, None])  # self-excluded softmax
    D = w[:, None] * (P - M / np.maximum(n, 1)[:, None])  # D = W (P - M / n)
    grad_z = (D + D.T) @ zn / temperature
    grad_temperature = -(D * L).sum() / temperature
    return chain(grad_z, zn, norms, normalize), grad_temperature
