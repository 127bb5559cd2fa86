"""The supervised contrastive loss (Khosla et al. 2020) on the engine; re-exported by
:mod:`contrastive.functional`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops import validation as V
from ..ops.common import Temperature, no_negatives_loss
from ..ops.engine import run as run_engine
from ..ops.matryoshka_objectives import matryoshka_objective
from ..ops.supcon import supcon_objective
from ..ops.tiles import check_block_size
from ..ops.validation import check_common, engine_backend


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: Temperature = 0.1,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
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
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own, all in one walk over the tiles
            (see :func:`~contrastive.functional.nt_xent`); needs ``normalize=True``.

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
    check_common(["z"], [z], reduction, check_finite, normalize)
    prefixes = V.check_prefixes(["z"], [z], matryoshka_dims, matryoshka_weights, normalize)
    engine_backend("supcon_loss", backend)
    if z.shape[0] == 2 and bool(labels[0] == labels[1]):  # one pair: no negative, exactly 0
        return no_negatives_loss([z], temperature, 2, reduction)
    bs = check_block_size(block_size, z.shape[0], z.device)
    build = matryoshka_objective(supcon_objective(labels, bs), prefixes)
    return run_engine(build, [z], temperature, normalize=normalize, reduction=reduction)
