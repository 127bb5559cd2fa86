"""Ranking metrics with one relevant document per query, and reciprocal-rank fusion.

Every query is scored against the whole corpus; the rank of its relevant document is
``1 + #{j != gold : s_j >= s_gold}`` (ties count against the query, so a constant scorer gets
the worst rank, not the best). With rank r:

- ``mrr_at_10`` = mean of ``1 / r`` where ``r <= 10`` (0 otherwise);
- ``recall_at_1``, ``recall_at_10`` = share of queries with ``r <= 1``, ``r <= 10``;
- ``ndcg_at_10`` = mean of ``1 / log2(r + 1)`` where ``r <= 10`` (the ideal DCG is 1).

Reciprocal-rank fusion (Cormack et al. 2009): ``s(d) = sum_systems 1 / (k + rank(d))`` over
each system's top ``depth`` documents, k = 60.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["METRICS", "gold_ranks", "rank_metrics", "rrf_scores", "evaluate_scorer"]

METRICS = ("mrr_at_10", "recall_at_1", "recall_at_10", "ndcg_at_10")


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's gold column (ties pessimistic).

    Shape:
        scores ``(Q, D)``, gold ``(Q,)`` int64; returns ``(Q,)`` int64.

    Examples:
        >>> gold_ranks(torch.tensor([[0.1, 0.9, 0.5], [1.0, 1.0, 0.0]]), torch.tensor([2, 0]))
        tensor([2, 2])
    """
    if scores.dim() != 2 or gold.shape != (scores.shape[0],):
        raise ValueError(
            f"scores must be (Q, D) and gold (Q,), got {tuple(scores.shape)} and {tuple(gold.shape)}"
        )
    s_gold = scores.gather(1, gold[:, None])  # (Q, 1)
    return (scores >= s_gold).sum(1)  # the gold column itself counts once: rank = 1 + others >= it


def rank_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """MRR@10, Recall@1, Recall@10 and nDCG@10 from the 1-based ranks of the relevant documents.

    Examples:
        >>> {k: round(v, 4) for k, v in rank_metrics(torch.tensor([1, 2, 11])).items()}
        {'mrr_at_10': 0.5, 'recall_at_1': 0.3333, 'recall_at_10': 0.6667, 'ndcg_at_10': 0.5436}
    """
    r = ranks.double()
    top = r <= 10
    return {
        "mrr_at_10": float(torch.where(top, 1 / r, 0.0).mean()),
        "recall_at_1": float((r <= 1).double().mean()),
        "recall_at_10": float(top.double().mean()),
        "ndcg_at_10": float(torch.where(top, 1 / torch.log2(r + 1), 0.0).mean()),
    }


def rrf_scores(score_blocks: Sequence[torch.Tensor], k: float = 60.0, depth: int = 100) -> torch.Tensor:
    """Reciprocal-rank fusion of several systems' ``(Q, D)`` scores; returns ``(Q, D)``.

    Examples:
        >>> a = torch.tensor([[3.0, 2.0, 1.0]]); b = torch.tensor([[1.0, 3.0, 2.0]])
        >>> rrf_scores([a, b], k=0, depth=3)
        tensor([[1.3333, 1.5000, 0.8333]])
    """
    if not score_blocks:
        raise ValueError("score_blocks is empty; pass the score matrices of at least one system")
    q, d = score_blocks[0].shape
    out = torch.zeros(q, d, dtype=torch.float32)
    depth = min(depth, d)
    contrib = 1.0 / (k + torch.arange(1, depth + 1, dtype=torch.float32))  # (depth,)
    for s in score_blocks:
        if s.shape != (q, d):
            raise ValueError(f"every system's scores must be ({q}, {d}), got {tuple(s.shape)}")
        idx = s.float().topk(depth, dim=1).indices  # (Q, depth)
        out.scatter_add_(1, idx, contrib.expand(q, depth).contiguous())
    return out


def evaluate_scorer(
    score_fn: Callable[[slice], torch.Tensor | np.ndarray], gold: torch.Tensor, chunk: int = 1024
) -> dict[str, float]:
    """Metrics of a scorer that returns the ``(len(block), D)`` scores of a block of queries."""
    ranks = []
    for i in range(0, len(gold), chunk):
        block = slice(i, min(i + chunk, len(gold)))
        s = score_fn(block)
        s = torch.from_numpy(s) if isinstance(s, np.ndarray) else s
        ranks.append(gold_ranks(s.float(), gold[block]))
    return rank_metrics(torch.cat(ranks))
