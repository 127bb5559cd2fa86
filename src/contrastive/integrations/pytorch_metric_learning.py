r"""Drop-in replacements for pytorch-metric-learning's ``NTXentLoss`` and ``SupConLoss`` (2.9):
the same constructor defaults, the same call ``loss(embeddings, labels, indices_tuple=None,
ref_emb=None, ref_labels=None)`` and the same results for any labels, on this library's
blockwise engine (no ``N x N`` matrix, where pytorch-metric-learning holds several). Nothing is
imported from pytorch-metric-learning; change one import line::

    from pytorch_metric_learning.losses import NTXentLoss, SupConLoss           # before
    from contrastive.integrations.pytorch_metric_learning import NTXentLoss, SupConLoss  # after

What pytorch-metric-learning computes, and what runs here:

* ``NTXentLoss``: one term per positive pair (a, p) (equal labels, a != p) against the
  anchor's negatives only (other labels), averaged over the pairs; 0 without a positive or
  a negative pair. The engine's pair NCE objective (:mod:`contrastive.ops.pair_nce`).
* ``SupConLoss``: :func:`contrastive.supcon_loss` per row, reduced as its default
  ``AvgNonZeroReducer`` does (the mean over rows whose loss is above 0); 0 when the batch has
  no positive pair or no negative pair (one label only), where
  :func:`contrastive.supcon_loss` alone would give each row's loss over its positives.

Supported options: ``distance`` ``None`` / ``CosineSimilarity()`` / ``DotProductSimilarity()``
(cosine, the default) or ``DotProductSimilarity(normalize_embeddings=False)`` (dot products);
``reducer`` ``None`` or the loss's default reducer (and ``MeanReducer()`` for ``SupConLoss``);
``collect_stats`` (no statistics are recorded). Refused with a ``ValueError``:
``indices_tuple`` (miners), ``ref_emb`` / ``ref_labels``, other distances and reducers, and
``embedding_regularizer``. Differences at the edges: a zero embedding is an error here
(pytorch-metric-learning's normalisation turns it into a zero vector), and its ``+ tiny``
inside the NT-Xent log (which caps a pair's loss at -log(finfo.tiny), 87.3 in float32, when a
pair's probability underflows, e.g. below temperature 0.023 for opposite unit vectors) is not
reproduced: the loss here stays the exact -log p.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..functional import supcon_loss
from ..ops import validation as V
from ..ops.engine import run as run_engine
from ..ops.pair_nce import pair_nce_objective
from ..ops.tiles import check_block_size

__all__ = ["NTXentLoss", "SupConLoss"]

KNOWN_OPTIONS = ("distance", "reducer", "collect_stats", "embedding_regularizer", "embedding_reg_weight")


def _normalize_of(distance: Any) -> bool:
    """normalize= for a pytorch-metric-learning distance object (checked by its class name)."""
    if distance is None:
        return True
    name = type(distance).__name__
    if name in ("CosineSimilarity", "DotProductSimilarity") and getattr(distance, "power", 1) == 1:
        normalize = bool(getattr(distance, "normalize_embeddings", True))
        if not normalize or getattr(distance, "p", 2) == 2:
            return normalize
    raise ValueError(
        f"distance={name}(...) is not supported by contrastive's drop-in (it runs on cosine or dot "
        f"products only); use distance=None or CosineSimilarity() (cosine), or "
        f"DotProductSimilarity(normalize_embeddings=False) (dot products), or the "
        f"pytorch_metric_learning loss itself"
    )


def _reducer_ok(reducer: Any, allowed: dict[str, dict[str, Any]]) -> str:
    """The reducer's class name when it is one of ``allowed`` with the given attributes."""
    if reducer is None:
        return next(iter(allowed))
    name = type(reducer).__name__
    if name in allowed and all(getattr(reducer, k, None) == v for k, v in allowed[name].items()):
        return name
    raise ValueError(
        f"reducer={name}(...) is not supported by contrastive's drop-in; use reducer=None (the "
        f"default, {next(iter(allowed))}) or one of {sorted(allowed)}, or the pytorch_metric_learning "
        f"loss itself"
    )


