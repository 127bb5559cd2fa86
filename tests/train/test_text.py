"""The retrieval recipe's text pieces: corpus extraction and splits, JSONL errors, BM25 and
TF-IDF against brute-force formulas, ranking metrics and fusion, tokeniser and encoders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from contrastive.train.text import corpus as C
from contrastive.train.text.encoders import BagEncoder, DualEncoder, TransformerTextEncoder, masked_mean
from contrastive.train.text.lexical import BM25, TfIdf, split_words
from contrastive.train.text.metrics import gold_ranks, rank_metrics, rrf_scores
from contrastive.train.text.tokenizer import TextTokenizer

SOURCE = '''
import os

def load(path, mode="r"):
    """Read a file and return its text.

    Args: path.
    """
    with open(path, mode) as fh:
        return fh.read()

class Store:
    @property
    def size(self):
        """The number of items in the store."""
        return len(self.items)

    def short(self):
        """Too short"""
        return 1

def undocumented(x):
    return x
'''


def test_extract_pairs_strips_docstring_keeps_decorators_and_names_methods():
    pairs = C.extract_pairs(SOURCE, "m")
    assert [(q, n) for q, _, n, _ in pairs] == [
        ("Read a file and return its text.", "load"),
        ("The number of items in the store.", "Store.size"),
    ]
    doc = pairs[0][1]
    assert doc.startswith("def load(path") and "Read a file" not in doc and "return fh.read()" in doc
    assert pairs[1][1].splitlines()[0] == "@property"
    assert C.extract_pairs("def broken(:\n", "m") == []


def test_module_split_is_deterministic_and_covers_all_splits():
    names = [f"pkg.mod{i}" for i in range(300)]
    splits = [C.module_split(n) for n in names]
    assert splits == [C.module_split(n) for n in names]
    counts = {s: splits.count(s) for s in C.SPLITS}
    assert counts["train"] > counts["validation"] > 0 and counts["test"] > 0


def test_build_pycode_tiny_corpus_dedupes_and_never_shares_a_module(tmp_path):
    data = C.load_pycode(tmp_path, ["json", "csv", "email", "logging"], workers=1, progress=False)
    pairs = data.train + data.validation + data.test
    assert len(pairs) > 100
    queries = [" ".join(p.query.lower().split()) for p in pairs]
    assert len(set(queries)) == len(queries)
    modules = {s: {p.source.split(":")[0] for p in getattr(data, s)} for s in C.SPLITS}
    assert not (modules["train"] & modules["test"]) and not (modules["train"] & modules["validation"])
    meta = json.loads((tmp_path / next(p.name for p in tmp_path.iterdir()) / "meta.json").read_text())
    assert meta["pairs"] == {s: len(getattr(data, s)) for s in C.SPLITS}
    assert meta["packages"]["json"] and len(meta["sha256"]) == 64
    again = C.load_pycode(
        tmp_path, ["json", "csv", "email", "logging"], workers=1, progress=False
    )  # the cache
    assert again.test == data.test and again.meta["sha256"] == data.meta["sha256"]


@pytest.mark.parametrize(
    "line, what",
    [
        ('{"query": "q"', "not valid JSON"),
        ('["q", "p"]', "a JSON list, not an object"),
        ('{"positive": "p"}', '"query" is missing'),
        ('{"query": "q", "positive": ""}', '"positive" must be a non-empty string'),
        ('{"query": "q", "positive": "p", "negatives": "n"}', '"negatives" must be a list of strings'),
    ],
)
def test_read_jsonl_names_the_line_and_the_problem(tmp_path, line, what):
    f = tmp_path / "d.jsonl"
    f.write_text('{"query": "a", "positive": "b", "negatives": ["c"]}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=f"line 3: {what}"):
        C.read_jsonl(f)


def test_read_jsonl_and_corpus_ok(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        '{"query": "a", "positive": "b", "negatives": ["c", "d"]}\n{"query": "e", "positive": "f"}\n'
    )
    pairs = C.read_jsonl(f)
    assert pairs[0].negatives == ("c", "d") and pairs[1].negatives == ()
    g = tmp_path / "c.jsonl"
    g.write_text('{"text": "x"}\n"y"\n')
    assert C.read_corpus(g) == ["x", "y"]
    g.write_text('{"text": "x"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        C.read_corpus(g)


def test_split_words():
    assert split_words("XMLHttpRequest.open_URL(x)") == ["xml", "http", "request", "open", "url", "x"]


def _bm25_brute(docs, query, k1, b):
    words = [split_words(d) for d in docs]
    n, avg = len(docs), np.mean([len(w) for w in words])
    out = []
    for w in words:
        s = 0.0
        for t in split_words(query):
            df = sum(t in x for x in words)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            f = w.count(t)
            s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(w) / avg))
        out.append(s)
    return out


def test_bm25_and_tfidf_match_brute_force():
    docs = [
        "def read_file(path): return open(path).read()",
        "def add(a, b): return a + b",
        "class FileReader: read read read",
        "def write(path, text): open(path, 'w').write(text)",
    ]
    queries = ["read a file path", "add two numbers", "write text"]
    for k1, b in [(1.2, 0.75), (3.0, 1.0)]:
        got = BM25(docs, k1, b).scores(queries)
        want = np.array([_bm25_brute(docs, q, k1, b) for q in queries])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    t = TfIdf(docs).scores(queries)
    assert t.shape == (3, 4) and np.all(t <= 1 + 1e-6) and np.argmax(t[1]) == 1
    with pytest.raises(ValueError, match="documents is empty"):
        BM25([])


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


def test_tokenizer_roundtrip(tmp_path):
    texts = [
        "def read_file(path): return open(path).read()",
        "Read a file.",
        "def add(a, b): return a + b",
    ] * 5
    for kind in ("wordpiece", "bpe"):
        tok = TextTokenizer.train(texts, vocab_size=80, kind=kind, min_frequency=1)
        ids = tok.encode(["read file path", "add"], max_length=4)
        assert ids.shape == (2, 3) and ids[1, 1:].eq(0).all() and ids[0].gt(1).all()
        again = TextTokenizer.load(tok.save(tmp_path / f"{kind}.json"))
        assert torch.equal(again.encode(["read file path"], 8), tok.encode(["read file path"], 8))


def test_encoders_ignore_padding_and_dual_encoder_shares():
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    for enc in (BagEncoder(20, 8, bigram_buckets=7, hidden=16), TransformerTextEncoder(20, 8, 1, 2, 16, 0.0)):
        enc.eval()
        torch.testing.assert_close(enc({"ids": ids}), enc({"ids": ids[:, :3]}))
    assert masked_mean(torch.ones(1, 2, 3), torch.zeros(1, 2)).abs().sum() == 0
    bag = BagEncoder(20, 8)
    dual = DualEncoder(bag, None, temperature=0.05, learn_temperature=True)
    assert dual.shared and torch.equal(dual.encode_queries({"ids": ids}), dual.encode_docs({"ids": ids}))
    assert dual.temperature().item() == pytest.approx(0.05) and dual.logit_scale.requires_grad
    with pytest.raises(ValueError, match="multiple of heads"):
        TransformerTextEncoder(20, 10, 1, 3)
