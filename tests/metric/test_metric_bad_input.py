"""Bad input: clear TypeError/ValueError naming the argument and the fix."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from contrastive.metric import CosineSimilarityLearner, pairs_from_labels

rng = np.random.default_rng(0)
X = rng.normal(size=(30, 3))
LABELS = np.arange(30) % 2
PAIRS, Y = pairs_from_labels(X, LABELS, 40, random_state=0)


@pytest.mark.parametrize(
    "pairs,match",
    [
        (X, r"pairs must have shape \(n_pairs, 2, n_features\).*np.stack"),
        (np.zeros((40, 3, 3)), r"pairs must have shape \(n_pairs, 2, n_features\)"),
        (PAIRS[:, :, 0], r"pairs must have shape"),
        (np.zeros((0, 2, 3)), r"pairs is empty"),
    ],
)
def test_pairs_shape(pairs, match):
    with pytest.raises(ValueError, match=match):
        CosineSimilarityLearner().fit(pairs, Y[: len(pairs)] if len(pairs) else Y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_pairs_not_finite(bad):
    pairs = PAIRS.copy()
    pairs[3, 1, 2] = bad
    with pytest.raises(ValueError, match=r"pairs contains NaN or inf; drop or impute"):
        CosineSimilarityLearner().fit(pairs, Y)
    learner = CosineSimilarityLearner().fit(PAIRS, Y)
    with pytest.raises(ValueError, match="pairs contains NaN or inf"):
        learner.pair_score(pairs)


def test_pairs_types():
    with pytest.raises(TypeError, match="pairs must hold numbers"):
        CosineSimilarityLearner().fit(np.full((4, 2, 3), "a"), [1, -1, 1, -1])
    with pytest.raises(ValueError, match="Complex data not supported"):
        CosineSimilarityLearner().fit(PAIRS.astype(complex), Y)


@pytest.mark.parametrize(
    "y,match",
    [
        (
            np.where(Y == 1, 1, 2),
            r"y must hold \+1 \(similar\) and -1 \(dissimilar\), or 1 and 0, got values \[1, 2\]",
        ),
        (np.r_[Y[:-1], 0], r"got values \[-1, 0, 1\]"),
        (np.ones(40), r"y holds a single class: only similar \(1\) pairs.*add pairs of the other kind"),
        (-np.ones(40), r"y holds a single class: only dissimilar"),
        (np.zeros(40), r"single class"),
        (Y[:10], r"y must be 1-D with one label per pair, shape \(40,\)"),
        (np.r_[Y[:-1], np.nan], r"got values \[-1.0, 1.0, 'nan'\]|got values .*nan"),
    ],
)
def test_pair_labels(y, match):
    with pytest.raises(ValueError, match=match):
        CosineSimilarityLearner().fit(PAIRS, y)


def test_pair_labels_type():
    with pytest.raises(TypeError, match="y must hold numeric labels"):
        CosineSimilarityLearner().fit(PAIRS, np.where(Y == 1, "same", "diff"))


@pytest.mark.parametrize(
    "params,exc,match",
    [
        (dict(form="full"), ValueError, r"form must be one of \('map', 'symmetric'\)"),
        (dict(objective="triplet"), ValueError, "objective must be one of"),
        (dict(solver="adam"), ValueError, "solver must be one of"),
        (dict(alpha=-1.0), ValueError, "alpha must be >= 0"),
        (dict(beta=-0.1), ValueError, "beta must be >= 0"),
        (dict(margin=0.0), ValueError, "margin must be > 0"),
        (dict(margin=2.5), ValueError, "margin must be <= 2"),
        (dict(max_iter=0), ValueError, "max_iter must be >= 1"),
        (dict(max_iter=1.5), TypeError, "max_iter must be an int"),
        (dict(tol=0.0), ValueError, "tol must be > 0"),
        (dict(n_components=7), ValueError, r"n_components must be in \[1, n_features=3\]"),
        (dict(n_components=1.5), ValueError, "variance fraction in"),
        (dict(init="random"), ValueError, "init must be one of"),
        (dict(init=np.eye(4)), ValueError, r"init must be a \(k, d\) array with d = 3"),
        (dict(form="symmetric", init=-np.eye(3)), ValueError, "positive semi-definite"),
    ],
)
def test_hyperparameters(params, exc, match):
    with pytest.raises(exc, match=match):
        CosineSimilarityLearner(**params).fit(PAIRS, Y)


def test_after_fit():
    learner = CosineSimilarityLearner()
    with pytest.raises(NotFittedError):
        learner.pair_score(PAIRS)
    learner.fit(PAIRS, Y)
    with pytest.raises(ValueError, match="pairs has 2 features, but the learner was fitted with 3"):
        learner.predict(PAIRS[:, :, :2])
    with pytest.raises(ValueError, match="X has 2 features, but CosineSimilarityLearner is expecting 3"):
        learner.transform(X[:, :2])
    with pytest.raises(ValueError, match="strategy='max_tpr' needs min_rate"):
        learner.calibrate_threshold(PAIRS, Y, strategy="max_tpr")
    with pytest.raises(ValueError, match="strategy must be one of"):
        learner.calibrate_threshold(PAIRS, Y, strategy="youden")
    with pytest.raises(ValueError, match="y_valid holds a single class"):
        learner.calibrate_threshold(PAIRS, np.ones(40))


def test_pairs_from_labels_bad_input():
    with pytest.raises(ValueError, match="n_pairs must be an int >= 2"):
        pairs_from_labels(X, LABELS, 1)
    with pytest.raises(ValueError, match="one label per row in y"):
        pairs_from_labels(X, LABELS[:4], 10)
