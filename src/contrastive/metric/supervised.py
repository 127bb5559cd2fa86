"""The supervised cosine similarity learner: class labels in, pairs sampled inside ``fit``."""

from __future__ import annotations

import numpy as np
from sklearn.base import TransformerMixin

from ._base import _CosineMetricBase
from ._checks import check_number, check_points
from ._pairs import pair_indices_from_labels


class CosineSimilarityLearnerSupervised(TransformerMixin, _CosineMetricBase):
    r"""Cosine similarity metric learning from class labels (a scikit-learn transformer).

    ``fit(X, y)`` samples ``n_pairs`` balanced pairs from the class labels with
    ``random_state`` (same class = similar, see :func:`contrastive.metric.pairs_from_labels`)
    and fits :class:`CosineSimilarityLearner`'s objective on them; ``transform(X)`` embeds
    points so that the plain cosine of two embeddings is the learned similarity. All other
    parameters are :class:`CosineSimilarityLearner`'s.

    Args:
        n_pairs: number of pairs to sample; None means ``min(10 n_samples, 4000)``, and at least 20.
        random_state: seed of the pair sampling (None: not reproducible).

    Shape:
        X: ``(n_samples, n_features)``; y: ``(n_samples,)`` class labels, at least two classes.

    Examples:
        >>> from sklearn.datasets import load_iris
        >>> from contrastive.metric import CosineSimilarityLearnerSupervised
        >>> X, y = load_iris(return_X_y=True)
        >>> learner = CosineSimilarityLearnerSupervised(n_components=2, random_state=0).fit(X, y)
        >>> learner.transform(X).shape
        (150, 2)
    """

    def __init__(
        self,
        form="map",
        objective="csml",
        alpha=1.0,
        beta=None,
        margin=1.0,
        n_components=0.99,
        init="pca",
        solver="lbfgs",
        max_iter=200,
        tol=1e-6,
        center=True,
        min_eigenvalue=1e-8,
        n_pairs=None,
        random_state=None,
    ):
        self.form = form
        self.objective = objective
        self.alpha = alpha
        self.beta = beta
        self.margin = margin
        self.n_components = n_components
        self.init = init
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.center = center
        self.min_eigenvalue = min_eigenvalue
        self.n_pairs = n_pairs
        self.random_state = random_state

    def fit(self, X, y):
        """Sample pairs from the class labels ``y`` and learn the metric.

        Args:
            X: points, ``(n_samples, n_features)``, finite.
            y: class labels, ``(n_samples,)``, at least two classes and one with two samples.

        Returns:
            self
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; "
                f"pass the class labels, one per row of X"
            )
        X = check_points(X)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(
                f"y must be 1-D with one class label per row of X ({len(X)}), got shape {y.shape}"
            )
        if len(X) < 2:
            raise ValueError(
                "X has 1 sample (n_samples=1); pairs need at least two samples of one class and one of another"
            )
        n_pairs = self.n_pairs
        if n_pairs is None:
            n_pairs = max(20, min(10 * len(X), 4000))
        check_number("n_pairs", n_pairs, low=2, integer=True)
        idx, pair_y = pair_indices_from_labels(y, int(n_pairs), self.random_state)
        return self._fit_pairs(X[idx], pair_y == 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"requires_y": True}
