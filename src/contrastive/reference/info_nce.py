"""InfoNCE / NT-Xent on N = 2B unit-norm rows (SimCLR, Chen et al. 2020; van den Oord et al. 2018).

    L_ij = z_i . z_j / tau,   P_ij = exp(L_ij) / sum_k [k != i] exp(L_ik)
    loss = (1/N) sum_i -log P_{i, p(i)},   p(i) = (i + B) mod N

``exclude_self=True`` drops k = i from the denominator (SimCLR);
``exclude_self=False`` keeps it (InfoNCE as van den Oord et al.). The gradient with respect to
Z as free vectors (docs/derivations/info_nce.md) is

    grad_Z L = (G + G^T) Z / (N tau),   G_ij = P_ij - 1[j = p(i)]

(with P_ii = 0 when self is excluded). For raw embeddings u with z = u / ||u|| we chain
through the normalisation: grad_u = (I - z z^T) grad_z / ||u||. The "1/tau^2" formula in
the SimCLR note this was first derived from (docs/derivations/index.md) is not a gradient of
this loss and is not used. See docs/derivations/info_nce.md.
"""

import numpy as np


def _logits(u, temperature, exclude_self, normalize, decoupled=False):
    u = np.asarray(u, dtype=np.float64)
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    z = u / norms if normalize else u
    L = z @ z.T / temperature  # L_ij = Z_i . Z_j / tau
    if exclude_self:
        np.fill_diagonal(L, -np.inf)  # 1[k != i]
    if decoupled:  # DCL: 1[k != p(i)] in the denominator
        L[np.arange(len(L)), positives(len(L))] = -np.inf
    return u, norms, z, L


def _softmax_rows(L):
    m = L.max(axis=1, keepdims=True)
    e = np.exp(L - m)
    return e / e.sum(axis=1, keepdims=True)


def positives(N):
    """p(i) = (i + B) mod N for N = 2B."""
    if N % 2:
        raise ValueError(f"N must be even for the pairing p(i) = (i + N/2) mod N, got {N}")
    return (np.arange(N) + N // 2) % N


def forward(z, temperature=0.5, exclude_self=True, normalize=True, decoupled=False):
    """Per-row losses -log P_{i,p(i)}, shape (N,), for stacked z (N, d).

    ``decoupled=True`` (DCL, Yeh et al. 2022) leaves k = p(i) out of the denominator."""
    _, _, zn, L = _logits(z, temperature, exclude_self, normalize, decoupled)
    N = L.shape[0]
    p = positives(N)
    m = L.max(axis=1)
    lse = m + np.log(np.exp(L - m[:, None]).sum(axis=1))  # log sum_k exp(L_ik)
    return lse - (zn * zn[p]).sum(1) / temperature  # -log P_{i,p(i)}


def grad(z, temperature=0.5, exclude_self=True, normalize=True, weights=None, decoupled=False):
    """Gradient of sum_i w_i * loss_i with respect to z (N, d); w defaults to 1/N (the mean).

    Also returns the gradient with respect to the temperature. With ``decoupled`` the
    softmax P has P_{i,p(i)} = 0 and G = P - onehot(p) is otherwise unchanged.
    """
    u, norms, zn, L = _logits(z, temperature, exclude_self, normalize, decoupled)
    N = L.shape[0]
    w = np.full(N, 1.0 / N) if weights is None else np.asarray(weights, dtype=np.float64)
    P = _softmax_rows(L)  # P_ij
    G = P.copy()
    G[np.arange(N), positives(N)] -= 1.0  # G = P - onehot(p)
    WG = w[:, None] * G  # row weights (1/N for the mean)
    grad_z = (WG + WG.T) @ zn / temperature  # (G + G^T) Z / (N tau)
    finite_L = zn @ zn.T / temperature  # unmasked L (masked P_ij are 0)
    grad_temperature = -(WG * finite_L).sum() / temperature  # dL/dtau = -sum_ij w_i G_ij L_ij / tau
    if normalize:
        # grad_u = (I - z z^T) grad_z / ||u||
        grad_z = (grad_z - zn * (zn * grad_z).sum(axis=1, keepdims=True)) / norms
    return grad_z, grad_temperature


def clip_forward(a, b, temperature=0.07, normalize=True):
    """Two-tower loss: (CE over rows of S + CE over columns) / 2, S = A B^T / tau, positives on
    the diagonal. Returns the per-pair losses (N,) = (row_i + col_i) / 2."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if normalize:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    S = a @ b.T / temperature

    def lse(x, axis):
        m = x.max(axis=axis, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)

    d = np.diag(S)
    return 0.5 * ((lse(S, 1) - d) + (lse(S, 0) - d))


def clip_grad(a, b, temperature=0.07, normalize=True, weights=None):
    """Gradients (d/da, d/db) of sum_i w_i loss_i for the two-tower loss (w = 1/N: the mean).

    dloss/dS_ij = (w_i R_ij + w_j C_ij) / 2 - [i = j] w_i,
    R = row softmax of S, C = column softmax of S, S = a b^T / tau
    grad_a = dS b / tau,  grad_b = dS^T a / tau  (then through the normalisation)
    """
    a0 = np.asarray(a, dtype=np.float64)
    b0 = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a0, axis=1, keepdims=True)
    nb = np.linalg.norm(b0, axis=1, keepdims=True)
    a, b = (a0 / na, b0 / nb) if normalize else (a0, b0)
    N = a.shape[0]
    w = np.full(N, 1.0 / N) if weights is None else np.asarray(weights, dtype=np.float64)
    S = a @ b.T / temperature
    R = np.exp(S - S.max(1, keepdims=True))
    R /= R.sum(1, keepdims=True)  # row softmax
    Cc = np.exp(S - S.max(0, keepdims=True))
    Cc /= Cc.sum(0, keepdims=True)  # column softmax
    dS = 0.5 * (w[:, None] * R + w[None, :] * Cc) - np.diag(w)
    ga, gb = dS @ b / temperature, dS.T @ a / temperature
    if normalize:
        ga = (ga - a * (a * ga).sum(1, keepdims=True)) / na
        gb = (gb - b * (b * gb).sum(1, keepdims=True)) / nb
    return ga, gb
