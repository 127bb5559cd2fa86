"""CosineSimilarityLearner's pair-learner API: scores, transform, thresholds, determinism."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.metrics import roc_auc_score

from contrastive.metric import CosineSimilarityLearner, CosineSimilarityLearnerSupervised, pairs_from_labels


@pytest.fixture(scope="module")
def iris_pairs():
    X, labels = load_iris(return_X_y=True)
    pairs, y = pairs_from_labels(X, labels, 300, random_state=0)
    test, y_test = pairs_from_labels(X, labels, 300, random_state=1)
    return pairs, y, test, y_test


@pytest.fixture(scope="module", params=["map", "symmetric"])
def fitted(request, iris_pairs):
    pairs, y, _, _ = iris_pairs
    return CosineSimilarityLearner(form=request.param).fit(pairs, y)


def cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_scores_distances_and_transform_agree(fitted, iris_pairs):
    _, _, test, _ = iris_pairs
    s = fitted.pair_score(test)
    assert s.shape == (len(test),) and np.all(np.abs(s) <= 1 + 1e-12)
    np.testing.assert_allclose(fitted.pair_distance(test), 1 - s)
    np.testing.assert_allclose(fitted.decision_function(test), s)
    # the plain cosine of the embeddings is the learned similarity
    np.testing.assert_allclose(cos(fitted.transform(test[:, 0]), fitted.transform(test[:, 1])), s, atol=1e-12)
    # and so is the A-form of seed 003 on centred points
    A = fitted.get_mahalanobis_matrix()
    x, y = test[:, 0] - fitted.mean_, test[:, 1] - fitted.mean_
    sim_a = np.einsum("bi,ij,bj->b", y, A, x) / np.sqrt(
        np.einsum("bi,ij,bj->b", x, A, x) * np.einsum("bi,ij,bj->b", y, A, y)
    )
    np.testing.assert_allclose(sim_a, s, atol=1e-10)


def test_metric_is_symmetric_psd(fitted):
    A = fitted.get_mahalanobis_matrix()
    assert A.shape == (4, 4)
    np.testing.assert_allclose(A, A.T, atol=1e-14)
    assert np.linalg.eigvalsh(A)[0] >= -1e-12


def test_score_is_roc_auc_and_the_fit_lowers_the_objective(fitted, iris_pairs):
    _, _, test, y_test = iris_pairs
    assert fitted.score(test, y_test) == pytest.approx(roc_auc_score(y_test, fitted.pair_score(test)))
    assert fitted.score(test, y_test) > 0.85
    assert fitted.loss_ < fitted.initial_loss_


@pytest.mark.parametrize("labels", [(1, -1), (1, 0), (True, False)])
def test_predict_in_the_encoding_of_fit(iris_pairs, labels):
    pairs, y, test, y_test = iris_pairs
    y_enc = np.where(y == 1, labels[0], labels[1])
    learner = CosineSimilarityLearner().fit(pairs, y_enc)
    pred = learner.predict(test)
    assert set(np.unique(pred)) <= {int(labels[0]), int(labels[1])}
    expected = np.where(learner.pair_score(test) >= learner.threshold_, int(labels[0]), int(labels[1]))
    np.testing.assert_array_equal(pred, expected)
    assert learner.score(test, np.where(y_test == 1, labels[0], labels[1])) > 0.8


def test_calibrate_threshold_strategies(fitted, iris_pairs):
    _, _, test, y_test = iris_pairs
    s, pos = fitted.pair_score(test), y_test == 1
    fitted.calibrate_threshold(test, y_test, strategy="accuracy")
    acc = np.mean((s >= fitted.threshold_) == pos)
    best = max(np.mean((s >= t) == pos) for t in np.r_[s, 2.0])  # brute force
    assert acc == pytest.approx(best)
    for min_rate in (0.5, 0.9, 0.99):
        fitted.calibrate_threshold(test, y_test, strategy="max_tpr", min_rate=min_rate)
        assert np.mean(s[~pos] < fitted.threshold_) >= min_rate
        fitted.calibrate_threshold(test, y_test, strategy="max_tnr", min_rate=min_rate)
        assert np.mean(s[pos] >= fitted.threshold_) >= min_rate
    fitted.calibrate_threshold(test, y_test, strategy="f_beta", beta=2.0)
    assert -2 < fitted.threshold_ < 2
    fitted.set_threshold(0.25)
    assert fitted.threshold_ == 0.25
    fitted.calibrate_threshold(test, y_test)  # leave it as fit left it


def test_hyperparameter_variants(iris_pairs):
    pairs, y, test, y_test = iris_pairs
    k2 = CosineSimilarityLearner(n_components=2).fit(pairs, y)
    assert k2.components_.shape == (2, 4) and k2.transform(test[:, 0]).shape == (300, 2)
    ident = CosineSimilarityLearner(init="identity", center=False, beta=1e6).fit(pairs, y)
    np.testing.assert_allclose(ident.mean_, 0)
    # a huge beta keeps M at the (scaled) identity: plain cosine
    np.testing.assert_allclose(ident.pair_score(test), cos(test[:, 0], test[:, 1]), atol=1e-4)
    M0 = np.diag([1.0, 2.0, 0.5, 1.0])
    for form in ("map", "symmetric"):
        learner = CosineSimilarityLearner(form=form, init=M0, objective="margin", solver="gd").fit(pairs, y)
        assert learner.score(test, y_test) > 0.8


def test_zero_sides_are_dropped_and_score_zero():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    labels = (X[:, 0] > 0).astype(int)
    pairs, y = pairs_from_labels(X, labels, 100, random_state=0)
    pairs[0, 0] = 0.0  # a zero side with center=False
    learner = CosineSimilarityLearner(center=False).fit(pairs, y)
    assert learner.pair_score(pairs[:1])[0] == 0.0
    assert np.isfinite(learner.components_).all()


def test_deterministic():
    X, labels = load_iris(return_X_y=True)
    a = CosineSimilarityLearnerSupervised(random_state=3).fit(X, labels)
    b = CosineSimilarityLearnerSupervised(random_state=3).fit(X, labels)
    c = CosineSimilarityLearnerSupervised(random_state=4).fit(X, labels)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.array_equal(a.components_, c.components_)
    pairs, y = pairs_from_labels(X, labels, 200, random_state=0)
    for form in ("map", "symmetric"):
        m1 = CosineSimilarityLearner(form=form).fit(pairs, y)
        m2 = clone(m1).fit(pairs, y)
        np.testing.assert_array_equal(m1.components_, m2.components_)
