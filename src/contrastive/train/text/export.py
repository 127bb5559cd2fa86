"""A trained Hugging Face text tower saved as a sentence-transformers model folder.

The folder is the layout sentence-transformers reads (``SentenceTransformer(folder)``): the
transformer's weights, configuration and tokenizer at its root, ``modules.json`` naming three
modules (``Transformer`` -> ``Pooling`` -> ``Normalize``), ``sentence_bert_config.json`` (the
maximum sequence length) and ``1_Pooling/config.json`` (mean or CLS pooling, as trained). The
``Normalize`` module makes its embeddings the unit vectors the loss compared, so
``model.encode(texts)`` equals ``contrastive embed`` on the same texts. Writing the folder needs
no sentence-transformers: only loading it does.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

__all__ = ["save_sentence_transformer"]

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def save_sentence_transformer(encoder: nn.Module, tokenizer, folder, max_seq_length: int) -> Path:
    """Write ``encoder`` (an :class:`~contrastive.train.text.encoders.HFEncoder`) and its Hugging
    Face ``tokenizer`` to ``folder`` as a sentence-transformers model; returns the folder.

    Raises:
        TypeError: ``encoder`` is not a Hugging Face tower (no ``model`` with ``save_pretrained``
            and no ``pooling``), or the tokenizer has no ``save_pretrained``.
        ValueError: ``max_seq_length`` < 1.
    """
    model = getattr(encoder, "model", None)
    pooling = getattr(encoder, "pooling", None)
    if not hasattr(model, "save_pretrained") or pooling not in ("mean", "cls"):
        raise TypeError(
            f"only a Hugging Face tower (model.encoder=hf) can be saved for sentence-transformers, "
            f"got {type(encoder).__name__}"
        )
    if not hasattr(tokenizer, "save_pretrained"):
        raise TypeError(f"the tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    if not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise ValueError(f"max_seq_length must be a positive int, got {max_seq_length!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _write_json(folder / "modules.json", MODULES)
    _write_json(
        folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False}
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": int(model.config.hidden_size),
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"})
    return folder
