"""What the sentence-transformers drop-ins share: the similarity check, the optional
keywords of the engine, and the call of :func:`~contrastive.functional.retrieval_loss`
(single process, or ``contrastive.distributed`` under ``gather_across_devices``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from sentence_transformers.util import cos_sim, dot_score

from ... import distributed as cdist
from ... import functional

SUPPORTED_SIMILARITIES = "sentence_transformers.util.cos_sim or sentence_transformers.util.dot_score"


def normalize_for(similarity_fct: Callable[..., Any]) -> bool:
    """The engine's ``normalize`` for a sentence-transformers similarity function: cosine
    (``util.cos_sim``) is the dot product of L2-normalised rows, ``util.dot_score`` the raw one.

    Raises:
        ValueError: any other function (the engine computes only these two).
    """
    if similarity_fct is cos_sim:
        return True
    if similarity_fct is dot_score:
        return False
    name = getattr(similarity_fct, "__name__", type(similarity_fct).__name__)
    raise ValueError(
        f"similarity_fct must be {SUPPORTED_SIMILARITIES} (the similarities contrastive's engine "
        f"computes), got {name}; for another similarity use sentence_transformers.losses' own loss"
    )


def world_size() -> int:
    """Ranks of the default process group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def retrieval(
    anchors: torch.Tensor,
    docs: list[torch.Tensor],
    temperature: float,
    *,
    normalize: bool,
    gather: bool,
    keywords: dict[str, Any],
) -> torch.Tensor:
    """sentence-transformers' MNRL value on the engine: ``docs[0]`` the positives, ``docs[1:]``
    the hard-negative columns, ``keywords`` the non-default engine settings.

    With ``gather`` on more than one rank, this rank's anchors against every rank's documents
    (:func:`contrastive.distributed.retrieval_loss`), the mean over this rank's anchors; the
    gradient each rank's embeddings receive is the sum over ranks of the gradient of each
    rank's loss (``gradient='exact'``), as sentence-transformers' ``all_gather_with_grad``
    gives it."""
    positives = docs[0]  # (B, d)
    negatives = torch.stack(docs[1:], dim=1) if len(docs) > 1 else None  # (B, K, d)
    if gather and world_size() > 1:
        per_row = cdist.retrieval_loss(
            anchors,
            positives,
            negatives,
            temperature,
            normalize=normalize,
            reduction="none",
            gradient="exact",
            **keywords,
        )  # (B,) this rank's anchors
        return per_row.mean()
    return functional.retrieval_loss(
        anchors, positives, negatives, temperature, normalize=normalize, **keywords
    )
