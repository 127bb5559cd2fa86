"""train/text/mining.py: BM25-mined hard negatives (never the positive, the given ones first)
and their cache (same key: read back; damaged file: mined again)."""

from __future__ import annotations

import torch

from contrastive.train.text import mining
from contrastive.train.text.mining import cached_mine, mine_negatives

DOCS = [
    "def read_file(path): return open(path).read()",
    "def write_file(path, text): open(path, 'w').write(text)",
    "def sort_list(xs): return sorted(xs)",
    "def parse_json(text): return json.loads(text)",
    "def read_json(path): return parse_json(read_file(path))",
]
QUERIES = ["read a file", "write text to a file", "sort a list", "parse json text", "read json from a file"]
GOLD = torch.arange(5)
GIVEN = [[DOCS[2]], [], [], [DOCS[0], DOCS[3]], []]


def test_mined_negatives_exclude_the_positive_and_put_given_ones_first():
    cand = mine_negatives(QUERIES, DOCS, GOLD, GIVEN, depth=3, k1=1.2, b=0.75)
    assert cand.shape == (5, 3) and not (cand == GOLD[:, None]).any()
    assert int(cand[0, 0]) == 2
    assert int(cand[3, 0]) == 0  # the given negative that is not its own positive ranks first
    # depth beyond the corpus: every other document once
    assert mine_negatives(QUERIES, DOCS, GOLD, GIVEN, depth=50, k1=1.2, b=0.75).shape == (5, 4)


def test_mined_negatives_need_two_documents():
    import pytest

    from contrastive.train.config import ConfigError

    with pytest.raises(ConfigError, match="at least 2 distinct"):
        mine_negatives(["q"], ["d"], torch.tensor([0]), [[]], depth=1, k1=1.2, b=0.75)


def test_cache_is_read_back_and_a_damaged_file_is_mined_again(tmp_path, monkeypatch):
    calls = []
    real = mining.mine_negatives

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(mining, "mine_negatives", counting)
    first = cached_mine(tmp_path, QUERIES, DOCS, GOLD, GIVEN, 3, 1.2, 0.75)
    again = cached_mine(tmp_path, QUERIES, DOCS, GOLD, GIVEN, 3, 1.2, 0.75)
    assert torch.equal(first, again) and len(calls) == 1
    (path,) = tmp_path.glob("negatives-*.pt")
    path.write_bytes(b"not a tensor")
    assert torch.equal(cached_mine(tmp_path, QUERIES, DOCS, GOLD, GIVEN, 3, 1.2, 0.75), first)
    assert len(calls) == 2
    cached_mine(tmp_path, QUERIES, DOCS, GOLD, GIVEN, 2, 1.2, 0.75)  # another depth: another key
    assert len(calls) == 3 and len(list(tmp_path.glob("negatives-*.pt"))) == 2
