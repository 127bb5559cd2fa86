"""Hard negatives mined with BM25 for the retrieval recipe, cached on disk.

For every training query the ``depth`` training documents that BM25 ranks first, the query's
own document (``gold``) never among them and the negatives the user gave for it ranked first.
:func:`cached_mine` keeps the result in a cache folder, keyed by the queries, their documents,
the given negatives and the BM25 settings; a damaged cache file is mined again, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import ConfigError
from .lexical import BM25

__all__ = ["cached_mine", "mine_negatives"]


def mine_negatives(
    queries: Sequence[str],
    docs: Sequence[str],
    gold: torch.Tensor,
    given: Sequence[Sequence[str]],
    depth: int,
    k1: float,
    b: float,
) -> torch.Tensor:
    """``(Q, min(depth, D - 1))`` document ids per query: ``given[i]`` first, then BM25's top hits.

    Args:
        queries: the ``Q`` training queries.
        docs: the ``D`` distinct training documents.
        gold: ``(Q,)`` int64, query i's own document (never one of its negatives).
        given: the user's negatives of each query (texts in ``docs``), ranked first.
        depth: how many candidates per query.
        k1, b: the BM25 constants.

    Raises:
        ConfigError: fewer than 2 distinct documents (nothing to mine).

    Examples:
        >>> docs = ["read a file", "write a file", "sort a list"]
        >>> mine_negatives(["read file"], docs, torch.tensor([0]), [[]], depth=1, k1=1.2, b=0.75)
        tensor([[1]])
    """
    depth = min(depth, len(docs) - 1)
    if depth < 1:
        raise ConfigError(
            "hard negatives need at least 2 distinct training documents; set pairs.hard_negatives=0"
        )
    bm = BM25(list(docs), k1, b)
    index = {t: i for i, t in enumerate(docs)}
    out = []
    for i in range(0, len(queries), 1024):
        s = torch.from_numpy(bm.scores(list(queries[i : i + 1024])))  # (chunk, D)
        s.scatter_(1, gold[i : i + 1024, None], float("-inf"))  # never the positive
        for r, negatives in enumerate(given[i : i + 1024]):
            for n in negatives:
                if index[n] != int(gold[i + r]):
                    s[r, index[n]] = float("inf")  # given negatives rank first
        out.append(s.topk(depth, dim=1).indices)
    return torch.cat(out)


def cached_mine(
    cache_dir,
    queries: Sequence[str],
    docs: Sequence[str],
    gold: torch.Tensor,
    given: Sequence[Sequence[str]],
    depth: int,
    k1: float,
    b: float,
) -> torch.Tensor:
    """:func:`mine_negatives`, kept in ``cache_dir/negatives-<key>.pt`` (same arguments, same key)."""
    digest = hashlib.sha1()
    for q, g in zip(queries, gold.tolist()):
        digest.update(f"{q}\0{g}\0".encode())
    digest.update(json.dumps([len(docs), depth, k1, b, [list(x) for x in given]]).encode())
    path = Path(cache_dir) / f"negatives-{digest.hexdigest()[:12]}.pt"
    if path.is_file():
        try:
            cand = torch.load(path, weights_only=True)
            if isinstance(cand, torch.Tensor) and cand.dim() == 2 and len(cand) == len(queries):
                return cand
        except Exception:  # noqa: BLE001 - a damaged cache file is mined again, never trusted
            pass
    cand = mine_negatives(queries, docs, gold, given, depth, k1, b)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..checkpoint import atomic_write

    atomic_write(path, lambda tmp: torch.save(cand, tmp))
    return cand
