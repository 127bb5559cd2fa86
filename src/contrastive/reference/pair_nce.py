"""Pair NCE (pytorch-metric-learning's NT-Xent with class labels), float64 forward and analytic
gradient.

    L_ij = z_i . z_j / tau,  P(a) = {p != a : y_p = y_a},  N(a) = {n : y_n != y_a}
    g_a = log sum_{n in N(a)} exp L_an                      (-inf when N(a) is empty)
    loss_a = sum_{p in P(a)} -log(e^{L_ap} / (e^{L_ap} + e^{g_a})) = sum_{p in P(a)} softplus(g_a - L_ap)

With weights w (1 / #positive pairs for the mean), q_ap = sigmoid(g_a - L_ap), Q_a = sum_p q_ap:

    D_ap = -w_a q_ap (p in P(a)),   D_an = w_a Q_a exp(L_an - g_a) (n in N(a)),   D_aa = 0
    grad_Z = (D + D^T) Z / tau,   d/dtau = -sum_ij D_ij L_ij / tau

then through the normalisation. See docs/derivations/pair_nce.md.
"""

import numpy as np

from ._common import chain, logsumexp, unit


def _parts(z, labels, temperature, normalize):
    labels = np.asarray(labels)
    zn, norms = unit(z, normalize)
    N = zn.shape[0]
    L = zn @ zn.T / temperature  # L_ij
    same = labels[:, None] == labels[None, :]
    M = same & ~np.eye(N, dtype=bool)  # positives P(a)
    with np.errstate(divide="ignore"):  # log 0 = -inf for a row without negatives, as intended
        g = logsumexp(np.where(same, -np.inf, L), 1)  # g_a over the negatives N(a)
    return zn, norms, L, same, M, g


def forward(z, labels, temperature=0.07, normalize=True):
    """Per-anchor losses (N,): the sum over the anchor's positive pairs."""
    _, _, L, _, M, g = _parts(z, labels, temperature, normalize)
    X = g[:, None] - L  # g_a - L_ap
    return np.where(M, np.logaddexp(0.0, X), 0.0).sum(1)  # softplus(X)


def mean_weights(labels):
    """w_a = 1 / #(positive pairs) on every row (0 when there is none)."""
    labels = np.asarray(labels)
    P = int((labels[:, None] == labels[None, :]).sum()) - labels.shape[0]
    return np.full(labels.shape[0], 1.0 / P if P else 0.0)


def grad(z, labels, temperature=0.07, normalize=True, weights=None):
    """(d/dz, d/dtau) of sum_a w_a loss_a (w defaults to the 'mean' weights)."""
    zn, norms, L, same, M, g = _parts(z, labels, temperature, normalize)
    w = mean_weights(labels) if weights is None else np.asarray(weights, dtype=np.float64)
    X = g[:, None] - L
    q = np.where(M, np.exp(-np.logaddexp(0.0, -X)), 0.0)  # q_ap = sigmoid(g_a - L_ap)
    Q = q.sum(1)  # Q_a
    g_safe = np.where(np.isfinite(g), g, 0.0)  # rows without negatives: no D_an at all
    soft = np.where(~same, np.exp(L - g_safe[:, None]), 0.0)  # softmax over N(a)
    D = -w[:, None] * q + (w * Q)[:, None] * soft  # dL/dL_ij
    grad_z = (D + D.T) @ zn / temperature
    grad_tau = -(D * L).sum() / temperature
    return chain(grad_z, zn, norms, normalize), grad_tau
