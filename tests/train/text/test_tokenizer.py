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
