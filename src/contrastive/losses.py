"""Thin ``nn.Module`` wrappers around :mod:`contrastive.functional`.

Each module stores its hyper-parameters and calls the functional form; see there for
the math. ``CosineMetric`` holds the learnable map or symmetric matrix of CSML
(Nguyen and Bai 2010; ``docs/derivations/cosine_similarity.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import functional
from .ops import validation as V
from .ops.cosine_similarity import packed_to_full

__all__ = [
    "ContrastiveLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "SupConLoss",
    "RetrievalLoss",
    "ClipLoss",
    "SigLIPLoss",
    "CosineMetric",
]


class ContrastiveLoss(nn.Module):
    """Margin contrastive loss module; see :func:`contrastive.functional.contrastive_loss`.

    ``ContrastiveLoss(margin=1.0, *, reduction="mean")``: ``reduction`` is keyword-only, as in
    the other loss modules (passing it positionally warns and works until the next release).

    Examples:
        >>> import torch
        >>> from contrastive import ContrastiveLoss
        >>> loss = ContrastiveLoss(margin=2.0)
        >>> loss(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.0]))  # (2 - sqrt 2)^2 / 2
        tensor(0.1716)
    """

    def __init__(self, margin: float = 1.0, *, reduction: str = "mean"):
        super().__init__()
        self.margin = V.check_margin(margin)
        self.reduction = V.check_reduction(reduction)

    def forward(self, u: torch.Tensor, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return functional.contrastive_loss(u, v, y, margin=self.margin, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class _Matryoshka:
    """``matryoshka_dims`` / ``matryoshka_weights`` of a Module form (the width is checked per call)."""

    matryoshka_dims: tuple[int, ...] | None
    matryoshka_weights: tuple[float, ...] | None

    def _set_matryoshka(self, dims: Any, weights: Any, normalize: bool) -> None:
        V.check_matryoshka(dims, weights, None, normalize)
        self.matryoshka_dims = None if dims is None else tuple(dims)
        self.matryoshka_weights = None if weights is None else tuple(weights)

    def _matryoshka(self) -> dict[str, Any]:
        return dict(matryoshka_dims=self.matryoshka_dims, matryoshka_weights=self.matryoshka_weights)

    def _matryoshka_repr(self) -> str:
        return "" if self.matryoshka_dims is None else f", matryoshka_dims={self.matryoshka_dims}"


def _dtype(learned: bool) -> torch.dtype | None:
    """A learned scalar follows the default dtype (and the module's ``.to``); a fixed one is
    kept in float64 so that no input dtype loses precision to it."""
    return None if learned else torch.float64


def _value(x: torch.Tensor, ref: torch.Tensor) -> float | torch.Tensor:
    """A scalar for the loss: a Python float when fixed, on ``ref``'s device when learned."""
    return x.to(ref.device) if x.requires_grad else float(x)


class _Temperature(nn.Module):
    """A temperature that is a fixed float or a parameter stored as log tau."""

    learn_temperature: bool
    log_temperature: nn.Parameter  # when learned
    _temperature: float  # when fixed: a Python float, exact in any input dtype (float64 included)

    def _init_temperature(self, temperature: float, learn: bool) -> None:
        V.check_temperature(temperature)
        self.learn_temperature = bool(learn)
        if learn:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(float(temperature))))
        else:
            self._temperature = float(temperature)

    @property
    def temperature(self) -> float | torch.Tensor:
        return self.log_temperature.exp() if self.learn_temperature else self._temperature

    def _temperature_on(self, ref: torch.Tensor) -> float | torch.Tensor:
        temperature = self.temperature
        return temperature.to(ref.device) if isinstance(temperature, torch.Tensor) else temperature


