"""The objectives of the general blockwise engine: supervised contrastive, retrieval with hard
negatives, SigLIP's sigmoid loss. Validated public functions, re-exported by
:mod:`contrastive.functional` (``info_nce(..., decoupled=True)`` and ``clip_loss`` live there).

Each runs on the engine contract of :mod:`contrastive.ops.engine`: exact analytic gradients,
O(N d + block_size^2) memory (no N x N tensor, masks from O(N) id vectors per tile),
half-precision inputs computed in float32 and cast back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import _validation as V
from .ops.engine import run as run_engine
from .ops.retrieval import retrieval_objective
from .ops.siglip import siglip_objective
from .ops.supcon import supcon_objective
from .ops.tiles import check_block_size

__all__ = ["supcon_loss", "retrieval_loss", "siglip_loss"]

Scalar = float | torch.Tensor


def _engine_backend(name: str, backend: Any) -> str:
    """These objectives have no Triton kernel yet: 'auto' (on any device) and 'torch' run the
    torch engine."""
    if backend not in ("auto", "torch"):
        raise ValueError(
            f"backend for {name} must be 'auto' or 'torch' (there is no Triton kernel for it yet), "
            f"got {backend!r}"
        )
    return "torch"


def _check_pair(na: str, a: Any, nb: str, b: Any) -> None:
    V.check_tensor(na, a, 2)
    V.check_tensor(nb, b, 2)
    V.check_same_shape(na, a, nb, b)
    V.check_same_device(na, a, nb, b)
    if a.dtype != b.dtype:
        raise TypeError(f"{na} is {a.dtype} and {nb} is {b.dtype}; cast both to one dtype")


def _common(
    names: Sequence[str],
    tensors: Sequence[torch.Tensor],
    reduction: Any,
    check_finite: bool,
    normalize: bool,
) -> None:
    V.check_reduction(reduction)
    for n, t in zip(names, tensors):
        if check_finite:
            V.check_finite(n, t)
        if normalize:
            V.check_nonzero_rows(n, t.reshape(-1, t.shape[-1]))


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: Scalar = 0.1,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Supervised contrastive loss (Khosla et al. 2020, the "outside" form): every other row
    with the same label is a positive.

    .. math::

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \ne i} \exp(z_i \cdot z_a / \tau)},
        \qquad P(i) = \{p \ne i : y_p = y_i\}

    Rows without a positive contribute nothing: ``'mean'`` averages over the rows that have
    one (as pytorch-metric-learning does; 0 when none has), ``'none'`` gives 0 there. With two
    views per sample and distinct labels per sample it is NT-Xent. The positives cost O(N d):
    :math:`\sum_{p \in P(i)} z_i \cdot z_p = z_i \cdot (c_{y_i} - z_i)` with :math:`c_y` the
    class sums, and the gradient's positive part is a class sum too; the denominator runs on
    the blockwise engine, so no N x N matrix or mask is ever held. The analytic gradient:
    :math:`\nabla_Z = \frac1\tau [(WP + (WP)^\top) Z - \text{class-sum terms}]`, see
    ``docs/derivations/supcon_loss.md``.

    Two rows of one label (one pair) have no negative: the loss is exactly 0, and so is its
    gradient.

    Args:
        z: embeddings, all views stacked.
        labels: integer class of each row.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        normalize: L2-normalise rows (cosine similarity). Zero rows are then an error.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-row losses).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (the torch engine on every device; no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.

    Shape:
        z: ``(N, d)``; labels: ``(N,)``; output: scalar, or ``(N,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``z``.

    Raises:
        TypeError: non-tensor inputs, floating labels, non-floating z.
        ValueError: labels of the wrong shape or device, temperature <= 0, NaN/Inf, zero rows,
            a bad reduction, block_size or backend.

    Examples:
        >>> import torch
        >>> from contrastive import supcon_loss
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> round(supcon_loss(z, torch.tensor([0, 0, 1, 1]), temperature=1.0).item(), 4)  # log(1 + 2/e)
        0.5514

    References:
        Khosla et al. Supervised Contrastive Learning. NeurIPS 2020.
    """
    V.check_tensor("z", z, 2)
    labels = V.check_ids("labels", labels, z.shape[0], z, "class labels")
    temperature = V.check_param("temperature", temperature, z, True)
    _common(["z"], [z], reduction, check_finite, normalize)
    _engine_backend("supcon_loss", backend)
    if z.shape[0] == 2 and bool(labels[0] == labels[1]):  # one pair: no negative, exactly 0
        return V.no_negatives_loss([z], temperature, 2, reduction)
    bs = check_block_size(block_size, z.shape[0], z.device)
    return run_engine(
        supcon_objective(labels, bs), [z], temperature, normalize=normalize, reduction=reduction
    )


