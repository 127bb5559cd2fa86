"""sentence-transformers 6.3 losses that compute on this library's blockwise engine.

Change the import and keep the training code::

    # from sentence_transformers.losses import MultipleNegativesRankingLoss
    from contrastive.integrations.sentence_transformers import MultipleNegativesRankingLoss

Each class takes every constructor argument of the sentence-transformers class of the same
name, with its defaults, accepts the same columns, returns the same loss and gradients and
makes the same refusals; the loss goes through :func:`contrastive.functional.retrieval_loss`
(O(N d) memory, no N x N similarity matrix). What differs is listed in
``docs/integrations/sentence_transformers.md``.
"""

from __future__ import annotations

from ..._optional import needs

with needs("sentence-transformers", "contrastive.integrations.sentence_transformers"):
    import sentence_transformers as _st  # noqa: F401

from ._gist import GISTEmbedLoss
from ._matryoshka import MatryoshkaLoss
from ._mnrl import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

__all__ = [
    "MultipleNegativesRankingLoss",
    "CachedMultipleNegativesRankingLoss",
    "GISTEmbedLoss",
    "MatryoshkaLoss",
]
