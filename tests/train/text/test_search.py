"""train/text/search.py: ranking documents for queries."""

from __future__ import annotations

import torch

from contrastive.train.text.search import top_documents


def test_top_documents_ranks_by_dot_product_per_query():
    docs = torch.nn.functional.normalize(torch.randn(7, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    queries = docs[[3, 5]] + 0.01
    texts = [f"doc {i}" for i in range(7)]
    hits = top_documents(queries, docs, texts, k=3)
    assert [h[0][1] for h in hits] == ["doc 3", "doc 5"]
    for q, row in zip(queries, hits):
        scores = [s for s, _ in row]
        assert scores == sorted(scores, reverse=True) and len(row) == 3
        assert abs(scores[0] - float(q @ docs[int(row[0][1].split()[1])])) < 1e-6
    assert len(top_documents(queries, docs, texts, k=50)[0]) == 7
