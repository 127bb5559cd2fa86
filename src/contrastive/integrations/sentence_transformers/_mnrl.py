"""``MultipleNegativesRankingLoss`` and ``CachedMultipleNegativesRankingLoss`` of
sentence-transformers 6.3 on the engine (the cached one on :class:`contrastive.GradCache`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import (
    _validate_mini_batch_num_tokens,
    has_static_embedding_input,
)
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.util import cos_sim, similarity_fct_name
from torch import Tensor, nn

from ...gradcache import GradCache
from ._common import normalize_for, retrieval

logger = logging.getLogger(__name__)

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
HARDNESS_MODES = (None, "in_batch_negatives", "hard_negatives", "all_negatives")


class MultipleNegativesRankingLoss(nn.Module):
    r"""sentence-transformers' ``MultipleNegativesRankingLoss`` (InfoNCE with in-batch and hard
    negatives) computed by :func:`contrastive.functional.retrieval_loss`.

    Columns (anchor, positive, negative_1, ..., negative_n); for anchor :math:`a_i` with
    candidates :math:`c_j` (every positive and every negative of the batch)

    .. math::

        \ell_i = -\log \frac{e^{s \, \mathrm{sim}(a_i, p_i)}}{\sum_j e^{s \, \mathrm{sim}(a_i, c_j)}},
        \qquad \mathcal L = \frac1B \sum_i \ell_i,

    ``s = scale = 1 / temperature``. Like sentence-transformers, a duplicate of a text in the
    batch is an ordinary negative (no masking). ``directions``, ``partition_mode`` and
    ``hardness_*`` are sentence-transformers' and go to the engine's keywords of the same names.

    Args:
        model: the ``SentenceTransformer``.
        scale: multiplies the similarities (``1 / temperature``), > 0.
        similarity_fct: ``util.cos_sim`` (engine ``normalize=True``) or ``util.dot_score``
            (``normalize=False``).
        gather_across_devices: under ``torch.distributed``, this rank's anchors against every
            rank's documents (loss and gradients as sentence-transformers gives each rank).
        directions: any of ``"query_to_doc"`` (required), ``"query_to_query"``,
            ``"doc_to_query"``, ``"doc_to_doc"``.
        partition_mode: ``"joint"`` or ``"per_direction"``.
        hardness_mode: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or
            ``"all_negatives"``.
        hardness_strength: >= 0.

    Raises:
        ValueError: the refusals of sentence-transformers, and a ``similarity_fct`` other than
            the two above.

    Examples:
        A ``StaticEmbedding`` model on a four-word vocabulary, and sentence-transformers' loss
        beside ours:

        >>> import torch
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer import losses
        >>> from sentence_transformers.sentence_transformer.modules import StaticEmbedding
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from contrastive.integrations.sentence_transformers import MultipleNegativesRankingLoss
        >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2, "c": 3}, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> _ = torch.manual_seed(0)
        >>> model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=8)], device="cpu")
        >>> batch = [model.preprocess(["a b", "c", "a"]), model.preprocess(["b", "a c", "c c"])]
        >>> ours = MultipleNegativesRankingLoss(model, scale=20.0)(batch, None)
        >>> theirs = losses.MultipleNegativesRankingLoss(model, scale=20.0)(batch, None)
        >>> bool(torch.allclose(ours, theirs, rtol=1e-6))
        True
        >>> ours.backward()
    """

    def __init__(
        self,
        model: Any,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        directions: tuple[str, ...] = ("query_to_doc",),
        partition_mode: str = "joint",
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        if not scale > 0:
            raise ValueError("Scale must be a positive value.")
        self.scale = scale
        normalize_for(similarity_fct)
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        if not directions:
            raise ValueError("At least one direction must be specified.")
        bad = set(directions) - set(DIRECTIONS)
        if bad:
            raise ValueError(f"Invalid directions: {bad}. Valid: {set(DIRECTIONS)}")
        if "query_to_doc" not in directions:
            raise ValueError("'query_to_doc' direction is required (contains the positive pair).")
        self.directions = tuple(directions)
        if partition_mode not in ("joint", "per_direction"):
            raise ValueError(f"partition_mode must be 'joint' or 'per_direction', got {partition_mode}")
        if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
            raise ValueError(
                "partition_mode='per_direction' requires every direction's candidate pool to include the "
                "positive pair; 'query_to_query' and 'doc_to_doc' never include it. Use partition_mode='joint'."
            )
        self.partition_mode = partition_mode
        if hardness_mode not in HARDNESS_MODES:
            raise ValueError(f"hardness_mode must be one of {set(HARDNESS_MODES)}, got {hardness_mode!r}")
        self.hardness_mode = hardness_mode
        if hardness_strength < 0.0:
            raise ValueError("hardness_strength must be non-negative.")
        self.hardness_strength = hardness_strength
        if hardness_mode is not None and hardness_strength == 0.0:
            logger.warning(
                f"hardness_mode={hardness_mode!r} is set but hardness_strength=0.0, so hardness weighting has "
                "no effect. Set hardness_strength to a positive value to enable hardness weighting."
            )

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(
        self,
        embeddings: Sequence[Tensor],
        labels: Tensor | None = None,
        *,
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ) -> Tensor:
        """The loss of the columns' embeddings ``(B, d)`` each (``labels`` unused). With
        ``matryoshka_dims``: the weighted sum over the prefixes, each L2-normalised (what
        sentence-transformers' ``MatryoshkaLoss`` computes), in one engine pass."""
        if len(embeddings) < 2:
            raise ValueError(f"Expected at least 2 embeddings, got {len(embeddings)}")
        normalize = normalize_for(self.similarity_fct)
        keywords = self.engine_keywords()
        if matryoshka_dims is not None:
            # every prefix is normalised, whatever the similarity: dot products of unit prefixes are cosines
            normalize = True
            keywords.update(
                matryoshka_dims=tuple(matryoshka_dims), matryoshka_weights=tuple(matryoshka_weights)
            )
        return retrieval(
            embeddings[0],
            list(embeddings[1:]),
            1.0 / self.scale,
            normalize=normalize,
            gather=self.gather_across_devices,
            keywords=keywords,
        )

    def engine_keywords(self) -> dict[str, Any]:
        """The engine keywords of the settings that differ from plain query-to-document InfoNCE."""
        keywords: dict[str, Any] = {}
        if self.directions != ("query_to_doc",):
            keywords["directions"] = self.directions
            if self.partition_mode != "joint":  # one direction: both modes are the same softmax
                keywords["partition_mode"] = self.partition_mode
        if self.hardness_mode is not None and self.hardness_strength > 0.0:
            keywords["hardness_mode"] = self.hardness_mode
            keywords["hardness_strength"] = self.hardness_strength
        return keywords

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
        }

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    @property
    def citation(self) -> str:
        # the paper of the configured variant, as sentence-transformers names it
        return st_losses.MultipleNegativesRankingLoss.citation.fget(self)  # type: ignore[attr-defined]