class InfoNCELoss(_Matryoshka, nn.Module):
    """InfoNCE / NT-Xent of two views ``loss(z1, z2)``; see :func:`contrastive.functional.info_nce`.

    Args:
        temperature: initial tau.
        learn_temperature: make tau a parameter (stored as log tau, as CLIP does).
        exclude_self, normalize, reduction: as in :func:`~contrastive.functional.info_nce`.
        decoupled: decoupled contrastive learning (the positive left out of the denominator).
        hcl_beta, hcl_tau_plus: Robinson et al.'s hard-negative estimator (off by default).
        check_finite, block_size, backend: passed to :func:`~contrastive.functional.info_nce`
            (the NaN/Inf check, the engine's tile size, ``'auto' | 'torch' | 'triton' | 'dense'``).
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in
            :func:`~contrastive.functional.nt_xent` (``None``: off).

    Examples:
        >>> import torch
        >>> from contrastive import InfoNCELoss
        >>> crit = InfoNCELoss(temperature=0.5)
        >>> z1 = torch.randn(16, 8, requires_grad=True); z2 = torch.randn(16, 8)
        >>> crit(z1, z2).backward(); z1.grad.shape
        torch.Size([16, 8])
    """

    log_temperature: nn.Parameter  # when learned
    _temperature: float  # when fixed: a Python float, exact in any input dtype (float64 included)

    def __init__(
        self,
        temperature: float = 0.5,
        *,
        learn_temperature: bool = False,
        exclude_self: bool = True,
        normalize: bool = True,
        reduction: str = "mean",
        decoupled: bool = False,
        hcl_beta: float | None = None,
        hcl_tau_plus: float = 0.0,
        check_finite: bool = True,
        block_size: int | None = None,
        backend: str = "auto",
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        self._set_matryoshka(matryoshka_dims, matryoshka_weights, normalize)
        self.decoupled = bool(decoupled)
        V.check_hcl(hcl_beta, hcl_tau_plus)
        self.hcl_beta, self.hcl_tau_plus = hcl_beta, hcl_tau_plus
        V.check_temperature(temperature)
        self.check_finite = check_finite
        self.block_size = block_size
        self.backend = backend
        self.learn_temperature = learn_temperature
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(float(temperature))))
        else:
            self._temperature = float(temperature)
        self.exclude_self = exclude_self
        self.normalize = normalize
        self.reduction = V.check_reduction(reduction)

    @property
    def temperature(self) -> float | torch.Tensor:
        return self.log_temperature.exp() if self.learn_temperature else self._temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        temperature = self.temperature
        if isinstance(temperature, torch.Tensor):
            temperature = temperature.to(z1.device)
        return functional.info_nce(
            z1,
            z2,
            temperature,
            exclude_self=self.exclude_self,
            normalize=self.normalize,
            reduction=self.reduction,
            decoupled=self.decoupled,
            hcl_beta=self.hcl_beta,
            hcl_tau_plus=self.hcl_tau_plus,
            check_finite=self.check_finite,
            block_size=self.block_size,
            backend=self.backend,
            **self._matryoshka(),
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={float(self.temperature):.4g}, learn_temperature={self.learn_temperature}, "
            f"exclude_self={self.exclude_self}, normalize={self.normalize}, decoupled={self.decoupled}"
            + self._matryoshka_repr()
        )


class NTXentLoss(InfoNCELoss):
    """SimCLR's name for :class:`InfoNCELoss` (same arguments)."""


