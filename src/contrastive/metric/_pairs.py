"""Pairs from class labels: balanced, seeded sampling of similar and dissimilar pairs."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state


def pair_indices_from_labels(labels, n_pairs, random_state=None):
    """Sample ``n_pairs`` index pairs, half similar (same label) and half dissimilar.

    Similar pairs: a first point drawn uniformly among the points whose class has at least
    two members, a second drawn uniformly among the *other* members of its class.
    Dissimilar pairs: a first point drawn uniformly, a second uniformly among the points of
    other classes. Sampling is with replacement (a pair may repeat).

    Args:
        labels: class labels, shape ``(n_samples,)``.
        n_pairs: total number of pairs, at least 2 (``n_pairs // 2`` similar).
        random_state: seed, ``np.random.RandomState`` or None.

    Returns:
        ``(idx, pair_labels)``: indices ``(n_pairs, 2)`` and labels ``(n_pairs,)`` in
        {+1 (similar), -1 (dissimilar)}.

    Raises:
        ValueError: fewer than two classes, or no class with two members.
    """
    rng = check_random_state(random_state)
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"y holds 1 class ({classes[0]!r}) but dissimilar pairs need two; "
            f"pass labels of at least two classes"
        )
    if counts.max() < 2:
        raise ValueError(
            "y has no class with two samples, so no similar pair can be formed; "
            "pass at least two samples of some class"
        )
    order = np.argsort(inverse, kind="stable")  # points grouped by class
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first slot of each class
    rank = np.empty(len(labels), dtype=np.int64)  # slot of each point in order
    rank[order] = np.arange(len(labels))
    n_pos = n_pairs // 2
    n_neg = n_pairs - n_pos

    eligible = np.flatnonzero(counts[inverse] >= 2)
    i = eligible[rng.randint(len(eligible), size=n_pos)]
    c = inverse[i]
    r = rng.randint(counts[c] - 1)  # one of the other members
    r = r + (r >= rank[i] - start[c])  # skip i itself
    j = order[start[c] + r]

    i2 = rng.randint(len(labels), size=n_neg)
    c2 = inverse[i2]
    r2 = rng.randint(len(labels) - counts[c2])  # outside the block of class c2
    r2 = r2 + counts[c2] * (r2 >= start[c2])
    j2 = order[r2]

    idx = np.concatenate([np.stack([i, j], 1), np.stack([i2, j2], 1)])
    pair_labels = np.concatenate([np.ones(n_pos, dtype=np.int64), -np.ones(n_neg, dtype=np.int64)])
    return idx, pair_labels


def pairs_from_labels(X, y, n_pairs, random_state=None):
    """Balanced similar/dissimilar pairs of rows of ``X`` sampled from class labels ``y``.

    Args:
        X: points, shape ``(n_samples, n_features)``.
        y: class labels, shape ``(n_samples,)``.
        n_pairs: number of pairs (half similar, half dissimilar).
        random_state: seed for the sampling.

    Returns:
        ``(pairs, pair_labels)``: ``(n_pairs, 2, n_features)`` and ``(n_pairs,)`` in {+1, -1}.

    Examples:
        >>> import numpy as np
        >>> from contrastive.metric import pairs_from_labels
        >>> X, y = np.arange(12.0).reshape(6, 2), np.array([0, 0, 0, 1, 1, 1])
        >>> pairs, pair_y = pairs_from_labels(X, y, n_pairs=4, random_state=0)
        >>> pairs.shape, pair_y.tolist()
        ((4, 2, 2), [1, 1, -1, -1])
    """
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(
            f"X must be (n_samples, n_features) with one label per row in y, got X of shape "
            f"{X.shape} and {len(y)} labels"
        )
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 2:
        raise ValueError(f"n_pairs must be an int >= 2, got {n_pairs!r}")
    idx, pair_labels = pair_indices_from_labels(y, int(n_pairs), random_state)
    return X[idx], pair_labels
