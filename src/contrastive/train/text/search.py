"""``contrastive search``: the documents a trained retrieval encoder ranks first for queries,
and the cache of the corpus's embeddings that makes every search after the first cost one
model load and the queries' encoding.

:func:`search_run` answers queries for a loaded run (the retrieval recipe's task and model,
built without its training data): the corpus's embeddings from the cache when its key holds,
else the corpus read and embedded, and the cache written.
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
from typing import Any, Protocol

import torch
from torch import nn

__all__ = [
    "EmbeddingCache",
    "check_queries",
    "file_sha256",
    "search_run",
    "top_documents",
    "user_cache_dir",
]

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


class SearchTask(Protocol):
    """What :func:`search_run` needs of a loaded retrieval task."""

    def data_hashes(self) -> dict[str, str] | None: ...  # the run's data check; None: not built yet

    def test_corpus(self) -> list[str]: ...  # read from the data

    def embed_texts(self, model: nn.Module, texts: list[str], side: str) -> torch.Tensor: ...


def check_queries(query) -> list[str]:
    """``query`` (a string, or a list of them) as a list of non-blank queries.

    Raises:
        ValueError: no query, or a blank or non-string one (named by its position).

    Examples:
        >>> check_queries("read a file"), check_queries(["a", "b"])
        (['read a file'], ['a', 'b'])
    """
    if isinstance(query, str):
        query = [query]
    if not isinstance(query, (list, tuple)) or not query:
        raise ValueError('query must be a non-empty string, e.g. contrastive search RUN "read a file"')
    for i, q in enumerate(query):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(
                f"query {i + 1} is {q!r}; every query must be a non-empty string (one per line with --queries)"
            )
    return list(query)


def search_run(
    task: SearchTask, model: nn.Module, run_dir, checkpoint: str, queries: list[str], k: int
) -> list[list[tuple[float, str]]]:
    """The top ``k`` ``(score, document)`` of the run's test corpus for each query.

    The corpus's embeddings come from the :class:`EmbeddingCache` of ``(run_dir, checkpoint)``
    when it holds the key ``{sha256 of the checkpoint file, the data's hashes as checked now
    (task.data_hashes()), sha256 of config.toml}``; otherwise the corpus is read, embedded by
    the document tower and cached. The data check runs either way (a changed file is refused,
    or noted with ``allow_changed_data``).
    """
    from ..rundir import read_run

    run_dir = Path(run_dir)
    hashes = task.data_hashes()
    cache = EmbeddingCache(run_dir, checkpoint, str(read_run(run_dir).get("run_id", "")))
    key = {
        "checkpoint_sha256": file_sha256(run_dir / "checkpoints" / f"{checkpoint}.pt"),
        "data_sha256": hashes,
        "config_sha256": file_sha256(run_dir / "config.toml"),
    }
    got = cache.load(key) if hashes is not None else None
    if got is None:
        docs = task.test_corpus()
        emb = task.embed_texts(model, docs, "doc")  # (D, dim)
        if hashes is None:  # a corpus built just now (pycode): its hash is known from here on
            key["data_sha256"] = task.data_hashes()
        cache.save(key, docs, emb)
    else:
        docs, emb = got
    return top_documents(task.embed_texts(model, queries, "query"), emb, docs, k)
