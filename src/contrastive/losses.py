"""Thin ``nn.Module`` wrappers around :mod:`contrastive.functional`.

Each module stores its hyper-parameters and calls the functional form; see there for
the math. ``CosineMetric`` holds the learnable map or symmetric matrix of seed 003.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from . import _validation as V
from . import functional as F
from .ops.cosine_similarity import _packed_to_full

__all__ = ["ContrastiveLoss", "InfoNCELoss", "NTXentLoss", "CosineMetric"]


class ContrastiveLoss(nn.Module):
    """Margin contrastive loss module; see :func:`contrastive.functional.contrastive_loss`.

    Examples:
        >>> import torch
        >>> from contrastive import ContrastiveLoss
        >>> loss = ContrastiveLoss(margin=2.0)
        >>> loss(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.0]))  # (2 - sqrt 2)^2 / 2
        tensor(0.1716)
    """

    def __init__(self, margin: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.margin = V.check_margin(margin)
        self.reduction = V.check_reduction(reduction)

    def forward(self, u, v, y):
        return F.contrastive_loss(u, v, y, self.margin, self.reduction)

    def extra_repr(self):
        return f"margin={self.margin}, reduction={self.reduction!r}"


class InfoNCELoss(nn.Module):
    """InfoNCE / NT-Xent of two views ``loss(z1, z2)``; see :func:`contrastive.functional.info_nce`.

    Args:
        temperature: initial tau.
        learn_temperature: make tau a parameter (stored as log tau, as CLIP does).
        exclude_self, normalize, reduction: as in :func:`~contrastive.functional.info_nce`.

    Examples:
        >>> import torch
        >>> from contrastive import InfoNCELoss
        >>> crit = InfoNCELoss(temperature=0.5)
        >>> z1 = torch.randn(16, 8, requires_grad=True); z2 = torch.randn(16, 8)
        >>> crit(z1, z2).backward(); z1.grad.shape
        torch.Size([16, 8])
    """

    def __init__(self, temperature: float = 0.5, *, learn_temperature: bool = False,
                 exclude_self: bool = True, normalize: bool = True, reduction: str = "mean"):
        super().__init__()
        V.check_temperature(temperature)
        self.learn_temperature = learn_temperature
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(float(temperature))))
        else:
            self.register_buffer("_temperature", torch.tensor(float(temperature)), persistent=False)
        self.exclude_self = exclude_self
        self.normalize = normalize
        self.reduction = V.check_reduction(reduction)

    @property
    def temperature(self):
        return self.log_temperature.exp() if self.learn_temperature else float(self._temperature)

    def forward(self, z1, z2):
        t = self.temperature
        if isinstance(t, torch.Tensor):
            t = t.to(z1.device)
        return F.info_nce(z1, z2, t, exclude_self=self.exclude_self,
                          normalize=self.normalize, reduction=self.reduction)

    def extra_repr(self):
        return (f"temperature={float(self.temperature):.4g}, learn_temperature={self.learn_temperature}, "
                f"exclude_self={self.exclude_self}, normalize={self.normalize}")


class NTXentLoss(InfoNCELoss):
    """SimCLR's name for :class:`InfoNCELoss` (same arguments)."""


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

    def __init__(self, in_dim: int, out_dim: Optional[int] = None, form: str = "map"):
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
        return _packed_to_full(self.a, self.in_dim)

    def forward(self, x, y):
        if self.form == "map":
            return F.cosine_similarity(x, y, M=self.M.to(x.dtype))
        return F.cosine_similarity(x, y, A=self.a.to(x.dtype))

    @torch.no_grad()
    def project_psd(self, min_eigenvalue: float = 0.0) -> "CosineMetric":
        """Clip the eigenvalues of ``A`` at ``min_eigenvalue`` (symmetric form; the map form is
        PSD by construction and is left unchanged). Returns ``self``."""
        if min_eigenvalue < 0:
            raise ValueError(f"min_eigenvalue must be >= 0, got {min_eigenvalue}")
        if self.form == "symmetric":
            A = _packed_to_full(self.a.double(), self.in_dim)
            w, Q = torch.linalg.eigh(A)
            A = (Q * w.clamp_min(min_eigenvalue)) @ Q.T
            iu = torch.triu_indices(self.in_dim, self.in_dim)
            self.a.copy_(A[iu[0], iu[1]].to(self.a.dtype))
        return self

    def extra_repr(self):
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, form={self.form!r}"