class _PMLLoss(nn.Module):
    """The calling convention and option checks both losses share."""

    REDUCERS: dict[str, dict[str, Any]] = {}

    def __init__(self, temperature: float, **kwargs: Any):
        super().__init__()
        unknown = sorted(set(kwargs) - set(KNOWN_OPTIONS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        if kwargs.get("embedding_regularizer") is not None:
            raise ValueError(
                "embedding_regularizer is not supported by contrastive's drop-in; add the "
                "regulariser's term to the loss yourself, or use the pytorch_metric_learning loss"
            )
        self.temperature = V.check_temperature(temperature)
        self.distance = kwargs.get("distance")
        self.normalize = _normalize_of(self.distance)
        self.reducer = kwargs.get("reducer")
        self.reducer_name = _reducer_ok(self.reducer, self.REDUCERS)
        self.collect_stats = kwargs.get("collect_stats")
        self.embedding_regularizer = None
        self.embedding_reg_weight = kwargs.get("embedding_reg_weight", 1)

    def _inputs(
        self, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any
    ) -> torch.Tensor:
        name = type(self).__name__
        if indices_tuple is not None:
            raise ValueError(
                f"{name}: indices_tuple (a miner's pairs or triplets) is not supported by "
                f"contrastive's drop-in, which uses every pair of the batch; drop the miner, or "
                f"use the pytorch_metric_learning loss for mined pairs"
            )
        if ref_emb is not None or ref_labels is not None:
            raise ValueError(
                f"{name}: ref_emb / ref_labels are not supported by contrastive's drop-in; pass "
                f"one batch of embeddings with its labels"
            )
        if labels is None:
            raise ValueError(f"{name}: labels are required (one integer class label per embedding)")
        V.check_tensor("embeddings", embeddings, 2)
        if isinstance(labels, torch.Tensor):
            labels = labels.to(embeddings.device)  # as pytorch-metric-learning does
        labels = V.check_ids("labels", labels, embeddings.shape[0], embeddings, "class labels")
        V.check_finite("embeddings", embeddings)
        if self.normalize:
            V.check_nonzero_rows("embeddings", embeddings)
        return labels

    def _temperature(self, ref: torch.Tensor) -> float | torch.Tensor:
        return V.check_temperature_device(V.check_temperature(self.temperature), ref)

    @staticmethod
    def _zero(embeddings: torch.Tensor) -> torch.Tensor:
        return torch.sum(embeddings * 0)  # pytorch-metric-learning's zero loss (zero gradients)


class NTXentLoss(_PMLLoss):
    r"""pytorch-metric-learning's ``NTXentLoss`` for any labels, on the engine.

    .. math::

        \mathcal L = \frac{1}{|\mathcal P|} \sum_{(a, p) \in \mathcal P}
            -\log \frac{e^{s_{ap}/\tau}}{e^{s_{ap}/\tau} + \sum_{n : y_n \ne y_a} e^{s_{an}/\tau}},
        \qquad \mathcal P = \{(a, p) : a \ne p,\ y_a = y_p\}

    with :math:`s` the cosine similarity (or the dot product, see ``distance``); 0 when the
    batch has no positive pair. With two views per sample and one label per sample it is
    SimCLR's NT-Xent. Computed blockwise with its analytic gradient, O(N d) memory
    (derivation: ``docs/derivations/pair_nce.md``).

    Args:
        temperature: tau > 0 (pytorch-metric-learning's default 0.07); a float or a scalar tensor.
        **kwargs: ``distance``, ``reducer``, ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight`` as in pytorch-metric-learning, where supported (see the
            module docstring).

    Shape:
        embeddings: ``(N, d)``; labels: ``(N,)``; output: scalar.

    Raises:
        ValueError: an unsupported option or argument (``indices_tuple``, ``ref_emb``,
            ``ref_labels``, a distance or reducer the engine does not run), missing labels,
            bad embeddings or labels, temperature <= 0.

    Examples:
        >>> import torch
        >>> from contrastive.integrations.pytorch_metric_learning import NTXentLoss
        >>> e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(NTXentLoss(temperature=1.0)(e, torch.tensor([0, 0, 1])).item(), 4)  # log(1 + 1/e)
        0.3133
    """

    REDUCERS = {"MeanReducer": {}}

    def __init__(self, temperature: float = 0.07, **kwargs: Any):
        super().__init__(temperature, **kwargs)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple: Any = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        labels = self._inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        tau = self._temperature(embeddings)
        bs = check_block_size(None, embeddings.shape[0], embeddings.device)
        return run_engine(pair_nce_objective(labels, bs), [embeddings], tau, normalize=self.normalize)


class SupConLoss(_PMLLoss):
    r"""pytorch-metric-learning's ``SupConLoss`` (Khosla et al. 2020) for any labels, on the engine.

    .. math::

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{e^{s_{ip}/\tau}}{\sum_{a \ne i} e^{s_{ia}/\tau}},
        \qquad \mathcal L = \operatorname{mean}\{\ell_i : \ell_i > 0\}

    :func:`contrastive.supcon_loss` per row (``reduction='none'``), then pytorch-metric-learning's
    ``AvgNonZeroReducer``; 0 when the batch has no positive pair or only one label.

    Args:
        temperature: tau > 0 (pytorch-metric-learning's default 0.1); a float or a scalar tensor.
        **kwargs: as in :class:`NTXentLoss`; ``reducer`` may also be ``MeanReducer()`` (the mean
            over every row, 0 for rows without a positive).

    Shape:
        embeddings: ``(N, d)``; labels: ``(N,)``; output: scalar.

    Raises:
        ValueError: as in :class:`NTXentLoss`.

    Examples:
        >>> import torch
        >>> from contrastive.integrations.pytorch_metric_learning import SupConLoss
        >>> e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> round(SupConLoss(temperature=1.0)(e, torch.tensor([0, 0, 1, 1])).item(), 4)  # log(1 + 2/e)
        0.5514
    """

    REDUCERS = {"AvgNonZeroReducer": {"low": 0, "high": None}, "MeanReducer": {}}

    def __init__(self, temperature: float = 0.1, **kwargs: Any):
        super().__init__(temperature, **kwargs)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple: Any = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        labels = self._inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        tau = self._temperature(embeddings)
        _, cls = torch.unique(labels, return_inverse=True)
        counts = torch.bincount(cls)
        if bool((counts < 2).all()) or counts.shape[0] < 2:  # no positive pair, or no negative pair
            return self._zero(embeddings)
        per_row = supcon_loss(embeddings, labels, tau, normalize=self.normalize, reduction="none")  # (N,)
        if self.reducer_name == "MeanReducer":
            return per_row.mean()
        kept = per_row > 0  # AvgNonZeroReducer: the rows whose loss is above 0
        n_kept = int(kept.sum())
        if n_kept == 0:
            return self._zero(embeddings)
        return torch.where(kept, per_row, torch.zeros_like(per_row)).sum() / n_kept
