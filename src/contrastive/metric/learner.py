"""Cosine similarity metric learning (CSML, Nguyen and Bai 2010) on labelled pairs.

:class:`CosineSimilarityLearner` follows metric-learn's pair learners (``fit(pairs, y)``,
``pair_score``, ``predict``, ``calibrate_threshold``, ``score`` = ROC-AUC).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from ._base import _CosineMetricBase
from ._checks import check_choice, check_number, check_pair_labels, check_pairs

STRATEGIES = ("accuracy", "f_beta", "max_tpr", "max_tnr")


class CosineSimilarityLearner(_CosineMetricBase):
    r"""Learn a cosine similarity ``sim(x, y)`` from similar and dissimilar pairs.

    The model is the cosine under a learned metric (CSML), on centred points
    (:math:`\bar x = x - \mu`, :math:`\mu` = ``mean_``):

    .. math::

        \mathrm{sim}_M(x, y) = \frac{(M\bar x) \cdot (M\bar y)}{\lVert M\bar x\rVert\,\lVert M\bar y\rVert}
        \quad (\texttt{form='map'}), \qquad
        \mathrm{sim}_A(x, y) = \frac{\bar y^\top A \bar x}{\sqrt{\bar x^\top A \bar x\;\bar y^\top A \bar y}}
        \quad (\texttt{form='symmetric'})

    ``form='map'`` learns ``M`` (k, d), started from whitened PCA :math:`M_0`; ``form='symmetric'``
    learns a positive definite ``A`` (d, d) started from :math:`A_0 = M_0^\top M_0`, kept
    positive definite by eigenvalue clipping :math:`P(S) = Q \max(\Lambda, \epsilon) Q^\top`
    (so :math:`x^\top A x > 0`). Both starts are scaled to unit Frobenius norm (the cosine
    ignores the scale of ``M`` and ``A``). The objective, minimised, is CSML's, with means
    over the P similar and N dissimilar pairs:

    .. math::

        J(W) = -\frac1P \sum_{\text{similar}} \mathrm{sim}_W
               + \frac{\alpha}{N} \sum_{\text{dissimilar}} \mathrm{sim}_W
               + \beta \lVert W - W_0 \rVert_F^2

    (the paper's sums with :math:`\alpha_{paper} = \alpha P / N`, :math:`\beta_{paper} = \beta P`),
    or with ``objective='margin'`` the margin loss on cosine distance :math:`D = 1 - \mathrm{sim}`,
    :math:`\frac1P \sum D^2/2 + \frac{\alpha}{N} \sum \max(0, m - D)^2/2 + \beta \lVert W - W_0\rVert_F^2`.
    Its gradient is a weighted sum of the cosine's :math:`\partial\,\mathrm{sim}/\partial M_{ij}`
    or :math:`\partial\,\mathrm{sim}/\partial A_{ij}` (tied form for the symmetric parameters),
    computed by :mod:`contrastive.reference.cosine_similarity`; the corrected derivation is in
    ``docs/derivations/cosine_similarity.md``. ``solver='lbfgs'`` runs scipy's L-BFGS (the
    symmetric form minimises :math:`J(P(S))` over symmetric ``S``, the gradient chained
    through the eigenvalue clipping); ``solver='gd'`` runs (projected) gradient descent with
    Barzilai-Borwein steps and Armijo backtracking, projecting ``A`` after every step.

    Args:
        form: ``'map'`` (learn ``M``) or ``'symmetric'`` (learn PSD ``A``).
        objective: ``'csml'`` or ``'margin'``.
        alpha: weight of the dissimilar pairs' term, >= 0.
        beta: pull toward the start :math:`W_0`, >= 0; None: 2.0 for ``'csml'``, 0.1 for
            ``'margin'`` (chosen on validation pairs of the four scikit-learn data sets of
            ``benchmarks/bench_metric.py``, not on their test pairs).
        margin: margin ``m`` on cosine distance for ``objective='margin'``, in (0, 2].
        n_components: with ``init='pca'``: a float in (0, 1), the fraction of the variance
            kept (default 0.99: whitening the last, noisy directions hurts), an int k (at most
            k components), or None (every component with non-negligible variance). The map
            ``M`` is (k, d); for the symmetric form ``A0`` has rank k before the floor.
        init: ``'pca'`` (whitened PCA), ``'identity'``, or an array: ``M0`` (k, d) for the map
            form, a PSD ``A0`` (d, d) for the symmetric form.
        solver: ``'lbfgs'`` or ``'gd'``.
        max_iter: maximum number of solver iterations.
        tol: relative decrease of ``J`` under which the solver stops.
        center: subtract the mean of the training points before taking cosines.
        min_eigenvalue: eigenvalue floor of ``A`` (symmetric form), relative to the largest
            eigenvalue of ``A0``.

    Shape:
        pairs: ``(n_pairs, 2, n_features)``; y: ``(n_pairs,)`` in {+1, -1} or {1, 0}, 1 = similar.

    Attributes:
        components_: ``L`` with ``transform(X) = (X - mean_) @ L.T`` (``M`` for the map form,
            :math:`\Lambda^{1/2} Q^\top` for the symmetric form).
        mean_: the centre, ``(n_features,)`` (zeros when ``center=False``).
        threshold_: decision threshold on ``pair_score`` (calibrated for accuracy in ``fit``).
        classes_: the label encoding seen in ``fit``, ``[-1, 1]`` or ``[0, 1]``.
        n_iter_, converged_: solver iterations and whether it met ``tol``.
        initial_loss_, loss_: the objective ``J`` at the start and at the end of the fit.

    Raises:
        ValueError, TypeError: pairs not of shape (n, 2, d), labels outside {+1, -1}/{1, 0},
            a single kind of pair, NaN/Inf features, bad hyperparameters.

    Examples:
        >>> from sklearn.datasets import load_iris
        >>> from contrastive.metric import CosineSimilarityLearner, pairs_from_labels
        >>> X, labels = load_iris(return_X_y=True)
        >>> pairs, y = pairs_from_labels(X, labels, n_pairs=200, random_state=0)
        >>> learner = CosineSimilarityLearner().fit(pairs, y)
        >>> learner.pair_score(pairs[:2]).shape, learner.predict(pairs[:2]).tolist()
        ((2,), [1, 1])
        >>> learner.score(pairs, y) > 0.85          # ROC-AUC on the training pairs
        True
        >>> learner.get_mahalanobis_matrix().shape
        (4, 4)

    References:
        H. V. Nguyen and L. Bai, Cosine Similarity Metric Learning for Face Verification,
        ACCV 2010.
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

    def fit(self, pairs, y, calibration_params=None):
        """Learn the metric from labelled pairs, then calibrate ``threshold_`` on them.

        Args:
            pairs: ``(n_pairs, 2, n_features)``.
            y: ``(n_pairs,)``, +1/-1 or 1/0 with 1 = similar; both kinds must occur.
            calibration_params: keyword arguments for :meth:`calibrate_threshold`
                (default: ``strategy='accuracy'``).

        Returns:
            self
        """
        pairs = check_pairs(pairs)
        similar, classes = check_pair_labels(y, len(pairs))
        self._fit_pairs(pairs, similar)
        self.classes_ = classes
        self.calibrate_threshold(pairs, y, **(calibration_params or {}))
        return self

    def __sklearn_tags__(self):
        """Tags that say what ``fit`` takes: 3-D pairs ``(n_pairs, 2, n_features)`` and
        required binary pair labels; ``transform`` embeds 2-D points (float64 out).

        scikit-learn's generic checks feed 2-D ``X``, so ``check_estimator`` skips this
        learner with a ``SkipTestWarning`` naming these input tags; the API checks that need
        no data, and pair versions of the others, are in the test suite.
        """
        from sklearn.utils import ClassifierTags, TransformerTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags(multi_class=False)
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])
        tags.target_tags.required = True
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"requires_y": True, "X_types": ["3darray"], "binary_only": True}

    def decision_function(self, pairs):
        """The learned cosine of each pair (``pair_score``), ``(n_pairs,)``."""
        return self.pair_score(pairs)

    def predict(self, pairs):
        """1 (similar) where ``pair_score >= threshold_``, else -1 (or 0, as in ``fit``)."""
        check_is_fitted(self, "threshold_")
        return self.classes_[(self.decision_function(pairs) >= self.threshold_).astype(int)]

    def score(self, pairs, y):
        """ROC-AUC of ``decision_function`` against the pair labels ``y``."""
        scores = self.decision_function(pairs)
        similar, _ = check_pair_labels(y, len(scores))
        return float(roc_auc_score(similar, scores))

    def set_threshold(self, threshold):
        """Set ``threshold_`` by hand (a cosine in [-1, 1]); returns self."""
        check_is_fitted(self, "components_")
        self.threshold_ = float(check_number("threshold", threshold))
        return self

    def calibrate_threshold(self, pairs_valid, y_valid, strategy="accuracy", min_rate=None, beta=1.0):
        """Choose ``threshold_`` on validation pairs.

        Strategies: ``'accuracy'`` (maximise accuracy), ``'f_beta'`` (maximise F-beta with
        ``beta``), ``'max_tpr'`` (maximise the true positive rate with a true negative rate
        >= ``min_rate``), ``'max_tnr'`` (maximise TNR with TPR >= ``min_rate``). Candidate
        thresholds lie midway between consecutive distinct scores.

        Returns:
            self
        """
        check_choice("strategy", strategy, STRATEGIES)
        if strategy in ("max_tpr", "max_tnr"):
            if min_rate is None:
                raise ValueError(f"strategy={strategy!r} needs min_rate, a rate in [0, 1]")
            check_number("min_rate", min_rate, low=0, high=1)
        check_number("beta", beta, low=0, low_open=True)
        scores = self.decision_function(pairs_valid)
        similar, _ = check_pair_labels(y_valid, len(scores), name="y_valid")
        u = np.unique(scores)
        cand = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
        pos, neg = np.sort(scores[similar]), np.sort(scores[~similar])
        tp = len(pos) - np.searchsorted(pos, cand, "left")  # similar with score >= t
        fp = len(neg) - np.searchsorted(neg, cand, "left")
        tpr, tnr = tp / len(pos), 1.0 - fp / len(neg)
        if strategy == "accuracy":
            key = (tp + len(neg) - fp) / len(scores)
        elif strategy == "f_beta":
            b2 = beta * beta
            key = (1 + b2) * tp / np.maximum((1 + b2) * tp + b2 * (len(pos) - tp) + fp, 1)
        elif strategy == "max_tpr":
            key = np.where(tnr >= min_rate, tpr + 1e-9 * tnr, -1.0)
        else:
            key = np.where(tpr >= min_rate, tnr + 1e-9 * tpr, -1.0)
        self.threshold_ = float(cand[int(np.argmax(key))])
        return self
