"""Lexical retrieval: identifier-aware word splitting, BM25 and TF-IDF cosine (sparse, SciPy).

Words: runs of letters and digits, split again at ``snake_case`` underscores and
``camelCase`` humps, lower-cased (``getHTTPResponse_code`` -> ``get http response code``).

BM25 (Robertson and Zaragoza 2009, Lucene's non-negative idf) scores document d for query q as

.. math:: s(q, d) = \\sum_{t \\in q} \\mathrm{idf}(t)\\,
          \\frac{f_{t,d}\\,(k_1 + 1)}{f_{t,d} + k_1 (1 - b + b\\,|d| / \\overline{|d|})},\\qquad
          \\mathrm{idf}(t) = \\log\\Big(1 + \\frac{N - n_t + 0.5}{n_t + 0.5}\\Big)

with a query term counted as often as it occurs. TF-IDF cosine: ``(1 + log tf) idf`` vectors
with ``idf = log((1 + N) / (1 + n_t)) + 1``, L2-normalised, scored by their dot product.
Both precompute the document side once, so a block of queries is one sparse product.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..._optional import needs

__all__ = ["BM25", "TfIdf", "split_words"]

_WORD = re.compile(r"[A-Za-z0-9]+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def split_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` with identifiers split at underscores and camel humps.

    Examples:
        >>> split_words("def getHTTPResponse_code(self, x2):")
        ['def', 'get', 'http', 'response', 'code', 'self', 'x', '2']
    """
    out: list[str] = []
    for word in _WORD.findall(text.replace("_", " ")):
        out.extend(p.lower() for p in _PART.findall(word))
    return out


class _Vocab:
    def __init__(self, docs: Sequence[list[str]]):
        self.index: dict[str, int] = {}
        for words in docs:
            for w in words:
                if w not in self.index:
                    self.index[w] = len(self.index)

    def counts(self, docs: Sequence[list[str]]):
        """Sparse ``(len(docs), V)`` term counts (unknown words dropped)."""
        with needs("train", "BM25"):
            from scipy import sparse

        rows, cols = [], []
        for i, words in enumerate(docs):
            ids = [self.index[w] for w in words if w in self.index]
            rows.extend([i] * len(ids))
            cols.extend(ids)
        data = np.ones(len(rows), dtype=np.float32)
        m = sparse.csr_matrix((data, (rows, cols)), shape=(len(docs), len(self.index)), dtype=np.float32)
        m.sum_duplicates()
        return m


class BM25:
    """BM25 over a fixed document collection; :meth:`scores` ranks it for a block of queries.

    Args:
        documents: the collection (raw text; words from :func:`split_words`).
        k1: term-frequency saturation (> 0).
        b: length normalisation in [0, 1].

    Examples:
        >>> bm = BM25(["def add(a, b): return a + b", "def read_file(path): open(path)"])
        >>> s = bm.scores(["read a file"])
        >>> s.shape, int(s.argmax())
        ((1, 2), 1)
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75):
        if not len(documents):
            raise ValueError("documents is empty; BM25 needs at least one document")
        if k1 <= 0 or not 0 <= b <= 1:
            raise ValueError(f"k1 must be > 0 and b in [0, 1], got k1={k1}, b={b}")
        words = [split_words(d) for d in documents]
        self.vocab = _Vocab(words)
        tf = self.vocab.counts(words).tocsr()  # (D, V)
        n = tf.shape[0]
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)  # (V,)
        length = np.asarray(tf.sum(1)).ravel()
        norm = k1 * (1 - b + b * length / max(length.mean(), 1e-9))  # (D,)
        rows = np.repeat(np.arange(n), np.diff(tf.indptr))
        f = tf.data
        tf.data = (self.idf[tf.indices] * f * (k1 + 1) / (f + norm[rows])).astype(np.float32)
        self.weights_t = tf.T.tocsr()  # (V, D) BM25 weight of each term in each document

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), D)`` BM25 scores (float32)."""
        q = self.vocab.counts([split_words(t) for t in queries])  # (Q, V)
        return np.asarray((q @ self.weights_t).todense(), dtype=np.float32)


class TfIdf:
    """TF-IDF cosine similarity (sublinear tf, smoothed idf) over a fixed collection.

    Examples:
        >>> t = TfIdf(["open a file", "add numbers"])
        >>> np.round(t.scores(["file"]), 3).tolist()
        [[0.577, 0.0]]
    """

    def __init__(self, documents: Sequence[str]):
        if not len(documents):
            raise ValueError("documents is empty; TF-IDF needs at least one document")
        words = [split_words(d) for d in documents]
        self.vocab = _Vocab(words)
        tf = self.vocab.counts(words)
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        self.idf = (np.log((1 + tf.shape[0]) / (1 + df)) + 1).astype(np.float32)
        self.docs_t = self._vectors(tf).T.tocsr()  # (V, D)

    def _vectors(self, tf):
        with needs("train", "TF-IDF"):
            from sklearn.preprocessing import normalize

        tf = tf.copy()
        tf.data = (1 + np.log(tf.data)) * self.idf[tf.indices]
        return normalize(tf, norm="l2", copy=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), D)`` cosine similarities (float32)."""
        q = self._vectors(self.vocab.counts([split_words(t) for t in queries]))
        return np.asarray((q @ self.docs_t).todense(), dtype=np.float32)
