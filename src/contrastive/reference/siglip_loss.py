"""SigLIP's sigmoid loss (Zhai et al. 2023), float64 forward and analytic gradient.

    S_ij = a_i . b_j / tau + bias,  y_ii = 1, y_ij = -1 (i != j)
    loss_i = sum_j -log sigmoid(y_ij S_ij) = sum_j softplus(-y_ij S_ij)      ('mean': / B)

With weights w, D_ij = w_i dloss_i/dS_ij = -w_i y_ij sigmoid(-y_ij S_ij):

    grad_a = D B / tau,  grad_b = D^T A / tau,
    d/dtau = -sum_ij D_ij (a_i . b_j) / tau^2,   d/dbias = sum_ij D_ij

then through the normalisation. See docs/derivations/siglip_loss.md.
"""

import numpy as np

from ._common import chain, unit


def _parts(a, b, temperature, bias, normalize):
    za, na = unit(a, normalize)
    zb, nb = unit(b, normalize)
    B = za.shape[0]
    G = za @ zb.T  # a_i . b_j
    S = G / temperature + bias
    Y = 2.0 * np.eye(B) - 1.0  # y_ij
    return za, na, zb, nb, G, S, Y


def forward(a, b, temperature=0.1, bias=-10.0, normalize=True):
    """Per-row sums (B,) of -log sigmoid(y_ij S_ij)."""
    *_, S, Y = _parts(a, b, temperature, bias, normalize)
    return np.logaddexp(0.0, -Y * S).sum(1)  # softplus(-y S)


def grad(a, b, temperature=0.1, bias=-10.0, normalize=True, weights=None):
    """(d/da, d/db, d/dtau, d/dbias) of sum_i w_i loss_i (w defaults to 1/B, the mean)."""
    za, na, zb, nb, G, S, Y = _parts(a, b, temperature, bias, normalize)
    B = za.shape[0]
    w = np.full(B, 1.0 / B) if weights is None else np.asarray(weights, dtype=np.float64)
    sig = 0.5 * (1.0 + np.tanh(0.5 * (-Y * S)))  # sigmoid(-y S), stable
    D = -w[:, None] * Y * sig
    ga = D @ zb / temperature
    gb = D.T @ za / temperature
    grad_temperature = -(D * G).sum() / temperature**2
    grad_bias = D.sum()
    return chain(ga, za, na, normalize), chain(gb, zb, nb, normalize), grad_temperature, grad_bias
