"""Evaluation metrics against brute force and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive.train.evaluate import (
    alignment,
    embed,
    evaluate_features,
    knn_accuracy,
    linear_probe,
    retrieval_metrics,
    uniformity,
)


def _clusters(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(3) * 5
    y = torch.arange(n) % 3
    return centres[y] + torch.randn(n, 3, generator=g) * 0.3, y


def test_knn_weighted_vote_by_hand():
    tr = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ytr = torch.tensor([0, 0, 1])
    q = torch.tensor([[0.6, 0.8]])  # cos 0.6 to class 0 (twice), 0.8 to class 1
    # T = 1: votes 2 e^0.6 = 3.64 > e^0.8 = 2.23 -> class 0; T = 0.05: e^16 > 2 e^12 -> class 1
    assert knn_accuracy(tr, ytr, q, torch.tensor([0]), k=3, temperature=1.0) == 1.0
    assert knn_accuracy(tr, ytr, q, torch.tensor([1]), k=3, temperature=0.05) == 1.0
    assert knn_accuracy(tr, ytr, q, torch.tensor([1]), k=1) == 1.0
    with pytest.raises(ValueError, match="k must be a positive int"):
        knn_accuracy(tr, ytr, q, torch.tensor([1]), k=0)


def test_retrieval_metrics_brute_force():
    ref, yr = _clusters(40, 1)
    ref[:5] = -ref[:5]  # a few outliers make it imperfect
    q, yq = _clusters(12, 2)
    got = retrieval_metrics(q, yq, ref, yr)
    sims = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(ref, dim=1).T
    aps, p1 = [], []
    for i in range(len(q)):
        order = sims[i].argsort(descending=True)
        rel = (yr[order] == yq[i]).float()
        r = int((yr == yq[i]).sum())
        aps.append(sum(float(rel[: k + 1].mean()) * float(rel[k]) for k in range(r)) / r)
        p1.append(float(rel[0]))
    assert got["mean_average_precision_at_r"] == pytest.approx(sum(aps) / len(aps))
    assert got["precision_at_1"] == pytest.approx(sum(p1) / len(p1))


def test_linear_probe_and_bundle():
    x, y = _clusters(60)
    xt, yt = _clusters(30, 5)
    assert linear_probe(x, y, xt, yt) == 1.0
    out = evaluate_features(x, y, xt, yt, k=5)
    assert set(out) == {"knn_accuracy", "precision_at_1", "mean_average_precision_at_r", "linear_accuracy"}
    with pytest.raises(ValueError, match="unlabelled"):
        linear_probe(x, torch.full_like(y, -1), xt, yt)


def test_alignment_uniformity_closed_forms():
    z = torch.randn(5, 4)
    assert alignment(z, 3 * z) == pytest.approx(0.0, abs=1e-6)
    assert alignment(torch.tensor([[1.0, 0.0]]), torch.tensor([[-2.0, 0.0]])) == pytest.approx(4.0)
    same = torch.ones(6, 3)
    assert uniformity(same) == pytest.approx(0.0, abs=1e-6)  # log mean exp(0)
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    # 4 pairs at squared distance 2, 2 pairs at 4
    assert uniformity(square) == pytest.approx(math.log((4 * math.exp(-4) + 2 * math.exp(-8)) / 6))
    with pytest.raises(ValueError, match="same shape|one shape"):
        alignment(torch.ones(2, 3), torch.ones(3, 3))


def test_embed_restores_mode():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(4))
    net.train()
    out = embed(net, torch.rand(7, 1, 2, 2), batch_size=3)
    assert out.shape == (7, 4) and net.training
