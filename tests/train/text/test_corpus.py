"""train/text/corpus.py: code/docstring pair extraction, deterministic module splits, the
built corpus (deduplicated, no module shared across splits), and JSONL errors naming the line."""

from __future__ import annotations

import json

import pytest

from contrastive.train.text import corpus

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
    pairs = corpus.extract_pairs(SOURCE, "m")
    assert [(q, n) for q, _, n, _ in pairs] == [
        ("Read a file and return its text.", "load"),
        ("The number of items in the store.", "Store.size"),
    ]
    doc = pairs[0][1]
    assert doc.startswith("def load(path") and "Read a file" not in doc and "return fh.read()" in doc
    assert pairs[1][1].splitlines()[0] == "@property"
    assert corpus.extract_pairs("def broken(:\n", "m") == []


def test_module_split_is_deterministic_and_covers_all_splits():
    names = [f"pkg.mod{i}" for i in range(300)]
    splits = [corpus.module_split(n) for n in names]
    assert splits == [corpus.module_split(n) for n in names]
    counts = {s: splits.count(s) for s in corpus.SPLITS}
    assert counts["train"] > counts["validation"] > 0 and counts["test"] > 0


def test_build_pycode_tiny_corpus_dedupes_and_never_shares_a_module(tmp_path):
    data = corpus.load_pycode(tmp_path, ["json", "csv", "email", "logging"], workers=1, progress=False)
    pairs = data.train + data.validation + data.test
    assert len(pairs) > 100
    queries = [" ".join(p.query.lower().split()) for p in pairs]
    assert len(set(queries)) == len(queries)
    modules = {s: {p.source.split(":")[0] for p in getattr(data, s)} for s in corpus.SPLITS}
    assert not (modules["train"] & modules["test"]) and not (modules["train"] & modules["validation"])
    meta = json.loads((tmp_path / next(p.name for p in tmp_path.iterdir()) / "meta.json").read_text())
    assert meta["pairs"] == {s: len(getattr(data, s)) for s in corpus.SPLITS}
    assert meta["packages"]["json"] and len(meta["sha256"]) == 64
    again = corpus.load_pycode(
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
        corpus.read_jsonl(f)


def test_read_jsonl_and_corpus_ok(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        '{"query": "a", "positive": "b", "negatives": ["c", "d"]}\n{"query": "e", "positive": "f"}\n'
    )
    pairs = corpus.read_jsonl(f)
    assert pairs[0].negatives == ("c", "d") and pairs[1].negatives == ()
    g = tmp_path / "c.jsonl"
    g.write_text('{"text": "x"}\n"y"\n')
    assert corpus.read_corpus(g) == ["x", "y"]
    g.write_text('{"text": "x"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        corpus.read_corpus(g)
