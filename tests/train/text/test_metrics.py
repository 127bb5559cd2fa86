"""train/text/metrics.py: gold ranks, rank metrics (MRR, recall@k, nDCG) and reciprocal rank fusion."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive.train.text.metrics import gold_ranks, rank_metrics, rrf_scores


def test_ranks_metrics_and_fusion():
    scores = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.9, 0.5]])
    assert gold_ranks(scores, torch.tensor([0, 1])).tolist() == [3, 1]  # a constant scorer ranks last
    m = rank_metrics(torch.tensor([1, 4, 20]))
    assert m["mrr_at_10"] == pytest.approx((1 + 0.25) / 3)
    assert m["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["recall_at_1"] == pytest.approx(1 / 3) and m["recall_at_10"] == pytest.approx(2 / 3)
    a, b = torch.rand(5, 30), torch.rand(5, 30)
    fused = rrf_scores([a, b], k=60, depth=30)
    ra, rb = a.argsort(1, descending=True).argsort(1) + 1, b.argsort(1, descending=True).argsort(1) + 1
    torch.testing.assert_close(fused, 1 / (60 + ra.float()) + 1 / (60 + rb.float()))
