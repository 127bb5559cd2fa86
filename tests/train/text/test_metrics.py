"""train/text/metrics.py: ranking metrics through ir-measures (graded, several relevant documents),
checked against the hand-written single-gold formulas, and reciprocal rank fusion."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive.train.text.metrics import METRICS, evaluate_scorer, qrels_of, rrf_scores


def _hand_written(scores: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """The metrics the recipe computed before ir-measures: rank = 1 + #{j != gold: s_j >= s_gold}."""
    r = (scores >= scores.gather(1, gold[:, None])).sum(1).double()  # pessimistic ties
    top = r <= 10
    return {
        "mrr_at_10": float(torch.where(top, 1 / r, 0.0).mean()),
        "recall_at_1": float((r <= 1).double().mean()),
        "recall_at_10": float(top.double().mean()),
        "ndcg_at_10": float(torch.where(top, 1 / torch.log2(r + 1), 0.0).mean()),
    }


@pytest.mark.parametrize("ties", [False, True])
def test_single_gold_figures_equal_the_hand_written_metrics(ties):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 60, generator=g)
    if ties:  # BM25-like: most documents share a score of 0, some tie with the gold
        scores = (scores.clamp(min=0.8) * 2).round() / 2
    gold = torch.randint(0, 60, (200,), generator=g)
    got = evaluate_scorer(lambda b: scores[b], gold, chunk=64)
    want = _hand_written(scores, gold)
    assert list(got) == list(METRICS)
    for k in METRICS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_a_constant_scorer_ranks_the_gold_last():
    m = evaluate_scorer(lambda b: torch.zeros(3, 12)[b], torch.tensor([0, 5, 11]))
    assert m["recall_at_10"] == 0.0 and m["mrr_at_10"] == 0.0


def test_graded_and_several_relevant_documents():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5]])  # ranking: 0, 1, 3, 2
    m = evaluate_scorer(lambda b: scores[b], [{1: 2, 2: 1}])
    assert m["mrr_at_10"] == pytest.approx(1 / 2)  # first relevant document at rank 2
    assert m["recall_at_1"] == 0.0 and m["recall_at_10"] == 1.0
    dcg = 2 / math.log2(3) + 1 / math.log2(5)  # gains 2 at rank 2, 1 at rank 4
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg_at_10"] == pytest.approx(dcg / idcg)


def test_bad_judgements_are_refused():
    with pytest.raises(ValueError, match="grade >= 1"):
        qrels_of([{0: 0}])
    with pytest.raises(ValueError, match=r"\(Q,\)"):
        qrels_of(torch.zeros(2, 2, dtype=torch.int64))


def test_fusion():
    a, b = torch.rand(5, 30), torch.rand(5, 30)
    fused = rrf_scores([a, b], k=60, depth=30)
    ra, rb = a.argsort(1, descending=True).argsort(1) + 1, b.argsort(1, descending=True).argsort(1) + 1
    torch.testing.assert_close(fused, 1 / (60 + ra.float()) + 1 / (60 + rb.float()))
