"""``GISTEmbedLoss`` of sentence-transformers 6.3 on the engine: the guide model's
similarities mask the training model's false negatives (``retrieval_loss(guide=...)``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.modules import StaticEmbedding
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from ._common import retrieval, world_size


class GISTEmbedLoss(nn.Module):
    r"""sentence-transformers' ``GISTEmbedLoss`` (Solatorio 2024) computed by
    :func:`contrastive.functional.retrieval_loss` with ``guide=``.

    Columns (anchor, positive) or (anchor, positive, negative). The guide model embeds the same
    batch without a gradient; a candidate whose guide similarity to the anchor exceeds the
    guide's anchor-positive similarity minus the margin (``"absolute"``: ``margin``,
    ``"relative"``: ``|sim| * margin``) is dropped from the anchor's softmax, the positive never.
    Cosine similarity divided by ``temperature``; ``contrast_anchors`` / ``contrast_positives``
    add the anchor-anchor and positive-positive candidates (self excluded), masked the same way.

    Args:
        model: the ``SentenceTransformer`` being trained (a ``transformers`` tokenizer).
        guide: the guide ``SentenceTransformer``.
        temperature: divides the cosine similarities.
        margin_strategy: ``"absolute"`` or ``"relative"``.
        margin: the margin of the false-negative filter.
        contrast_anchors: add the anchor-anchor candidates.
        contrast_positives: add the positive-positive candidates.
        gather_across_devices: on more than one rank: not supported (raises); without
            ``torch.distributed`` it changes nothing, as in sentence-transformers.

    Raises:
        ValueError: sentence-transformers' refusals (tokenizers that are not ``transformers``
            ones, a ``StaticEmbedding`` model that needs re-tokenising for the guide, a bad
            ``margin_strategy``, not 2 or 3 columns).
        NotImplementedError: (in forward) ``gather_across_devices`` on several ranks, or an
            engine without ``retrieval_loss(guide=...)``.
    """

    def __init__(
        self,
        model: Any,
        guide: Any,
        temperature: float = 0.01,
        margin_strategy: str = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self.temperature = temperature
        if not hasattr(model, "tokenizer") or not hasattr(guide, "tokenizer"):
            raise ValueError("Both the training model and the guiding model must have a tokenizer attribute.")
        if not isinstance(model.tokenizer, PreTrainedTokenizerBase) or not isinstance(
            guide.tokenizer, PreTrainedTokenizerBase
        ):
            raise ValueError(
                "Both the training model and the guiding model must use a PreTrainedTokenizer from transformers."
            )
        self.must_retokenize = (
            model.tokenizer.get_vocab() != guide.tokenizer.get_vocab()
            or guide.max_seq_length < model.max_seq_length
        )
        if self.must_retokenize:
            self.tokenizer = model.tokenizer
            if isinstance(model[0], StaticEmbedding):
                raise ValueError(
                    "If we must retokenize because the guide model has a different tokenizer, "
                    "then the Sentence Transformer model must not be based on a StaticEmbedding."
                )
        if margin_strategy not in ("absolute", "relative"):
            raise ValueError("margin_strategy must be 'absolute' or 'relative'.")
        self.margin_strategy = margin_strategy
        self.margin = margin
        self.contrast_anchors = contrast_anchors
        self.contrast_positives = contrast_positives
        self.gather_across_devices = gather_across_devices

    def _guide_features(self, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The guide's inputs: shallow copies of the batch's features (the guide writes into
        them), or the batch re-tokenised by the guide when the tokenizers differ."""
        if not self.must_retokenize:
            return [dict(f) for f in features]
        out = []
        for f in features:
            input_ids = f["input_ids"]
            if "cu_seq_lens_q" in f:  # flattened batch: one row of concatenated sequences
                flat, cu = input_ids[0].tolist(), f["cu_seq_lens_q"].tolist()
                input_ids = [flat[s:e] for s, e in zip(cu[:-1], cu[1:])]
            texts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
            out.append(batch_to_device(self.guide.preprocess(texts), self.guide.device))
        return out

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return self.gist_loss(sentence_features, labels)

    def gist_loss(
        self,
        sentence_features: Iterable[dict[str, Tensor]],
        labels: Tensor | None,
        *,
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ) -> Tensor:
        """The loss of the batch; with ``matryoshka_dims`` the weighted sum over the training
        model's normalised prefixes (the guide's embeddings are not truncated), in one pass."""
        if self.gather_across_devices and world_size() > 1:
            raise NotImplementedError(
                "GISTEmbedLoss(gather_across_devices=True) on more than one rank is not supported by contrastive "
                "(sentence-transformers keeps the anchor-anchor block per rank there); use "
                "sentence_transformers.losses.GISTEmbedLoss, or gather_across_devices=False"
            )
        features = list(sentence_features)
        guide_features = self._guide_features(features)
        embeddings = embed_columns(self.model, features)
        with torch.no_grad():
            guide_embeddings = embed_columns(self.guide, guide_features)
        if len(embeddings) not in (2, 3):
            raise ValueError(f"Expected 2 or 3 embeddings, got {len(embeddings)}")
        g = [e.detach().to(embeddings[0].dtype) for e in guide_embeddings]  # (B, d_guide) each
        keywords: dict[str, Any] = {
            "guide": (g[0], g[1], g[2][:, None] if len(g) == 3 else None),  # negatives (B, 1, d_guide)
            "guide_margin": self.margin,
            "guide_margin_strategy": self.margin_strategy,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
        }
        if matryoshka_dims is not None:
            keywords.update(
                matryoshka_dims=tuple(matryoshka_dims), matryoshka_weights=tuple(matryoshka_weights)
            )
        return retrieval(
            embeddings[0],
            list(embeddings[1:]),
            self.temperature,
            normalize=True,
            gather=False,
            keywords=keywords,
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "guide": self.guide,
            "temperature": self.temperature,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        return st_losses.GISTEmbedLoss.citation.fget(self)  # type: ignore[attr-defined]
