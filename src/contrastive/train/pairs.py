"""Pairs for siamese training and verification: from class labels, or, as in DrLIM, from
each sample's k nearest neighbours in input space (no labels needed).

A pair set is ``(i, j, y)``: index arrays ``i``, ``j`` of shape ``(P,)`` and labels ``y`` in
[0, 1] (1 = similar). Everything is seeded and returns NumPy arrays.
"""

from __future__ import annotations

import numpy as np

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_count(name: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be a positive int, got {k!r}")
    return int(k)


def label_pairs(labels, pairs_per_sample: int = 2, seed: int = 0) -> Pairs:
    """Balanced similar (same class, ``y = 1``) and dissimilar (``y = 0``) pairs from class
    labels: ``pairs_per_sample * n`` pairs, half of each kind, seeded. The sampling is
    :func:`contrastive.metric.pairs_from_labels`'s, shared by the siamese recipe.

    Args:
        labels: class labels, shape ``(n,)``.
        pairs_per_sample: pairs per sample on average.
        seed: random seed.

    Returns:
        ``(i, j, y)``, each of shape ``(pairs_per_sample * n,)``.

    Raises:
        ValueError: labels not 1-D, a single class, no class with two members, bad counts.

    Examples:
        >>> i, j, y = label_pairs([0, 0, 1, 1], pairs_per_sample=2)
        >>> len(i), int(y.sum())
        (8, 4)
    """
    from ..metric import pair_indices_from_labels

    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size < 2:
        raise ValueError(f"labels must be 1-D with at least 2 entries, got shape {labels.shape}")
    n_pairs = max(2, _check_count("pairs_per_sample", pairs_per_sample) * labels.size)
    idx, y = pair_indices_from_labels(labels, n_pairs, random_state=seed)
    return idx[:, 0], idx[:, 1], (y == 1).astype(np.float64)


def neighbour_pairs(
    X, k: int = 5, neg_per_sample: int = 5, soft: bool = False, seed: int = 0, sigma: float | None = None
) -> Pairs:
    """DrLIM's unsupervised pairs: each sample with its ``k`` nearest neighbours in input space
    is similar; samples outside that neighbourhood are dissimilar.

    With ``soft=True`` the labels are ``y = exp(-||x_i - x_j||^2 / (2 sigma^2))`` for the
    neighbour pairs (``sigma`` defaults to the median neighbour distance) and 0 otherwise.

    Args:
        X: inputs, shape ``(n, ...)`` (flattened to ``(n, D)``).
        k: neighbours per sample (similar pairs).
        neg_per_sample: random non-neighbours per sample (dissimilar pairs).
        soft: soft labels for the similar pairs.
        seed: random seed.
        sigma: bandwidth for soft labels.

    Returns:
        ``(i, j, y)`` with ``n * (k + neg_per_sample)`` pairs.

    Examples:
        >>> import numpy as np
        >>> X = np.array([[0.0], [0.1], [5.0], [5.1]])
        >>> i, j, y = neighbour_pairs(X, k=1, neg_per_sample=1)
        >>> [(int(a), int(b)) for a, b, s in zip(i, j, y) if s == 1]
        [(0, 1), (1, 0), (2, 3), (3, 2)]
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim < 2:
        raise ValueError(f"X must have shape (n, ...) with one row per sample, got {X.shape}")
    X = X.reshape(len(X), -1)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or Inf; clean the inputs first")
    n = len(X)
    k = _check_count("k", k)
    neg_per_sample = _check_count("neg_per_sample", neg_per_sample)
    if k + 1 >= n:
        raise ValueError(f"k = {k} neighbours needs at least k + 2 samples, got n = {n}")
    sq = (X * X).sum(1)
    I, J, Y = [], [], []
    rng = np.random.default_rng(seed)
    nbr_d = []
    for start in range(0, n, 1024):  # blocks of rows: O(1024 n) memory
        D = sq[start : start + 1024, None] + sq[None, :] - 2 * X[start : start + 1024] @ X.T
        np.maximum(D, 0, out=D)
        for r, row in enumerate(D):
            i = start + r
            row[i] = np.inf
            nbrs = np.argpartition(row, k)[:k]
            nbrs = nbrs[np.argsort(row[nbrs], kind="stable")]
            far = np.setdiff1d(np.arange(n), np.append(nbrs, i), assume_unique=False)
            negs = rng.choice(far, size=neg_per_sample, replace=far.size < neg_per_sample)
            I += [i] * (k + neg_per_sample)
            J += list(nbrs) + list(negs)
            nbr_d += list(row[nbrs]) + [np.nan] * neg_per_sample
            Y += [1.0] * k + [0.0] * neg_per_sample
    I, J, Y, nbr_d = map(np.asarray, (I, J, Y, nbr_d))
    if soft:
        pos = Y == 1
        s = float(np.sqrt(np.median(nbr_d[pos]))) if sigma is None else float(sigma)
        if not s > 0:
            raise ValueError(
                "sigma must be positive (duplicate inputs give a zero median distance; pass sigma)"
            )
        Y = np.where(pos, np.exp(-np.where(pos, nbr_d, 0) / (2 * s * s)), 0.0)
    return I, J, Y