class SupConLoss(_Matryoshka, _Temperature):
    """Supervised contrastive loss ``loss(z, labels)``; see :func:`contrastive.functional.supcon_loss`.

    Args:
        temperature: initial tau (0.1, as in Khosla et al.).
        learn_temperature: make tau a parameter (stored as log tau).
        normalize, reduction: as in :func:`~contrastive.functional.supcon_loss`.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in
            :func:`~contrastive.functional.nt_xent` (``None``: off).

    Examples:
        >>> import torch
        >>> from contrastive import SupConLoss
        >>> z = torch.randn(8, 4, requires_grad=True); y = torch.tensor([0, 1, 2, 3] * 2)
        >>> SupConLoss()(z, y).backward(); z.grad.shape
        torch.Size([8, 4])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        learn_temperature: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        self._init_temperature(temperature, learn_temperature)
        self._set_matryoshka(matryoshka_dims, matryoshka_weights, normalize)
        self.normalize = normalize
        self.reduction = V.check_reduction(reduction)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return functional.supcon_loss(
            z,
            labels,
            self._temperature_on(z),
            normalize=self.normalize,
            reduction=self.reduction,
            **self._matryoshka(),
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={float(self.temperature):.4g}, learn_temperature={self.learn_temperature}"
            + self._matryoshka_repr()
        )


class RetrievalLoss(_Matryoshka, _Temperature):
    """Retrieval loss with hard negatives ``loss(anchors, positives, negatives=None,
    positive_ids=None)``; see :func:`contrastive.functional.retrieval_loss`.

    Args:
        temperature: initial tau (0.05, as sentence-transformers' scale 20).
        learn_temperature: make tau a parameter (stored as log tau).
        directions, partition_mode, hardness_mode, hardness_strength: as in
            :func:`~contrastive.functional.retrieval_loss`.
        hcl_beta, hcl_tau_plus, guide_margin, guide_margin_strategy: as there too.
        contrast_anchors, contrast_positives, normalize, reduction, block_size: as there too (the
            guide embeddings themselves are per batch: ``forward(..., guide=...)``).
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in
            :func:`~contrastive.functional.nt_xent` (``None``: off).

    Examples:
        >>> import torch
        >>> from contrastive import RetrievalLoss
        >>> a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 2, 8)
        >>> RetrievalLoss()(a, p, n).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        learn_temperature: bool = False,
        directions: Sequence[str] = ("query_to_doc",),
        partition_mode: str = "joint",
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
        hcl_beta: float | None = None,
        hcl_tau_plus: float = 0.0,
        guide_margin: float = 0.0,
        guide_margin_strategy: str = "absolute",
        contrast_anchors: bool = False,
        contrast_positives: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
        block_size: int | None = None,
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        self._init_temperature(temperature, learn_temperature)
        self._set_matryoshka(matryoshka_dims, matryoshka_weights, normalize)
        self.directions = V.check_directions(directions, partition_mode)
        self.partition_mode = partition_mode
        self.hardness_mode, self.hardness_strength = V.check_hardness(hardness_mode, hardness_strength)
        V.check_hcl(hcl_beta, hcl_tau_plus)
        self.hcl_beta, self.hcl_tau_plus = hcl_beta, hcl_tau_plus
        self.guide_margin, self.guide_margin_strategy = guide_margin, guide_margin_strategy
        self.contrast_anchors = V.check_bool("contrast_anchors", contrast_anchors)
        self.contrast_positives = V.check_bool("contrast_positives", contrast_positives)
        self.normalize, self.block_size = normalize, block_size
        self.reduction = V.check_reduction(reduction)

    def forward(
        self,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None = None,
        positive_ids: torch.Tensor | None = None,
        guide: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        return functional.retrieval_loss(
            anchors,
            positives,
            negatives,
            self._temperature_on(anchors),
            directions=self.directions,
            partition_mode=self.partition_mode,
            hardness_mode=self.hardness_mode,
            hardness_strength=self.hardness_strength,
            hcl_beta=self.hcl_beta,
            hcl_tau_plus=self.hcl_tau_plus,
            guide=guide,
            guide_margin=self.guide_margin,
            guide_margin_strategy=self.guide_margin_strategy,
            contrast_anchors=self.contrast_anchors,
            contrast_positives=self.contrast_positives,
            positive_ids=positive_ids,
            normalize=self.normalize,
            reduction=self.reduction,
            block_size=self.block_size,
            **self._matryoshka(),
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={float(self.temperature):.4g}, learn_temperature={self.learn_temperature}, "
            f"directions={self.directions}, partition_mode={self.partition_mode!r}" + self._matryoshka_repr()
        )


class ClipLoss(_Matryoshka, nn.Module):
    """Two-tower (CLIP) loss ``loss(a, b)`` with a learnable temperature; see
    :func:`contrastive.functional.clip_loss`.

    The temperature is stored as CLIP's logit scale, ``logit_scale = log(1 / tau)``,
    initialised at tau = 0.07; the temperature used is clamped below at ``min_temperature``
    (CLIP clamps the logit scale at log 100, i.e. tau >= 0.01).

    Args:
        temperature: initial tau.
        learn_temperature: make the logit scale a parameter (default).
        min_temperature: lower clamp of tau (``None``: no clamp).
        normalize, reduction, hcl_beta, hcl_tau_plus: as in
            :func:`~contrastive.functional.clip_loss`.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in
            :func:`~contrastive.functional.nt_xent` (``None``: off).

    Examples:
        >>> import torch
        >>> from contrastive import ClipLoss
        >>> crit = ClipLoss()
        >>> crit(torch.randn(4, 8), torch.randn(4, 8)).backward(); crit.logit_scale.grad is not None
        True
    """

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        learn_temperature: bool = True,
        min_temperature: float | None = 0.01,
        normalize: bool = True,
        reduction: str = "mean",
        hcl_beta: float | None = None,
        hcl_tau_plus: float = 0.0,
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        self._set_matryoshka(matryoshka_dims, matryoshka_weights, normalize)
        V.check_temperature(temperature)
        V.check_hcl(hcl_beta, hcl_tau_plus)
        self.hcl_beta, self.hcl_tau_plus = hcl_beta, hcl_tau_plus
        # fixed: float64, passed to the loss as a Python float (exact for float64 inputs)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / float(temperature)), dtype=_dtype(learn_temperature)),
            requires_grad=bool(learn_temperature),
        )
        self.min_temperature = (
            None if min_temperature is None else float(V.check_temperature(min_temperature))
        )
        self.normalize = normalize
        self.reduction = V.check_reduction(reduction)

    @property
    def temperature(self) -> torch.Tensor:
        s: torch.Tensor = self.logit_scale
        if self.min_temperature is not None:
            s = s.clamp(max=math.log(1.0 / self.min_temperature))  # tau >= min_temperature
        return torch.exp(-s)  # tau = 1 / exp(logit_scale)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return functional.clip_loss(
            a,
            b,
            _value(self.temperature, a),
            normalize=self.normalize,
            reduction=self.reduction,
            hcl_beta=self.hcl_beta,
            hcl_tau_plus=self.hcl_tau_plus,
            **self._matryoshka(),
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature.item():.4g}, learn={self.logit_scale.requires_grad}"
            + self._matryoshka_repr()
        )


