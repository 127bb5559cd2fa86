"""Ranking metrics (through ir-measures, graded relevance, any number of relevant documents per
query) and reciprocal-rank fusion.

Every query is scored against the whole corpus. The ranking handed to ir-measures (which runs
trec_eval's definitions, Van Gysel and de Rijke 2018; MacAvaney et al. 2022) orders documents by
score and breaks ties *pessimistically*: among equal scores the relevant documents come last, more
relevant ones later still, so a constant scorer gets the worst ranks, not the best. The measures:

- ``mrr_at_10``: ``RR@10``, the reciprocal rank of the first relevant document within the top 10;
- ``recall_at_1``, ``recall_at_10``: ``R@1``, ``R@10``, the share of a query's relevant documents
  ranked within the top 1, 10;
- ``ndcg_at_10``: ``nDCG@10`` with the grades as gains (trec_eval's linear gain).

With one relevant document per query these are the textbook forms: for its rank r, ``1 / r``,
``[r <= 1]``, ``[r <= 10]`` and ``1 / log2(r + 1)`` (each 0 past 10).

Reciprocal-rank fusion (Cormack et al. 2009): ``s(d) = sum_systems 1 / (k + rank(d))`` over
each system's top ``depth`` documents, k = 60.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..._optional import needs

__all__ = ["METRICS", "DEPTH", "Qrels", "evaluate_scorer", "qrels_of", "rrf_scores"]

METRICS = ("mrr_at_10", "recall_at_1", "recall_at_10", "ndcg_at_10")
DEPTH = 10  # every measure is cut at 10: the ranking handed over holds each query's top 10

Qrels = Sequence[Mapping[int, int]]
"""Per query, ``{document index: grade}`` (grade >= 1 relevant); queries are numbered 0, 1, ..."""


def qrels_of(gold: torch.Tensor | Qrels) -> list[dict[int, int]]:
    """Relevance judgements from one gold document index per query ``(Q,)``, or as given.

    Examples:
        >>> qrels_of(torch.tensor([2, 0]))
        [{2: 1}, {0: 1}]
    """
    if isinstance(gold, torch.Tensor):
        if gold.dim() != 1:
            raise ValueError(f"gold must be (Q,) document indices, got shape {tuple(gold.shape)}")
        return [{int(g): 1} for g in gold.tolist()]
    out = [{int(d): int(g) for d, g in q.items()} for q in gold]
    if any(not q or min(q.values()) < 1 for q in out):
        raise ValueError("every query needs at least one relevant document with a grade >= 1")
    return out


def _top(scores: torch.Tensor, grades: torch.Tensor, depth: int) -> torch.Tensor:
    """The ``depth`` best documents of each row, ties broken pessimistically (``(b, depth)``)."""
    by_grade = grades.argsort(dim=1, stable=True)  # (b, D) within a tie: grade ascending
    s = scores.gather(1, by_grade)
    order = (-s).argsort(dim=1, stable=True)  # score descending, the grade order kept among ties
    return by_grade.gather(1, order[:, :depth])


def evaluate_scorer(
    score_fn: Callable[[slice], torch.Tensor | np.ndarray], gold: torch.Tensor | Qrels, chunk: int = 1024
) -> dict[str, float]:
    """The :data:`METRICS` of a scorer that returns the ``(len(block), D)`` scores of a block of
    queries, against one gold document per query ``(Q,)`` or graded :data:`Qrels`.

    Examples:
        >>> s = torch.tensor([[0.1, 0.9, 0.5], [0.0, 0.0, 0.0]])
        >>> evaluate_scorer(lambda b: s[b], torch.tensor([2, 0]))   # ranks 2 and 3 (a tie: last)
        {'mrr_at_10': 0.41666..., 'recall_at_1': 0.0, 'recall_at_10': 1.0, 'ndcg_at_10': 0.56546...}
    """
    with needs("train", "the ranking metrics"):
        import ir_measures as ir
    qrels = qrels_of(gold)
    judged = [ir.Qrel(str(q), str(d), g) for q, rel in enumerate(qrels) for d, g in rel.items()]
    run = []
    for i in range(0, len(qrels), chunk):
        block = slice(i, min(i + chunk, len(qrels)))
        s = score_fn(block)
        s = (torch.from_numpy(s) if isinstance(s, np.ndarray) else s).float()  # (b, D)
        grades = torch.zeros(s.shape, dtype=torch.int64)
        for r, rel in enumerate(qrels[block]):
            grades[r, list(rel)] = torch.tensor(list(rel.values()))
        top = _top(s, grades, min(DEPTH, s.shape[1]))  # (b, depth)
        for r, docs in enumerate(top.tolist()):
            run += [ir.ScoredDoc(str(i + r), str(d), float(len(docs) - k)) for k, d in enumerate(docs)]
    measures = {"mrr_at_10": ir.RR @ 10, "recall_at_1": ir.R @ 1, "recall_at_10": ir.R @ 10}
    measures["ndcg_at_10"] = ir.nDCG @ 10
    agg = ir.calc_aggregate(list(measures.values()), judged, run)
    return {name: float(agg[m]) for name, m in measures.items()}


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
