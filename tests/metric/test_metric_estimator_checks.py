"""The supervised learner passes scikit-learn's estimator checks in full; the pair learner's
tags say it takes pairs, and the API checks run on pairs."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.utils import estimator_checks as ec
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import check_estimator

from contrastive.metric import (
    CosineSimilarityLearner,
    CosineSimilarityLearnerSupervised,
    pairs_from_labels,
)

VARIANTS = [
    dict(),
    dict(form="symmetric"),
    dict(objective="margin", solver="gd"),
    dict(form="symmetric", objective="margin", solver="gd", n_components=None),
]


@pytest.mark.parametrize(
    "params", VARIANTS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default"
)
def test_check_estimator(params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # raises on the first failing check; the only skip is array API input (not claimed)
        check_estimator(CosineSimilarityLearnerSupervised(**params))


def test_pair_learner_params_round_trip():
    learner = CosineSimilarityLearner(form="symmetric", alpha=0.5, beta=2.0)
    twin = clone(learner)
    assert twin.get_params() == learner.get_params()
    assert twin.set_params(margin=0.5).margin == 0.5


# ---------------------------------------------------------------- the pair learner


def _pairs(seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(size=(20, 3)) + 2, rng.normal(size=(20, 3)) - 2])
    labels = np.repeat([0, 1], 20)
    return pairs_from_labels(X, labels, n_pairs=60, random_state=seed)


@pytest.mark.parametrize(
    "params", VARIANTS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default"
)
def test_check_estimator_pair_learner(params):
    """check_estimator used to abort ("seems to be a Transformer, but the transformer_tags
    tag is not set"), with tags that claimed 2-D input. Its tags now say pairs (3-D), so
    scikit-learn skips its 2-D checks with a warning that names them, and raises nothing."""
    learner = CosineSimilarityLearner(**params)
    tags = get_tags(learner)
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array
    assert tags.target_tags.required and tags.transformer_tags is not None
    assert tags.estimator_type == "classifier" and not tags.classifier_tags.multi_class
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_estimator(learner)
    skips = [str(w.message) for w in seen if issubclass(w.category, SkipTestWarning)]
    assert any("three_d_array=True" in m for m in skips), skips


DATA_FREE_CHECKS = [
    ec.check_estimator_cloneable,
    ec.check_estimator_tags_renamed,
    ec.check_valid_tag_types,
    ec.check_estimator_repr,
    ec.check_no_attributes_set_in_init,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_mixin_order,
]


@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda c: c.__name__)
def test_pair_learner_api_checks_without_data(check):
    """scikit-learn's API checks that need no 2-D data, run directly."""
    check("CosineSimilarityLearner", CosineSimilarityLearner())


def test_pair_learner_api_checks_on_pairs():
    """The data-dependent API checks, on pairs: fit returns self, leaves its parameters
    alone, sets n_features_in_, refuses use before fit, reads read-only input, pickles."""
    pairs, y = _pairs()
    learner = CosineSimilarityLearner(max_iter=30)
    params = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in learner.get_params().items()}
    with pytest.raises(NotFittedError):
        learner.pair_score(pairs)
    with pytest.raises(NotFittedError):
        learner.transform(pairs[:, 0])
    ro = pairs.copy()
    ro.setflags(write=False)
    assert learner.fit(ro, list(y)) is learner
    assert learner.get_params() == params
    assert learner.n_features_in_ == 3
    public = {k for k in vars(learner) if not k.startswith("_")}
    assert public - set(params) >= {"components_", "mean_", "threshold_", "n_iter_"}
    twin = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(twin.pair_score(pairs), learner.pair_score(pairs))
    with pytest.raises(ValueError, match="features"):
        learner.pair_score(pairs[:, :, :2])
