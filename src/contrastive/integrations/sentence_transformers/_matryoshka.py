"""``MatryoshkaLoss`` of sentence-transformers 6.3: around one of this package's losses, one
engine pass over every prefix (``matryoshka_dims=``) instead of one loss per dimension."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import Tensor, nn

from ._gist import GISTEmbedLoss
from ._mnrl import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

logger = logging.getLogger(__name__)


class MatryoshkaLoss(nn.Module):
    r"""sentence-transformers' ``MatryoshkaLoss`` (Kusupati et al. 2022): the weighted sum of a
    loss over prefixes of the embeddings,

    .. math::

        \mathcal L = \sum_k w_k \, \mathcal L\big(\bar z_{:, :m_k}\big), \qquad
        \bar z_{:, :m} = \text{rows of } z_{:, :m} \text{ L2-normalised}.

    Around this package's :class:`MultipleNegativesRankingLoss`,
    :class:`CachedMultipleNegativesRankingLoss` or :class:`GISTEmbedLoss` the prefixes go to the
    engine in one pass (``matryoshka_dims`` / ``matryoshka_weights``, with ``normalize=True``:
    sentence-transformers normalises every prefix whatever the similarity, and dot products of
    unit prefixes are cosines); the embeddings are computed once. Around any other loss this
    is sentence-transformers' own ``MatryoshkaLoss`` (one loss per dimension), unchanged.

    Args:
        model: the ``SentenceTransformer``.
        loss: the loss to apply at every dimension.
        matryoshka_dims: the prefix sizes (sorted in decreasing order, with their weights).
        matryoshka_weights: one weight per dimension (default: all 1).
        n_dims_per_step: if > 0 and fewer than the dimensions, that many dimensions drawn at
            random (``random.sample``, as sentence-transformers draws them) per step.

    Raises:
        ValueError: sentence-transformers' refusals (no dimension, one <= 0 or above the
            model's embedding dimension, weights of another length).
    """

    def __init__(
        self,
        model: Any,
        loss: nn.Module,
        matryoshka_dims: Sequence[int],
        matryoshka_weights: Sequence[float] | Sequence[int] | None = None,
        n_dims_per_step: int = -1,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.engine = isinstance(
            loss, (MultipleNegativesRankingLoss, CachedMultipleNegativesRankingLoss, GISTEmbedLoss)
        )
        if not self.engine:  # sentence-transformers' own, one loss per dimension (it validates)
            self._st = st_losses.MatryoshkaLoss(
                model, loss, matryoshka_dims, matryoshka_weights, n_dims_per_step
            )
            self.matryoshka_dims, self.matryoshka_weights = (
                self._st.matryoshka_dims,
                self._st.matryoshka_weights,
            )
            self.n_dims_per_step = n_dims_per_step
            return
        if not matryoshka_dims:
            raise ValueError("You must provide at least one dimension in matryoshka_dims.")
        if any(dim <= 0 for dim in matryoshka_dims):
            raise ValueError("All dimensions passed to a matryoshka loss must be > 0.")
        if matryoshka_weights is None:
            matryoshka_weights = [1] * len(matryoshka_dims)
        elif len(matryoshka_weights) != len(matryoshka_dims):
            raise ValueError("matryoshka_weights must be the same length as matryoshka_dims.")
        full = model._get_untruncated_embedding_dimension()
        if full is not None:
            if any(d > full for d in matryoshka_dims):
                raise ValueError(
                    f"Dimensions in matryoshka_dims cannot exceed the model's embedding dimension of {full}."
                )
            if full not in matryoshka_dims:
                logger.warning(
                    f"The model's embedding dimension {full} is not included in matryoshka_dims: {matryoshka_dims}; "
                    "the full dimension will not be trained."
                )
        pairs = sorted(zip(matryoshka_dims, matryoshka_weights), key=lambda p: p[0], reverse=True)
        self.matryoshka_dims = tuple(d for d, _ in pairs)
        self.matryoshka_weights = tuple(w for _, w in pairs)
        self.n_dims_per_step = n_dims_per_step

    def step_dims(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """This step's dimensions and weights (all, or ``n_dims_per_step`` drawn at random)."""
        idx: Sequence[int] = range(len(self.matryoshka_dims))
        if 0 < self.n_dims_per_step < len(idx):
            idx = sorted(random.sample(idx, self.n_dims_per_step))
        return tuple(self.matryoshka_dims[i] for i in idx), tuple(self.matryoshka_weights[i] for i in idx)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        if not self.engine:
            return self._st(sentence_features, labels)
        dims, weights = self.step_dims()
        kw = {"matryoshka_dims": dims, "matryoshka_weights": weights}
        if isinstance(self.loss, CachedMultipleNegativesRankingLoss):
            return self.loss.cached_loss(sentence_features, labels, **kw)
        if isinstance(self.loss, GISTEmbedLoss):
            return self.loss.gist_loss(sentence_features, labels, **kw)
        embeddings = embed_columns(self.model, sentence_features)  # once, for every prefix
        return self.loss.compute_loss_from_embeddings(embeddings, labels, **kw)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss.__class__.__name__,
            "matryoshka_dims": self.matryoshka_dims,
            "matryoshka_weights": self.matryoshka_weights,
            "n_dims_per_step": self.n_dims_per_step,
        }

    @property
    def citation(self) -> str:
        return st_losses.MatryoshkaLoss.citation.fget(self)  # type: ignore[attr-defined]
