"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023) on the engine; re-exported by
:mod:`contrastive.functional`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops import validation as V
from ..ops.common import Temperature
from ..ops.engine import run as run_engine
from ..ops.matryoshka_objectives import matryoshka_siglip_objective
from ..ops.siglip import siglip_objective
from ..ops.tiles import check_block_size
from ..ops.validation import check_common, check_pair, engine_backend


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: Temperature = 0.1,
    bias: Temperature = -10.0,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""The sigmoid loss of SigLIP (Zhai et al. 2023): every pair is a binary classification.

    .. math::

        \mathcal L = -\frac1B \sum_{i=1}^B \sum_{j=1}^B
            \log \sigma\big(y_{ij} (a_i \cdot b_j / \tau + \beta)\big),
        \qquad y_{ii} = 1,\; y_{ij} = -1 \ (i \ne j)

    No softmax, so no normaliser: one pass over the tiles gives loss and gradient together
    (:math:`\partial \ell / \partial S_{ij} = -y_{ij} \sigma(-y_{ij} S_{ij})`), and nothing per
    tile is kept, O(B d) memory. ``temperature`` and ``bias`` may be tensors that require grad
    (SigLIP learns both: :class:`~contrastive.SigLIPLoss`). Derivation:
    ``docs/derivations/siglip_loss.md``.

    Args:
        a: first tower's embeddings (e.g. images).
        b: second tower's embeddings (e.g. texts), row-aligned with ``a``.
        temperature: tau > 0 (SigLIP's logit scale is 1 / tau), float or scalar tensor.
        bias: the logit bias beta, float or scalar tensor (SigLIP starts at -10).
        normalize: L2-normalise rows.
        reduction: ``'mean'`` (the formula above: the sum divided by B) | ``'sum'`` |
            ``'none'`` (the B row sums).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own, all in one walk over the tiles
            (see :func:`~contrastive.functional.nt_xent`); needs ``normalize=True``.

    Shape:
        a, b: ``(B, d)``; output: scalar, or ``(B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``a``.

    Raises:
        TypeError, ValueError: bad types, shapes or devices, temperature <= 0, a non-finite
            bias, NaN/Inf, zero rows, bad reduction/block_size/backend.

    Examples:
        >>> import torch
        >>> from contrastive import siglip_loss
        >>> a = torch.eye(2)                 # S = [[1, 0], [0, 1]] at tau = 1, bias = 0
        >>> round(siglip_loss(a, a, 1.0, 0.0).item(), 4)   # softplus(-1) + softplus(0)
        1.0064

    References:
        Zhai, Mustafa, Kolesnikov, Beyer. Sigmoid Loss for Language Image Pre-Training. ICCV 2023.
    """
    check_pair("a", a, "b", b)
    temperature = V.check_param("temperature", temperature, a, True)
    bias = V.check_param("bias", bias, a, False)
    check_common(["a", "b"], [a, b], reduction, check_finite, normalize)
    prefixes = V.check_prefixes(["a", "b"], [a, b], matryoshka_dims, matryoshka_weights, normalize)
    engine_backend("siglip_loss", backend)
    bs = check_block_size(block_size, a.shape[0], a.device)
    build = siglip_objective(bs) if prefixes is None else matryoshka_siglip_objective(bs, prefixes)
    return run_engine(build, [a, b], temperature, bias=bias, normalize=normalize, reduction=reduction)
