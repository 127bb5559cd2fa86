"""retrieval_loss against sentence-transformers 6.3 itself: MultipleNegativesRankingLoss for every
combination of directions x partition_mode it accepts (refused where it refuses) and every
hardness mode, with and without hard negatives; GISTEmbedLoss for margins, strategies and the
contrast flags, with a duplicate positive in the batch (ties).

MNRL is called through its own ``compute_loss_from_embeddings``. GISTEmbedLoss has no such entry
point, so it runs its real ``forward`` on a stub embedding model (a module that returns the
embeddings it is handed, with a real in-memory tokenizer so the constructor's checks pass):
the loss arithmetic is sentence-transformers' own, on our embeddings."""

import itertools

import pytest
import torch

import contrastive as C

st = pytest.importorskip("sentence_transformers")
from sentence_transformers.sentence_transformer.losses import (  # noqa: E402
    GISTEmbedLoss,
    MultipleNegativesRankingLoss,
)

OTHERS = ("query_to_query", "doc_to_query", "doc_to_doc")
DIRECTIONS = [("query_to_doc", *c) for r in range(4) for c in itertools.combinations(OTHERS, r)]
B, K, D = 6, 2, 8


def _data(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, D, generator=g, dtype=dtype)
    p = torch.randn(B, D, generator=g, dtype=dtype)
    n = torch.randn(B, K, D, generator=g, dtype=dtype)
    return a, p, n


def _grads(loss, ins):
    return torch.autograd.grad(loss, ins)


@pytest.mark.parametrize("directions", DIRECTIONS)
@pytest.mark.parametrize("partition_mode", ["joint", "per_direction"])
@pytest.mark.parametrize("hardness_mode", [None, "in_batch_negatives", "hard_negatives", "all_negatives"])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_equals_sentence_transformers_mnrl(directions, partition_mode, hardness_mode, with_negatives):
    alpha = 0.0 if hardness_mode is None else 3.0
    kw = dict(directions=directions, partition_mode=partition_mode, hardness_mode=hardness_mode)
    try:
        ref_loss = MultipleNegativesRankingLoss(None, scale=20.0, hardness_strength=alpha, **kw)
    except ValueError:
        with pytest.raises(ValueError, match="per_direction"):
            C.retrieval_loss(*_data(0)[:2], None, 0.05, hardness_strength=alpha, **kw)
        return
    a, p, n = (x.requires_grad_(True) for x in _data(len(directions)))
    negs = n if with_negatives else None
    cols = [a, p] + ([n[:, k] for k in range(K)] if with_negatives else [])
    want = ref_loss.compute_loss_from_embeddings(cols, None)
    ins = [a, p] + ([n] if with_negatives else [])
    got = C.retrieval_loss(a, p, negs, 0.05, hardness_strength=alpha, block_size=4, **kw)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for x, y in zip(_grads(got, ins), _grads(want, ins)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


class _Emb(torch.nn.Module):
    """An 'embedding model' that returns the embeddings in its features (key ``key``)."""

    def __init__(self, key, tokenizer):
        super().__init__()
        self.key, self.tokenizer, self.max_seq_length = key, tokenizer, 16

    def forward(self, features):
        return {"sentence_embedding": features[self.key]}


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    )


@pytest.mark.parametrize(
    "margin, strategy", [(0.0, "absolute"), (0.1, "absolute"), (0.0, "relative"), (0.3, "relative")]
)
@pytest.mark.parametrize(
    "contrast_anchors, contrast_positives", [(False, False), (True, False), (False, True), (True, True)]
)
@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("dtype, temperature", [(torch.float64, 0.05), (torch.float32, 0.01)])
def test_equals_sentence_transformers_gist(
    margin, strategy, contrast_anchors, contrast_positives, with_negatives, dtype, temperature
):
    tok = _tokenizer()
    ref_loss = GISTEmbedLoss(
        _Emb("emb", tok),
        _Emb("guide", tok),
        temperature=temperature,
        margin_strategy=strategy,
        margin=margin,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
    )
    g = torch.Generator().manual_seed(11)
    a, p, n = (x.to(dtype) for x in _data(3))
    ga, gp, gn = (torch.randn(B, 5, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    # a duplicate positive text: rows 1 and 4 have the same positive, in both models
    p[4], gp[4] = p[1], gp[1]
    # the guide agrees a little with the model, so some candidates do pass the threshold
    ga = ga + 0.8 * torch.nn.functional.pad(a[:, :5], (0, 0))
    a, p, n = (x.requires_grad_(True) for x in (a, p, n))
    cols = [{"emb": a, "guide": ga}, {"emb": p, "guide": gp}]
    if with_negatives:
        cols.append({"emb": n[:, 0], "guide": gn})
    want = ref_loss(cols, None)
    negs = n[:, :1] if with_negatives else None
    guide = (ga, gp, gn[:, None]) if with_negatives else (ga, gp)
    got = C.retrieval_loss(
        a,
        p,
        negs,
        temperature,
        guide=guide,
        guide_margin=margin,
        guide_margin_strategy=strategy,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
        block_size=4,
    )
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(got, want, **tol)
    # the masks do drop candidates here: a margin of -2 (a threshold above every cosine) drops none
    kept = C.retrieval_loss(
        a,
        p,
        negs,
        temperature,
        guide=guide,
        guide_margin=-2.0,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
    )
    assert float(got.detach()) < float(kept.detach())
    ins = [a, p] + ([n] if with_negatives else [])
    for x, y in zip(_grads(got, ins), _grads(want, ins)):
        torch.testing.assert_close(x, y, **(tol if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)))
