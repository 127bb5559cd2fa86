"""``contrastive search``: the documents a trained retrieval encoder ranks first for queries,
and the cache of the corpus's embeddings that makes every search after the first cost one
model load and the queries' encoding.

:func:`top_documents` ranks unit-norm document embeddings by their dot product with each
query's embedding. :class:`EmbeddingCache` keeps a run's corpus (the documents and their
``(D, dim)`` float32 embeddings) in one file per checkpoint name, ``search-<checkpoint>.pt``,
next to a key: the sha256 of the checkpoint file, of the corpus's data files and of the run's
``config.toml``. The file lives in the run folder's own ``cache/``, or, where the run folder
cannot be written (read-only, or ``cache`` is not a folder), in the user's cache directory
(``$XDG_CACHE_HOME/contrastive``, else ``~/.cache/contrastive``) under ``search/<run_id>-``.
A file whose key differs (another checkpoint or corpus: stale) or that cannot be read back
whole (damaged) is never used: the caller embeds the corpus again and the file is rewritten.
Only files in ``cache/`` are ever written; no other file of the run is replaced.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["EmbeddingCache", "file_sha256", "top_documents", "user_cache_dir"]

FORMAT = 1


def top_documents(
    queries: torch.Tensor, docs: torch.Tensor, texts: Sequence[str], k: int
) -> list[list[tuple[float, str]]]:
    """Per query, its ``min(k, D)`` best documents as ``[(score, text)]``, best first.

    Args:
        queries: ``(Q, dim)`` query embeddings.
        docs: ``(D, dim)`` document embeddings.
        texts: the ``D`` documents.
        k: how many per query (>= 1).

    Examples:
        >>> top_documents(torch.tensor([[1.0, 0.0]]), torch.eye(2), ["a", "b"], k=1)
        [[(1.0, 'a')]]
    """
    s = queries @ docs.T  # (Q, D)
    top = s.topk(min(k, s.shape[1]), dim=1)
    return [
        [(float(v), texts[int(i)]) for v, i in zip(vals, idx)] for vals, idx in zip(top.values, top.indices)
    ]


def file_sha256(path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/contrastive``, else ``~/.cache/contrastive``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "contrastive"


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, not guessed from permission bits)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


class EmbeddingCache:
    """The corpus embeddings of one run and checkpoint name, checked against ``key`` on read.

    Args:
        run_dir: the run folder.
        name: the checkpoint name (``last``, ``best``).
        run_id: the run's id (``run.json``), naming its file in the user's cache directory.
    """

    def __init__(self, run_dir, name: str, run_id: str):
        self.run_dir = Path(run_dir)
        self.own = self.run_dir / "cache" / f"search-{name}.pt"
        self.user = user_cache_dir() / "search" / f"{run_id or 'run'}-{name}.pt"

    def load(self, key: dict[str, Any]) -> tuple[list[str], torch.Tensor] | None:
        """``(documents, (D, dim) embeddings)`` from the first file holding ``key``, or None."""
        for path in (self.own, self.user):
            got = self._read(path, key)
            if got is not None:
                return got
        return None

    @staticmethod
    def _read(path: Path, key: dict[str, Any]) -> tuple[list[str], torch.Tensor] | None:
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt, never used
            return None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("key") != key:
            return None  # another checkpoint, corpus or version: stale
        docs, emb = obj.get("docs"), obj.get("embeddings")
        if (
            not isinstance(docs, list)
            or not all(isinstance(t, str) for t in docs)
            or not isinstance(emb, torch.Tensor)
            or emb.dtype != torch.float32
            or emb.dim() != 2
            or emb.shape[0] != len(docs)
            or not torch.isfinite(emb).all()
        ):
            return None
        return docs, emb

    def save(self, key: dict[str, Any], docs: list[str], embeddings: torch.Tensor) -> Path | None:
        """Write the cache (the run folder's ``cache/`` if it can be written, else the user's
        cache directory); the path written, or None where neither can be written (the search
        still answers)."""
        from ..checkpoint import atomic_write

        obj = {"format": FORMAT, "key": key, "docs": list(docs), "embeddings": embeddings.float().cpu()}
        cache = self.own.parent
        own_ok = (not cache.exists() or cache.is_dir()) and self.run_dir.is_dir() and _writable(cache)
        for path in (self.own, self.user) if own_ok else (self.user,):
            try:
                return atomic_write(path, lambda tmp: torch.save(obj, tmp))
            except OSError:
                continue
        return None