class SigLIPLoss(_Matryoshka, nn.Module):
    """SigLIP's sigmoid loss ``loss(a, b)`` with learnable temperature and bias; see
    :func:`contrastive.functional.siglip_loss`.

    Initialised as in the paper: tau = 0.1 (stored as the logit scale t' = log(1 / tau) = log 10,
    the learned parameter) and bias b = -10.

    Args:
        temperature: initial tau.
        bias: initial bias.
        learn_temperature, learn_bias: make them parameters (default both).
        normalize, reduction: as in :func:`~contrastive.functional.siglip_loss`.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in
            :func:`~contrastive.functional.nt_xent` (``None``: off).

    Examples:
        >>> import torch
        >>> from contrastive import SigLIPLoss
        >>> crit = SigLIPLoss()
        >>> crit(torch.randn(4, 8), torch.randn(4, 8)).backward(); crit.bias.grad is not None
        True
    """

    def __init__(
        self,
        temperature: float = 0.1,
        bias: float = -10.0,
        *,
        learn_temperature: bool = True,
        learn_bias: bool = True,
        normalize: bool = True,
        reduction: str = "mean",
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        V.check_temperature(temperature)
        self._set_matryoshka(matryoshka_dims, matryoshka_weights, normalize)
        # a fixed one: float64, passed to the loss as a Python float (exact for float64 inputs)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / float(temperature)), dtype=_dtype(learn_temperature)),
            requires_grad=bool(learn_temperature),
        )
        self.bias = nn.Parameter(
            torch.tensor(float(bias), dtype=_dtype(learn_bias)), requires_grad=bool(learn_bias)
        )
        self.normalize = normalize
        self.reduction = V.check_reduction(reduction)

    @property
    def temperature(self) -> torch.Tensor:
        return torch.exp(-self.logit_scale)  # tau = 1 / exp(t')

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return functional.siglip_loss(
            a,
            b,
            _value(self.temperature, a),
            _value(self.bias, a),
            normalize=self.normalize,
            reduction=self.reduction,
            **self._matryoshka(),
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature.item():.4g}, bias={self.bias.item():.4g}"
            + self._matryoshka_repr()
        )


