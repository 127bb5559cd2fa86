"""metric/supervised.py: CosineSimilarityLearnerSupervised, labels in and pairs sampled inside
``fit``: its embedding and pair scores, and its bad input. scikit-learn's estimator checks run
on it in test_metric_estimator_checks.py."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_iris
from sklearn.metrics import roc_auc_score

from contrastive.metric import CosineSimilarityLearnerSupervised, pairs_from_labels

rng = np.random.default_rng(0)
X = rng.normal(size=(30, 3))
LABELS = np.arange(30) % 2


def cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_supervised_transform_and_metric():
    X, labels = load_iris(return_X_y=True)
    learner = CosineSimilarityLearnerSupervised(form="symmetric", n_pairs=400, random_state=0).fit(X, labels)
    Z = learner.transform(X)
    assert Z.shape == (150, 4)
    pairs, y = pairs_from_labels(X, labels, 200, random_state=9)
    np.testing.assert_allclose(cos(Z[:10], Z[10:20]), learner.pair_score(np.stack([X[:10], X[10:20]], 1)))
    assert roc_auc_score(y, learner.pair_score(pairs)) > 0.85


def test_supervised_bad_input():
    with pytest.raises(ValueError, match="y holds 1 class .* pass labels of at least two classes"):
        CosineSimilarityLearnerSupervised().fit(X, np.zeros(30))
    with pytest.raises(ValueError, match="no class with two samples"):
        CosineSimilarityLearnerSupervised().fit(X[:3], [0, 1, 2])
    with pytest.raises(ValueError, match="requires y to be passed"):
        CosineSimilarityLearnerSupervised().fit(X, None)
    with pytest.raises(ValueError, match="Input X contains NaN.*Drop or impute"):
        CosineSimilarityLearnerSupervised().fit(np.where(X > 1.5, np.nan, X), LABELS)
    with pytest.raises(ValueError, match="y must be 1-D with one class label per row of X"):
        CosineSimilarityLearnerSupervised().fit(X, LABELS[:5])
    with pytest.raises(ValueError, match="n_pairs must be >= 2"):
        CosineSimilarityLearnerSupervised(n_pairs=1).fit(X, LABELS)
    with pytest.raises(TypeError, match="(?i)sparse"):
        CosineSimilarityLearnerSupervised().fit(sp.csr_matrix(X), LABELS)
