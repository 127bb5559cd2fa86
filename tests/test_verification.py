import numpy as np
import pytest

from contrastive import verification as V


def test_roc_auc_matches_sklearn(rng):
    from sklearn.metrics import roc_auc_score

    s = np.round(rng.normal(size=300), 1)  # ties on purpose
    y = (rng.uniform(size=300) < 0.4).astype(int)
    assert V.roc_auc(s + y * 0.3, y) == pytest.approx(roc_auc_score(y, s + y * 0.3), abs=1e-12)


def test_eer_against_brute_force(rng):
    s = rng.normal(size=400)
    y = (rng.uniform(size=400) < 0.5).astype(int)
    s = s + y
    eer, thr = V.equal_error_rate(s, y)
    grid = np.linspace(s.min() - 1, s.max() + 1, 20001)
    far = np.array([(s[y == 0] >= g).mean() for g in grid])
    frr = np.array([(s[y == 1] < g).mean() for g in grid])
    k = np.argmin(np.abs(far - frr))
    assert eer == pytest.approx((far[k] + frr[k]) / 2, abs=0.01)


def test_calibrated_threshold_maximises_accuracy(rng):
    s = rng.normal(size=200)
    y = (s + rng.normal(size=200) * 0.5 > 0).astype(int)
    thr = V.calibrate_threshold(s, y)
    best = max(V.accuracy_at(s, y, t) for t in np.append(s, np.inf))
    assert V.accuracy_at(s, y, thr) == pytest.approx(best)


def test_labels_minus_one_and_errors():
    assert V.roc_auc([1.0, 0.0], [1, -1]) == 1.0
    with pytest.raises(ValueError, match="single class"):
        V.roc_auc([1.0, 0.0], [1, 1])
    with pytest.raises(ValueError, match="binary"):
        V.roc_auc([1.0, 0.0], [2, 0])
    with pytest.raises(ValueError, match="same length"):
        V.roc_auc([1.0], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        V.roc_auc([np.nan, 0.0], [1, 0])
