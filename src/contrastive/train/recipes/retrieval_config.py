"""The retrieval recipe's configuration: its text data, the pairs and hard-negative mining, the
text model, the loss and its features (directions, partition mode, hardness, HCL, Matryoshka,
as :func:`contrastive.retrieval_loss` names them), evaluation, the optimiser's defaults; each
section validated where it is built (one line naming the key and the fix). The recipe itself is
:mod:`contrastive.train.recipes.retrieval`, which re-exports these classes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import torch

from ... import retrieval_loss
from ...ops import validation as V
from ..config import ConfigError, OptimConfig, RunConfig, TrainConfig, choice, require
from ..dist import DistConfig
from ..text import corpus as TC
from ..text.tokenizer import TOKENIZERS

__all__ = [
    "PairsConfig",
    "RetrievalConfig",
    "RetrievalEvalConfig",
    "RetrievalLossConfig",
    "TextDataConfig",
    "TextModelConfig",
    "TextOptimConfig",
    "check_prefixes",
]

ENCODERS = ("bag", "transformer", "hf")


@dataclasses.dataclass
class TextDataConfig:
    """Which pairs: ``pycode`` (this Python installation's code) or ``jsonl`` (your own)."""

    name: str = "pycode"  # pycode | jsonl
    path: str = ""  # jsonl: lines {"query": ..., "positive": ..., "negatives": [...]}
    corpus: str = ""  # jsonl: extra documents ({"text": ...} lines) added to the evaluation corpus
    packages: str = "default"  # pycode: comma-separated top-level packages, "stdlib" for the standard library
    validation_fraction: float = 0.05  # jsonl: share of pairs held out for validation (by hashed query)
    test_fraction: float = 0.1  # jsonl: share held out for the test
    split_seed: int = 0
    train_limit: int = 0  # use this many training pairs (0: all), a fixed random subset
    test_limit: int = 0  # and this many validation / test queries

    def __post_init__(self):
        choice(self.name, "data.name", ("pycode", "jsonl"))
        require(
            self.name != "jsonl" or bool(self.path),
            "data.path",
            "must name a JSONL file when data.name=jsonl",
        )
        # stored absolute: eval / search / embed of the run work from any directory
        self.path, self.corpus = _absolute(self.path), _absolute(self.corpus)
        require(
            0 < self.test_fraction < 1,
            "data.test_fraction",
            f"must be in (0, 1): the test split is what the run reports, got {self.test_fraction}",
        )
        require(
            0 <= self.validation_fraction < 1,
            "data.validation_fraction",
            f"must be in [0, 1) (0: no validation split, best.pt is the last epoch), got "
            f"{self.validation_fraction}",
        )
        require(
            self.validation_fraction + self.test_fraction < 1,
            "data.test_fraction",
            f"+ data.validation_fraction must be below 1 (the rest is the training split), got "
            f"{self.test_fraction} + {self.validation_fraction}",
        )
        for key in ("train_limit", "test_limit"):
            require(getattr(self, key) >= 0, f"data.{key}", f"must be >= 0, got {getattr(self, key)}")

    def package_list(self) -> tuple[str, ...]:
        if self.packages == "default":
            return TC.DEFAULT_PACKAGES
        return tuple(p.strip() for p in self.packages.split(",") if p.strip())


def _absolute(path: str) -> str:
    """``path`` made absolute (``~`` expanded); empty stays empty."""
    return os.path.abspath(os.path.expanduser(path)) if path else path


@dataclasses.dataclass
class PairsConfig:
    """Hard negatives mined with BM25 from the training corpus."""

    hard_negatives: int = 1  # K per query (0: in-batch negatives only)
    mine_depth: int = 20  # draw the K from this many top BM25 documents (the positive excluded)
    bm25_k1: float = 3.0  # BM25 constants, tuned on the pycode validation split (code documents are long)
    bm25_b: float = 1.0

    def __post_init__(self):
        require(self.hard_negatives >= 0, "pairs.hard_negatives", f"must be >= 0, got {self.hard_negatives}")
        require(
            self.mine_depth >= max(1, self.hard_negatives),
            "pairs.mine_depth",
            f"must be >= pairs.hard_negatives, got {self.mine_depth}",
        )
        require(
            self.bm25_k1 > 0 and 0 <= self.bm25_b <= 1,
            "pairs.bm25_k1",
            f"must be > 0 and pairs.bm25_b in [0, 1], got {self.bm25_k1} and {self.bm25_b}",
        )


@dataclasses.dataclass
class TextModelConfig:
    """The towers: a bag of subwords, a small transformer, or a local Hugging Face model."""

    encoder: str = "bag"  # bag | transformer | hf | python:package.module:factory (factory(vocab_size, dim))
    path: str = ""  # hf: a local model folder (config.json, weights, tokenizer files)
    pooling: str = "mean"  # hf: mean | cls
    shared: bool = True  # one tower for queries and documents
    tokenizer: str = "wordpiece"  # wordpiece | bpe (trained on the training split)
    vocab_size: int = 16000
    dim: int = 256
    bigram_buckets: int = 0  # bag: hashed bigrams of adjacent subwords
    hidden: int = 0  # bag: residual MLP hidden size (0: none)
    positions: int = 0  # bag: learned weights of the first positions (0: none)
    token_dropout: float = 0.1  # bag: drop each token with this probability in training
    layers: int = 2  # transformer
    heads: int = 4
    dropout: float = 0.1
    query_length: int = 32  # tokens kept per query
    doc_length: int = 256  # tokens kept per document

    def __post_init__(self):
        if not self.encoder.startswith(("python:", "object:")):  # your own: python:package.module:factory
            choice(self.encoder, "model.encoder", ENCODERS)
        self.path = _absolute(self.path)  # a local folder: found again from any directory
        choice(self.pooling, "model.pooling", ("mean", "cls"))
        choice(self.tokenizer, "model.tokenizer", TOKENIZERS)
        require(
            self.encoder != "hf" or bool(self.path),
            "model.path",
            "must name a local Hugging Face model folder when model.encoder=hf",
        )
        for key in ("vocab_size", "dim", "layers", "heads", "query_length", "doc_length"):
            require(getattr(self, key) >= 1, f"model.{key}", f"must be >= 1, got {getattr(self, key)}")
        require(self.vocab_size >= 8, "model.vocab_size", f"must be >= 8, got {self.vocab_size}")
        for key in ("bigram_buckets", "hidden", "positions"):
            require(getattr(self, key) >= 0, f"model.{key}", f"must be >= 0, got {getattr(self, key)}")
        for key in ("token_dropout", "dropout"):
            require(
                0 <= getattr(self, key) < 1, f"model.{key}", f"must be in [0, 1), got {getattr(self, key)}"
            )


@dataclasses.dataclass
class RetrievalLossConfig:
    """The objective: softmax over candidates (retrieval_loss) or pairwise sigmoid (siglip).

    The info_nce loss's features are those of :func:`contrastive.retrieval_loss`, written as
    config strings: ``directions`` comma-separated (``query_to_doc,doc_to_query``),
    ``hardness_mode`` ``none`` for off, ``hcl_beta`` -1 for off, ``matryoshka_dims`` /
    ``matryoshka_weights`` comma-separated (empty: off).
    """

    name: str = "info_nce"  # info_nce (retrieval_loss) | siglip (in-batch pairs; hard negatives unused)
    temperature: float = 0.05
    learn_temperature: bool = False
    directions: str = "query_to_doc"  # info_nce: + doc_to_query, query_to_query, doc_to_doc (GTE)
    partition_mode: str = "joint"  # info_nce: joint (one softmax over every direction) | per_direction
    hardness_mode: str = "none"  # info_nce: none | in_batch_negatives | hard_negatives | all_negatives
    hardness_strength: float = 0.0  # info_nce: alpha >= 0 of the hardness weighting
    hcl_beta: float = -1.0  # info_nce: >= 0 turns on Robinson et al.'s hard-negative weighting (-1: off)
    hcl_tau_plus: float = 0.0  # info_nce, with hcl_beta: the class prior tau+ in [0, 1)
    matryoshka_dims: str = ""  # info_nce: comma-separated prefix widths, e.g. 256,128,64 (empty: off)
    matryoshka_weights: str = ""  # one weight per dim (empty: ones)
    bias: float = -10.0  # siglip: logit bias

    # a removed key -> (the value it may still hold in an older run's config.toml, the fix)
    REMOVED: ClassVar[dict[str, tuple[Any, str]]] = {
        "symmetric": (
            False,
            "use --loss.directions=query_to_doc,doc_to_query --loss.partition_mode=per_direction "
            "(what loss.symmetric=true was)",
        )
    }

    def __post_init__(self):
        require(
            self.name != "infonce",
            "loss.name",
            "must be 'info_nce', not 'infonce' (one spelling): --loss.name=info_nce",
        )
        choice(self.name, "loss.name", ("info_nce", "siglip"))
        require(self.temperature > 0, "loss.temperature", f"must be > 0, got {self.temperature}")
        require(
            self.hcl_beta == -1.0 or self.hcl_beta >= 0,
            "loss.hcl_beta",
            f"must be >= 0 (the concentration of the hard-negative weights), or -1 for off, got {self.hcl_beta}",
        )
        choice(self.partition_mode, "loss.partition_mode", V.PARTITION_MODES)
        choice(self.hardness_mode, "loss.hardness_mode", ("none", *V.HARDNESS_MODES[1:]))
        kwargs = self.loss_kwargs()  # each value checked as retrieval_loss checks it
        try:
            V.check_directions(kwargs["directions"], self.partition_mode)
            V.check_hardness(kwargs["hardness_mode"], self.hardness_strength)
            V.check_hcl(kwargs["hcl_beta"], self.hcl_tau_plus)
            V.check_matryoshka(kwargs["matryoshka_dims"], kwargs["matryoshka_weights"], None, True)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"loss: {err} (the loss.* keys of the same names)") from None
        if self.name == "siglip" and kwargs != RetrievalLossConfig().loss_kwargs():
            raise ConfigError(
                "loss.directions, partition_mode, hardness_*, hcl_* and matryoshka_* are retrieval_loss's "
                "(loss.name=info_nce); loss.name=siglip takes none of them"
            )
        try:  # the combinations retrieval_loss refuses, refused here before any work
            width = max(kwargs["matryoshka_dims"] or [2])
            x = torch.arange(1.0, 2 * width + 1).reshape(2, width)  # (2, width), no zero prefix
            retrieval_loss(x, x, x[:1], 1.0, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"loss: {err}") from None

    def loss_kwargs(self) -> dict[str, Any]:
        """The feature arguments of :func:`contrastive.retrieval_loss`, from these settings."""

        def items(text: str, typ: type, key: str) -> list | None:
            parts = [t.strip() for t in text.split(",") if t.strip()]
            try:
                return [typ(t) for t in parts] or None
            except ValueError:
                raise ConfigError(
                    f"loss.{key} expects comma-separated {typ.__name__}s such as 256,128,64, got {text!r}"
                ) from None

        return {
            "directions": tuple(t.strip() for t in self.directions.split(",") if t.strip()),
            "partition_mode": self.partition_mode,
            "hardness_mode": None if self.hardness_mode == "none" else self.hardness_mode,
            "hardness_strength": self.hardness_strength,
            "hcl_beta": None if self.hcl_beta == -1.0 else self.hcl_beta,
            "hcl_tau_plus": self.hcl_tau_plus,
            "matryoshka_dims": items(self.matryoshka_dims, int, "matryoshka_dims"),
            "matryoshka_weights": items(self.matryoshka_weights, float, "matryoshka_weights"),
        }