def retrieval_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: Scalar = 0.05,
    *,
    symmetric: bool = False,
    positive_ids: torch.Tensor | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Retrieval loss with in-batch and hard negatives (MultipleNegativesRankingLoss-style).

    The candidates are every positive and every negative; row ``i`` is a cross-entropy at its
    own positive:

    .. math::

        \ell_i = -\log \frac{\exp(a_i \cdot p_i / \tau)}
            {\sum_j \exp(a_i \cdot p_j / \tau) + \sum_m \exp(a_i \cdot n_m / \tau)}

    ``negatives`` ``(B, K, d)`` are K hard negatives per anchor (every anchor sees all B K of
    them, as in sentence-transformers), or ``(M, d)`` shared ones (e.g. a queue of earlier
    embeddings, which may carry no gradient). ``symmetric=True`` adds the positive-to-anchor
    direction (each positive against all anchors) and averages the two; with
    ``negatives=None`` that is :func:`~contrastive.functional.clip_loss`. ``positive_ids``:
    a positive ``p_j`` (j != i) whose id equals that of ``p_i`` is not a negative of row i (a
    duplicate in the batch), and anchor i is not a negative of column j in the symmetric
    direction. Computed blockwise, the mask from the ids per tile: O((B + M) d) memory.
    Derivation: ``docs/derivations/retrieval_loss.md``.

    One anchor without negatives (B = 1, ``negatives=None``) has no negative: the loss is
    exactly 0, and so is its gradient.

    Args:
        anchors: queries.
        positives: the positive of each anchor, row-aligned.
        negatives: hard negatives ``(B, K, d)``, shared negatives ``(M, d)``, or ``None``.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        symmetric: average with the positive-to-anchor direction.
        positive_ids: integer id of each positive ``(B,)`` (e.g. a document id).
        normalize: L2-normalise rows (anchors, positives and negatives).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-anchor losses).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.

    Shape:
        anchors, positives: ``(B, d)``; negatives: ``(B, K, d)`` or ``(M, d)``;
        positive_ids: ``(B,)``; output: scalar, or ``(B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``anchors``.

    Raises:
        TypeError: non-tensor or non-floating inputs, dtypes that differ, non-integer ids.
        ValueError: shapes that do not match (negatives of the wrong shape, K = 0), devices
            that differ, temperature <= 0, NaN/Inf, zero rows, bad reduction/block_size/backend.

    Examples:
        >>> import torch
        >>> from contrastive import retrieval_loss
        >>> a = torch.eye(2); p = torch.eye(2); n = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
        >>> round(retrieval_loss(a, p, n, temperature=1.0).item(), 4)   # -log(e / (2e + 2))
        1.0064

    References:
        Henderson et al. Efficient Natural Language Response Suggestion for Smart Reply. 2017.
        Karpukhin et al. Dense Passage Retrieval for Open-Domain Question Answering. EMNLP 2020.
    """
    _check_pair("anchors", anchors, "positives", positives)
    B, d = anchors.shape
    names, tensors = ["anchors", "positives"], [anchors, positives]
    neg = None
    if negatives is not None:
        if not isinstance(negatives, torch.Tensor):
            raise TypeError(
                f"negatives must be a torch.Tensor (B, K, d) or (M, d), got {type(negatives).__name__}"
            )
        V.check_tensor("negatives", negatives)
        if negatives.dim() == 3:
            if negatives.shape[0] != B or negatives.shape[2] != d:
                raise ValueError(
                    f"negatives of shape (B, K, d) must be ({B}, K, {d}) for anchors of shape "
                    f"{tuple(anchors.shape)}, got {tuple(negatives.shape)}"
                )
            if negatives.shape[1] == 0:
                raise ValueError("negatives has K = 0 hard negatives per anchor; pass negatives=None instead")
            neg = negatives.reshape(B * negatives.shape[1], d)  # (B K, d): every anchor sees all
        elif negatives.dim() == 2:
            if negatives.shape[1] != d:
                raise ValueError(
                    f"negatives of shape (M, d) must have d = {d} like the anchors, "
                    f"got {tuple(negatives.shape)}"
                )
            neg = negatives
        else:
            raise ValueError(f"negatives must have shape (B, K, d) or (M, d), got {tuple(negatives.shape)}")
        V.check_same_device("anchors", anchors, "negatives", negatives)
        if negatives.dtype != anchors.dtype:
            raise TypeError(
                f"anchors are {anchors.dtype} and negatives {negatives.dtype}; cast both to one dtype"
            )
        names.append("negatives")
        tensors.append(neg)
    if positive_ids is not None:
        positive_ids = V.check_ids("positive_ids", positive_ids, B, anchors, "ids")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    temperature = V.check_param("temperature", temperature, anchors, True)
    _common(names, tensors, reduction, check_finite, normalize)
    _engine_backend("retrieval_loss", backend)
    if B == 1 and (neg is None or neg.shape[0] == 0):  # one pair: no negative, exactly 0
        return V.no_negatives_loss([anchors, positives], temperature, 1, reduction)
    bs = check_block_size(block_size, max(B, 1 if neg is None else neg.shape[0]), anchors.device)
    build = retrieval_objective(symmetric, positive_ids, bs)
    return run_engine(build, [anchors, positives, neg], temperature, normalize=normalize, reduction=reduction)


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: Scalar = 0.1,
    bias: Scalar = -10.0,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
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
    _check_pair("a", a, "b", b)
    temperature = V.check_param("temperature", temperature, a, True)
    bias = V.check_param("bias", bias, a, False)
    _common(["a", "b"], [a, b], reduction, check_finite, normalize)
    _engine_backend("siglip_loss", backend)
    bs = check_block_size(block_size, a.shape[0], a.device)
    return run_engine(
        siglip_objective(bs), [a, b], temperature, bias=bias, normalize=normalize, reduction=reduction
    )
