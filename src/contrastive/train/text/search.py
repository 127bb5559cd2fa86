"""``contrastive search``: the documents a trained retrieval encoder ranks first for a query.

:func:`top_documents` ranks unit-norm document embeddings by their dot product with each
query's embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["top_documents"]


def top_documents(
    queries: torch.Tensor, docs: torch.Tensor, texts: Sequence[str], k: int
) -> list[list[tuple[float, str]]]:
    """Per query, its ``min(k, D)`` best documents as ``[(score, text)]``, best first.

    Args:
        queries: ``(Q, dim)`` query embeddings.
        docs: ``(D, dim)`` document embeddings.
        texts: the ``D`` documents.
        k: how many per query (>= 1).

    Examples:
        >>> top_documents(torch.tensor([[1.0, 0.0]]), torch.eye(2), ["a", "b"], k=1)
        [[(1.0, 'a')]]
    """
    s = queries @ docs.T  # (Q, D)
    top = s.topk(min(k, s.shape[1]), dim=1)
    return [
        [(float(v), texts[int(i)]) for v, i in zip(vals, idx)] for vals, idx in zip(top.values, top.indices)
    ]