@dataclasses.dataclass
class RetrievalEvalConfig:
    """Held-out ranking evaluation."""

    every: int = 0  # evaluate (validation and test) every this many epochs (0: only at the end)
    baselines: bool = True  # BM25, TF-IDF and the random encoder
    fusion_k: float = 60.0  # reciprocal-rank fusion constant
    fusion_depth: int = 100  # each system's top documents that take part in the fusion
    batch_size: int = 512
    threads: int = 0

    def __post_init__(self):
        require(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        require(
            self.fusion_k >= 0 and self.fusion_depth >= 1,
            "eval.fusion_k",
            f"must be >= 0 and eval.fusion_depth >= 1, got {self.fusion_k} and {self.fusion_depth}",
        )
        require(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclasses.dataclass
class TextOptimConfig(OptimConfig):
    """The shared optimiser settings with the retrieval defaults and the fused AdamW kernel."""

    name: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    fused: bool = True  # adamw: torch's fused kernel (a large embedding table updates several times faster)


def _train() -> TrainConfig:
    return TrainConfig(epochs=6, batch_size=256)


@dataclasses.dataclass
class RetrievalConfig:
    """Every setting of a retrieval run, one section per concern."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)
    pairs: PairsConfig = dataclasses.field(default_factory=PairsConfig)
    model: TextModelConfig = dataclasses.field(default_factory=TextModelConfig)
    optim: TextOptimConfig = dataclasses.field(default_factory=TextOptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=_train)
    loss: RetrievalLossConfig = dataclasses.field(default_factory=RetrievalLossConfig)
    eval: RetrievalEvalConfig = dataclasses.field(default_factory=RetrievalEvalConfig)
    dist: DistConfig = dataclasses.field(default_factory=DistConfig)

    def __post_init__(self):
        if self.model.encoder in ("bag", "transformer"):  # the width is known here (hf: when built)
            check_prefixes(self.loss, self.model.dim, "model.dim")


def check_prefixes(loss: RetrievalLossConfig, width: int, what: str) -> None:
    dims = loss.loss_kwargs()["matryoshka_dims"] or []
    if any(d > width for d in dims):
        raise ConfigError(
            f"loss.matryoshka_dims={loss.matryoshka_dims} has prefixes wider than the embeddings "
            f"({what} = {width}); use dims <= {width}"
        )
