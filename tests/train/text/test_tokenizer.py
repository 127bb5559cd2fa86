"""train/text/tokenizer.py: the trained tokenizer round trip."""

from __future__ import annotations

import torch

from contrastive.train.text.tokenizer import TextTokenizer


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


def test_cached_tokenizer_is_trained_once_per_key_and_retrained_when_damaged(tmp_path, monkeypatch):
    from contrastive.train.text import tokenizer as T

    texts = ["def read_file(path): return open(path).read()", "Read a file."] * 5
    calls = []
    real = T.TextTokenizer.train

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(T.TextTokenizer, "train", staticmethod(counting))
    a = T.cached_tokenizer(tmp_path, ["sha", 0, 0], texts, 40, "wordpiece")
    b = T.cached_tokenizer(tmp_path, ["sha", 0, 0], texts, 40, "wordpiece")
    assert len(calls) == 1 and torch.equal(a.encode(["read file"], 4), b.encode(["read file"], 4))
    (path,) = tmp_path.glob("tokenizer-*.json")
    path.write_text("{ damaged")
    T.cached_tokenizer(tmp_path, ["sha", 0, 0], texts, 40, "wordpiece")
    T.cached_tokenizer(tmp_path, ["other", 0, 0], texts, 40, "wordpiece")
    assert len(calls) == 3


def test_run_tokenizer_is_checked_against_the_recorded_sha256(tmp_path):
    import hashlib

    import pytest

    from contrastive.train.checkpoint import CheckpointError
    from contrastive.train.text.tokenizer import load_run_tokenizer

    tok = TextTokenizer.train(
        ["read a file", "write a file"] * 5, vocab_size=40, kind="wordpiece", min_frequency=1
    )
    path = tok.save(tmp_path / "tokenizer.json")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_run_tokenizer(path, sha).vocab_size == tok.vocab_size
    with pytest.raises(CheckpointError, match="not the tokenizer the run was trained with"):
        load_run_tokenizer(path, "0" * 64)
    with pytest.raises(CheckpointError, match="is missing"):
        load_run_tokenizer(tmp_path / "none.json", sha)