_COLUMN = "__contrastive_column__"


class _Columns(nn.Module):
    """:class:`~contrastive.GradCache`'s encoder: embeds a chunk of rows of one column.

    GradCache splits tensors along their rows; the features that are not row tensors
    (settings, 0-d tensors) stay here, per column, and a row tensor of the column's index
    travels with each chunk."""

    def __init__(self, model: nn.Module, features: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.model = model
        self.extras: list[dict[str, Any]] = []
        self.inputs: list[dict[str, Tensor]] = []
        for i, f in enumerate(features):
            if "cu_seq_lens_q" in f:
                raise ValueError(
                    "contrastive's CachedMultipleNegativesRankingLoss splits a batch by rows and cannot split "
                    "flattened (unpadded) features; use padded batches or sentence_transformers.losses."
                    "CachedMultipleNegativesRankingLoss"
                )
            rows = {k: v for k, v in f.items() if isinstance(v, Tensor) and v.dim() > 0}
            sizes = {k: v.shape[0] for k, v in rows.items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(
                    f"contrastive's CachedMultipleNegativesRankingLoss splits a batch by rows, but column {i}'s "
                    f"features have different first dimensions {sizes}; use sentence_transformers.losses."
                    "CachedMultipleNegativesRankingLoss for such inputs"
                )
            n = next(iter(sizes.values()))
            rows[_COLUMN] = torch.full((n,), i, dtype=torch.long)
            self.inputs.append(rows)
            self.extras.append({k: v for k, v in f.items() if k not in rows})
        no_sync = getattr(model, "no_sync", None)
        if callable(no_sync):  # DDP: GradCache synchronises once, on the last chunk
            self.no_sync = no_sync

    def forward(self, chunk: dict[str, Tensor]) -> Tensor:
        chunk = dict(chunk)
        i = int(chunk.pop(_COLUMN)[0])
        return self.model({**chunk, **self.extras[i]})["sentence_embedding"]  # (rows, d)

    def embed_without_grad(self, chunk_size: int) -> list[Tensor]:
        """Every column's embeddings, ``chunk_size`` rows per forward, without a graph."""
        out = []
        with torch.no_grad():
            for rows in self.inputs:
                n = rows[_COLUMN].shape[0]
                out.append(
                    torch.cat(
                        [
                            self({k: v[s : s + chunk_size] for k, v in rows.items()})
                            for s in range(0, n, chunk_size)
                        ]
                    )
                )
        return out


class CachedMultipleNegativesRankingLoss(nn.Module):
    r"""sentence-transformers' ``CachedMultipleNegativesRankingLoss``: the loss of
    :class:`MultipleNegativesRankingLoss` with the encoder run ``mini_batch_size`` rows at a
    time by :class:`contrastive.GradCache` (its :meth:`~contrastive.GradCache.loss`: pass 2
    runs in the trainer's ``backward``, scaled by its ``grad_output``).

    ``model``, ``scale``, ``similarity_fct``, ``gather_across_devices``, ``directions``,
    ``partition_mode``, ``hardness_mode`` and ``hardness_strength`` are those of
    :class:`MultipleNegativesRankingLoss`.

    Args:
        mini_batch_size: rows per encoder call (GradCache balances the chunks: their sizes
            differ by at most one).
        mini_batch_num_tokens: must be ``None`` (a token budget per chunk is not supported).
        show_progress_bar: accepted; no progress bar is shown.

    Raises:
        ValueError: sentence-transformers' refusals (a ``StaticEmbedding`` model,
            ``mini_batch_num_tokens <= 0``), ``mini_batch_size < 1``, and any of
            :class:`MultipleNegativesRankingLoss`'s.
        NotImplementedError: ``mini_batch_num_tokens`` given.
    """

    _delegated = (
        "scale",
        "similarity_fct",
        "gather_across_devices",
        "directions",
        "partition_mode",
        "hardness_mode",
        "hardness_strength",
    )

    def __init__(
        self,
        model: Any,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        gather_across_devices: bool = False,
        directions: tuple[str, ...] = ("query_to_doc",),
        partition_mode: str = "joint",
        show_progress_bar: bool = False,
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
    ) -> None:
        super().__init__()
        if has_static_embedding_input(model):
            raise ValueError(
                "CachedMultipleNegativesRankingLoss is not compatible with a SentenceTransformer model based on a "
                "StaticEmbedding, whose inputs cannot be split into mini-batches along a batch dimension. "
                "Consider using MultipleNegativesRankingLoss instead (contrastive's needs no cache: it never "
                "holds the similarity matrix)."
            )
        _validate_mini_batch_num_tokens(mini_batch_num_tokens)
        if mini_batch_num_tokens is not None:
            raise NotImplementedError(
                "mini_batch_num_tokens is not supported by contrastive's CachedMultipleNegativesRankingLoss "
                "(GradCache splits by rows): pass mini_batch_size instead"
            )
        if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ValueError(
                f"mini_batch_size must be a positive int (rows per encoder call), got {mini_batch_size!r}"
            )
        self.model = model
        self.loss = MultipleNegativesRankingLoss(
            model,
            scale=scale,
            similarity_fct=similarity_fct,
            gather_across_devices=gather_across_devices,
            directions=directions,
            partition_mode=partition_mode,
            hardness_mode=hardness_mode,
            hardness_strength=hardness_strength,
        )
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def __setattr__(self, name: str, value: Any) -> None:
        # the hyperparameters live on the wrapped loss, as in sentence-transformers
        if name in self._delegated and isinstance(getattr(self, "loss", None), nn.Module):
            setattr(self.loss, name, value)
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in CachedMultipleNegativesRankingLoss._delegated:
            return getattr(self.loss, name)
        return super().__getattr__(name)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return self.cached_loss(sentence_features, labels)

    def cached_loss(
        self,
        sentence_features: Iterable[dict[str, Tensor]],
        labels: Tensor | None,
        *,
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ) -> Tensor:
        """The loss of the batch; its backward re-embeds the chunks (see the class)."""
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError(f"Expected at least 2 inputs, got {len(features)}")
        if type(getattr(self.model, "forward", None)).__name__ == "ForwardDecorator":
            # sentence-transformers' MatryoshkaLoss caches the model's outputs per call, which
            # the chunked forwards of the cache (and its re-embedding in backward) would scramble
            raise ValueError(
                "contrastive's CachedMultipleNegativesRankingLoss is wrapped in sentence-transformers' "
                "MatryoshkaLoss; wrap it in contrastive.integrations.sentence_transformers.MatryoshkaLoss"
            )
        columns = _Columns(self.model, features)

        def loss_fn(*embeddings: Tensor) -> Tensor:
            return self.loss.compute_loss_from_embeddings(
                list(embeddings),
                labels,
                matryoshka_dims=matryoshka_dims,
                matryoshka_weights=matryoshka_weights,
            )

        if not torch.is_grad_enabled():  # evaluation: no graph, nothing to cache
            return loss_fn(*columns.embed_without_grad(self.mini_batch_size))
        return GradCache(columns, self.mini_batch_size).loss(loss_fn, *columns.inputs)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "mini_batch_size": self.mini_batch_size,
            "mini_batch_num_tokens": self.mini_batch_num_tokens,
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
        }

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    @property
    def citation(self) -> str:
        return st_losses.CachedMultipleNegativesRankingLoss.citation.fget(self)  # type: ignore[attr-defined]
