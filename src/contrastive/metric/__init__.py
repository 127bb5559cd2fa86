"""Cosine similarity metric learning (CSML, Nguyen and Bai 2010) as scikit-learn estimators.

The gradients are derived in ``docs/derivations/cosine_similarity.md``.

- :class:`CosineSimilarityLearner`: learns from labelled pairs ``(n_pairs, 2, d)``, with
  metric-learn's pair-learner API.
- :class:`CosineSimilarityLearnerSupervised`: learns from class labels ``(X, y)``, a
  scikit-learn transformer.
- :func:`pairs_from_labels`: balanced, seeded pairs from class labels;
  :func:`pair_indices_from_labels`: the same pairs as row indices.

Needs the ``metric`` extra (scikit-learn, scipy): ``pip install contrastive[metric]``.
"""

from ._pairs import pair_indices_from_labels, pairs_from_labels
from .learner import CosineSimilarityLearner
from .supervised import CosineSimilarityLearnerSupervised

__all__ = [
    "CosineSimilarityLearner",
    "CosineSimilarityLearnerSupervised",
    "pair_indices_from_labels",
    "pairs_from_labels",
]
