"""Verification metrics for scored pairs (higher score = more similar, y = 1 similar).

NumPy only: ROC-AUC by the Mann-Whitney rank statistic (ties count one half), the equal
error rate, and the accuracy-maximising threshold calibrated on one split and applied to
another. For distances pass ``-distance`` as the score.
"""

from __future__ import annotations

import numpy as np


def _check(scores, y) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(y).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"scores and y must have the same length, got {s.shape[0]} and {t.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or Inf")
    vals = set(np.unique(t).tolist())
    if not vals <= {0, 1, -1}:
        raise ValueError(
            f"y must hold binary labels (1 similar; 0 or -1 dissimilar), got values {sorted(vals)}"
        )
    t = (t == 1).astype(np.int64)
    if t.min() == t.max():
        raise ValueError("y holds a single class: verification metrics need similar and dissimilar pairs")
    return s, t


def roc_auc(scores, y) -> float:
    """Area under the ROC curve: P(score of a similar pair > score of a dissimilar pair).

    Examples:
        >>> roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
        0.75
    """
    s, t = _check(scores, y)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks over ties
    uniq, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = t.sum(), len(t) - t.sum()
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _rates(s, t):
    """False accept and false reject rates for 'similar iff score >= threshold', each
    candidate threshold (the distinct scores, plus +inf)."""
    thr = np.append(np.unique(s), np.inf)
    pos, neg = np.sort(s[t == 1]), np.sort(s[t == 0])
    frr = np.searchsorted(pos, thr, side="left") / len(pos)  # similar rejected
    far = 1.0 - np.searchsorted(neg, thr, side="left") / len(neg)  # dissimilar accepted
    return thr, far, frr


def equal_error_rate(scores, y) -> tuple[float, float]:
    """The equal error rate (where false accepts equal false rejects) and its threshold,
    interpolated between the two neighbouring thresholds.

    Examples:
        >>> round(equal_error_rate([0.9, 0.8, 0.7, 0.1], [1, 1, 0, 0])[0], 6)
        0.0
    """
    s, t = _check(scores, y)
    thr, far, frr = _rates(s, t)
    diff = far - frr  # decreasing in the threshold
    k = int(np.argmax(diff <= 0))
    if k == 0 or diff[k] == 0:
        return float((far[k] + frr[k]) / 2), float(thr[k])
    a = diff[k - 1] / (diff[k - 1] - diff[k])
    eer = far[k - 1] + a * (far[k] - far[k - 1])
    hi = thr[k] if np.isfinite(thr[k]) else thr[k - 1]
    return float(eer), float(thr[k - 1] + a * (hi - thr[k - 1]))


def calibrate_threshold(scores, y) -> float:
    """The threshold that maximises accuracy of 'similar iff score >= threshold' (midpoint
    between neighbouring scores).

    Examples:
        >>> calibrate_threshold([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
        0.55
    """
    s, t = _check(scores, y)
    thr, far, frr = _rates(s, t)
    n_pos, n_neg = t.sum(), len(t) - t.sum()
    acc = ((1 - frr) * n_pos + (1 - far) * n_neg) / len(t)
    k = int(np.argmax(acc))
    if k == 0:
        return float(thr[0] - 1.0)
    hi = thr[k] if np.isfinite(thr[k]) else thr[k - 1] + 1.0
    return float((thr[k - 1] + hi) / 2)


def accuracy_at(scores, y, threshold: float) -> float:
    """Accuracy of 'similar iff score >= threshold'."""
    s, t = _check(scores, y)
    return float(((s >= threshold).astype(np.int64) == t).mean())


def verification_report(cal_scores, cal_y, test_scores, test_y) -> dict[str, float]:
    """ROC-AUC and EER on the test pairs, and accuracy there at the threshold calibrated on
    the calibration pairs.

    Examples:
        >>> r = verification_report([0.9, 0.1], [1, 0], [0.8, 0.2, 0.6, 0.4], [1, 0, 1, 0])
        >>> r["roc_auc"], r["accuracy"]
        (1.0, 1.0)
    """
    thr = calibrate_threshold(cal_scores, cal_y)
    eer, _ = equal_error_rate(test_scores, test_y)
    return {
        "roc_auc": roc_auc(test_scores, test_y),
        "eer": eer,
        "threshold": thr,
        "accuracy": accuracy_at(test_scores, test_y, thr),
    }