class CosineMetric(nn.Module):
    """Learned cosine similarity ``sim(x, y)`` under a map ``M`` or a symmetric PSD matrix ``A``.

    ``form='map'``: parameter ``M`` of shape ``(out_dim, in_dim)`` (identity-initialised when
    square, orthonormal rows otherwise); ``sim = <Mx, My> / (|Mx| |My|)``.
    ``form='symmetric'``: parameter ``a``, the ``d(d+1)/2`` upper-triangular entries of ``A``
    (identity-initialised); ``sim = y^T A x / sqrt(x^T A x  y^T A y)``; gradients are the
    seed's tied form. Call :meth:`project_psd` after an optimiser step to keep ``A`` PSD.

    Examples:
        >>> import torch
        >>> from contrastive import CosineMetric
        >>> metric = CosineMetric(3, form="symmetric")
        >>> metric(torch.tensor([[1.0, 0, 0]]), torch.tensor([[1.0, 1, 0]])).detach()
        tensor([0.7071])
        >>> metric.matrix().shape
        torch.Size([3, 3])
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, form: str = "map"):
        super().__init__()
        if not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"in_dim must be a positive int, got {in_dim!r}")
        if form not in ("map", "symmetric"):
            raise ValueError(f"form must be 'map' or 'symmetric', got {form!r}")
        out_dim = in_dim if out_dim is None else out_dim
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be a positive int, got {out_dim!r}")
        if form == "symmetric" and out_dim != in_dim:
            raise ValueError("form='symmetric' learns a (d, d) matrix: leave out_dim unset")
        self.in_dim, self.out_dim, self.form = in_dim, out_dim, form
        if form == "map":
            M = torch.empty(out_dim, in_dim)
            nn.init.orthogonal_(M) if out_dim != in_dim else M.copy_(torch.eye(in_dim))
            self.M = nn.Parameter(M)
        else:
            iu = torch.triu_indices(in_dim, in_dim)
            self.a = nn.Parameter((iu[0] == iu[1]).float())

    def matrix(self) -> torch.Tensor:
        """The metric ``A`` (``M^T M`` for the map form), ``(in_dim, in_dim)``."""
        if self.form == "map":
            return self.M.T @ self.M
        return packed_to_full(self.a, self.in_dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The learned cosine of each row pair, ``(B,)``, of ``x1`` and ``x2`` ``(B, in_dim)``"""
        if self.form == "map":
            return functional.cosine_similarity(x1, x2, M=self.M.to(x1.dtype))
        return functional.cosine_similarity(x1, x2, A=self.a.to(x1.dtype))

    @torch.no_grad()
    def project_psd(self, min_eigenvalue: float = 0.0) -> CosineMetric:
        """Clip the eigenvalues of ``A`` at ``min_eigenvalue`` (symmetric form; the map form is
        PSD by construction and is left unchanged). Returns ``self``."""
        if min_eigenvalue < 0:
            raise ValueError(f"min_eigenvalue must be >= 0, got {min_eigenvalue}")
        if self.form == "symmetric":
            A = packed_to_full(self.a.double(), self.in_dim)
            w, Q = torch.linalg.eigh(A)
            A = (Q * w.clamp_min(min_eigenvalue)) @ Q.T
            iu = torch.triu_indices(self.in_dim, self.in_dim)
            self.a.copy_(A[iu[0], iu[1]].to(self.a.dtype))
        return self

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, form={self.form!r}"
