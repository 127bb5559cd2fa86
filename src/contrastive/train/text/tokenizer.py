"""Subword tokenisation with Hugging Face ``tokenizers``, trained on the training split.

Text is first split into identifier-aware lower-case words (:func:`.lexical.split_words`:
``readFile_path`` -> ``read file path``), then a WordPiece or BPE model with ``vocab_size``
entries is trained on the training queries and documents and saved as ``tokenizer.json`` in
the run folder. Id 0 is ``[PAD]``, 1 is ``[UNK]``. :meth:`TextTokenizer.encode` returns a
padded ``(N, L)`` int64 tensor (rows truncated to ``max_length`` tokens, zeros after).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._optional import needs
from .lexical import split_words

__all__ = ["TOKENIZERS", "TextTokenizer", "cached_tokenizer", "load_run_tokenizer", "pad_ids"]

TOKENIZERS = ("wordpiece", "bpe")
PAD, UNK = "[PAD]", "[UNK]"


def pad_ids(rows: Sequence[Sequence[int]], max_length: int) -> torch.Tensor:
    """Right-pad (with 0) and truncate id lists to ``(N, min(max_length, longest))``.

    Examples:
        >>> pad_ids([[5, 6, 7], [8]], max_length=2)
        tensor([[5, 6],
                [8, 0]])
    """
    width = max(1, min(max_length, max((len(r) for r in rows), default=1)))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        r = r[:width]
        out[i, : len(r)] = r
    return torch.from_numpy(out)


class TextTokenizer:
    """A trained subword tokenizer (wraps ``tokenizers.Tokenizer``).

    Examples:
        >>> tok = TextTokenizer.train(["read a file", "readFile(path)", "write the file"], vocab_size=60)
        >>> ids = tok.encode(["read file"], max_length=8)
        >>> ids.shape[0], bool((ids[0, :2] > 1).all())
        (1, True)
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    @staticmethod
    def prepare(text: str) -> str:
        """The words the tokenizer sees: identifier-split, lower-case, space-joined."""
        return " ".join(split_words(text))

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 16000, kind: str = "wordpiece", min_frequency: int = 2
    ) -> TextTokenizer:
        """Train a ``kind`` (wordpiece or bpe) model of at most ``vocab_size`` entries on ``texts``."""
        with needs("train", "the retrieval tokenizer"):
            from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        if kind not in TOKENIZERS:
            raise ValueError(f"kind must be one of {TOKENIZERS}, got {kind!r}")
        if vocab_size < 8:
            raise ValueError(f"vocab_size must be >= 8, got {vocab_size}")
        if kind == "wordpiece":
            tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=64))
            trainer: Any = trainers.WordPieceTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=[PAD, UNK],
                show_progress=False,
            )
        else:
            tok = Tokenizer(models.BPE(unk_token=UNK))
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=[PAD, UNK],
                show_progress=False,
            )
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.train_from_iterator((cls.prepare(t) for t in texts), trainer=trainer)
        return cls(tok)

    def encode(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        """``(N, L)`` int64 ids, 0-padded, each row at most ``max_length`` tokens."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        encs = self.tokenizer.encode_batch([self.prepare(t) for t in texts], add_special_tokens=False)
        return pad_ids([e.ids for e in encs], max_length)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, path) -> TextTokenizer:
        """The tokenizer saved at ``path``.

        Raises:
            FileNotFoundError: no file at ``path``.
            CheckpointError: the file is damaged (not a tokenizer ``tokenizers`` can read).
        """
        with needs("train", "the retrieval tokenizer"):
            from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer file {str(path)!r} not found; is this a retrieval run folder?"
            )
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a damaged file
            from ..checkpoint import CheckpointError

            raise CheckpointError(
                f"{path} is not a tokenizer file that can be read ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                f"it is damaged: restore it from a copy of the run (the weights fit only this tokenizer)"
            ) from None

    def batch(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """``{"ids": (N, L)}``, the input of the bag and transformer encoders."""
        return {"ids": self.encode(texts, max_length)}


def cached_tokenizer(
    cache_dir, key: Sequence[Any], texts: Sequence[str], vocab_size: int, kind: str
) -> TextTokenizer:
    """A tokenizer trained on ``texts`` once per ``key`` (the training split's identity and the
    settings) and kept in ``cache_dir/tokenizer-<key>.json``: ``tokenizers``' trainer is not
    bit-reproducible, so the runs of one split share one tokenizer. A damaged cache file is
    trained again."""
    digest = hashlib.sha1(json.dumps([*key, kind, vocab_size]).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"tokenizer-{digest}.json"
    try:
        tok = TextTokenizer.load(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged cache file (CheckpointError) is trained again
        tok = None
    if tok is None:
        tok = TextTokenizer.train(list(texts), vocab_size, kind)
        tok.save(path)
    return tok


def load_run_tokenizer(path, recorded_sha256: str | None) -> TextTokenizer:
    """A run folder's ``tokenizer.json``, checked against the sha256 ``run.json`` recorded.

    Raises:
        CheckpointError: the file is missing, or is not the one the run was trained with.
    """
    from ..checkpoint import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; the run's weights fit only the tokenizer they were trained with: "
            f"restore tokenizer.json from a copy of the run (a new one is never trained for it)"
        )
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    if recorded_sha256 is not None and now != recorded_sha256:
        raise CheckpointError(
            f"{path} is not the tokenizer the run was trained with (sha256 {now}, run.json "
            f"records {recorded_sha256}); restore tokenizer.json from a copy of the run"
        )
    return TextTokenizer.load(path)
