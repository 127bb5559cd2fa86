"""train/text/lexical.py: word splitting, BM25 and TF-IDF against brute-force formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrastive.train.text.lexical import BM25, TfIdf, split_words


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
