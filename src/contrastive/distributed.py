r"""Exact contrastive losses over the global batch of a ``torch.distributed`` job.

The same contract holds for :func:`supcon_loss`, :func:`retrieval_loss` and
:func:`siglip_loss` (labels and ids gathered with the embeddings; see
:mod:`contrastive.ops.dist_objectives`), described below for :func:`info_nce`.

**Global batch.** Rank ``r`` (of ``W``) holds ``B_r`` pairs; the global batch is the
concatenation in rank order, ``z1 = cat_r z1_r`` and ``z2 = cat_r z2_r`` (``B = sum_r B_r``
pairs, ``N = 2B`` rows). Per-rank sizes may differ. The single-process reference is

    contrastive.info_nce(torch.cat(z1_list), torch.cat(z2_list))

and every negative of every row is drawn from all ``N`` rows, not from the rank's own.

**What is exact.**

1. The loss returned on *every* rank equals that single-process loss (``'mean'``: the mean
   over the ``N`` global rows; ``'sum'``: the global sum; ``'none'``: this rank's rows).
2. ``gradient='ddp'`` (default): the gradient sent back into rank ``r``'s embeddings is
   ``W * dL/dz_r``, so once DDP (or FSDP, or Horovod with averaging) *averages* parameter
   gradients over the ``W`` ranks, every parameter gradient equals the single-process
   full-batch gradient ``dL/dtheta``. ``gradient='exact'``: it is ``dL/dz_r`` itself (for
   code that sums gradients over ranks, or that inspects them).
3. A learnable temperature (a replicated scalar) gets the full ``dL/dtau``, all-reduced and
   identical on every rank, in both modes (averaging identical values changes nothing).

**How.** Each rank all-gathers the embeddings (``O(N d)``), computes the tiles of its own
rows against all ``N`` columns (self excluded and positives at their global indices), and
reduce-scatters the gradient its rows send to everybody else's, ``(WG)^T Z``, to the owners.
No rank ever holds an ``N x N`` (or ``B_r x N``) matrix; the gradient is the analytic one.
Every loss is its single-process objective run by the engine contract on this rank's rows,
plus the collectives: see :mod:`contrastive.ops.dist_objectives` for the algebra.

**Contract.** Every rank of the group calls the function with the same settings and
temperature (checked: all ranks raise the same error otherwise, none hangs), and with
``'mean'``/``'sum'`` all ranks back-propagate the same ``grad_output`` (true whenever each
rank calls ``loss.backward()``, with or without a common loss scale). A rank whose inputs
are bad raises its own ``ValueError``/``TypeError``; the others raise
:class:`DistributedError` naming it. A rank that dies or stalls makes the others raise
:class:`DistributedError` once the process group notices (a closed connection: at once;
a stalled peer: after ``init_process_group(timeout=...)``).

Without an initialised process group (and ``process_group=None``), or with a group of one
rank, the functions are the single-process ones of :mod:`contrastive.functional`:

>>> import torch
>>> import contrastive, contrastive.distributed as cd
>>> z1, z2 = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
>>> bool(cd.info_nce(z1, z2) == contrastive.info_nce(z1, z2))
True
"""

from __future__ import annotations

import torch

from . import _validation as V
from . import functional
from ._dist_common import (
    GRADIENTS,
    agree,
    check_gradient,
    collective_device,
    dtype_code,
    resolve_group,
    rows_or_empty,
)
from ._dist_objectives import _embeddings, _objective_loss, retrieval_loss, siglip_loss, supcon_loss
from .functional import Temperature
from .ops.collectives import DistributedError, GatherWithGradFn, Group
from .ops.dist_objectives import RowConfig, dist_build

__all__ = [
    "all_gather_with_grad",
    "info_nce",
    "clip_loss",
    "supcon_loss",
    "retrieval_loss",
    "siglip_loss",
    "DistributedError",
    "GRADIENTS",
]


def _pair_loss(
    op, kind, x, y, temperature, flags, reduction, normalize, check_finite, block_size, gradient, state
):
    """info_nce (kind 'info_nce', inputs z1, z2) or clip_loss ('clip', inputs a, b) on the
    engine contract: validate on every rank, agree, run the row-owner objective."""
    nx, ny = ("z1", "z2") if kind == "info_nce" else ("a", "b")

    def validate():
        rows_or_empty(nx, x)
        rows_or_empty(ny, y)
        V.check_same_shape(nx, x, ny, y)
        _embeddings(op, [(nx, x), (ny, y)], normalize, check_finite)
        return [x.shape[0]], [v for _, v in flags]

    def build(cfg, sizes):
        rc = RowConfig(**cfg, symmetric=kind == "clip")
        return dist_build(kind, rc, exclude_self=bool(dict(flags).get("exclude_self", True))), rc

    return _objective_loss(
        op,
        state,
        gradient,
        block_size,
        reduction,
        normalize,
        temperature,
        None,
        [x, y],
        validate,
        1,
        [name for name, _ in flags],
        build,
    )


def all_gather_with_grad(x: torch.Tensor, process_group: Group = None) -> torch.Tensor:
    r"""All-gather along dim 0 whose backward returns each slice's gradient to its owner.

    Forward: ``torch.cat([x_0, ..., x_{W-1}])`` over the ranks of ``process_group`` (first
    dimensions may differ; the other dimensions and the dtype must agree). Backward: rank
    ``r`` receives the sum over all ranks of the gradient of its slice (a reduce-scatter),

    .. math::

        \frac{\partial}{\partial x_r} \sum_{q} L_q, \qquad L_q \text{ the loss on rank } q.

    This is the gradient of the *sum* of the ranks' losses. The usual ``GatherLayer``
    returns only ``grads[rank]``, the gradient of the rank's own loss, and so drops what the
    other ranks' losses send to this rank's embeddings. Under DDP, which *averages*
    gradients, the parameters then get :math:`\frac1W \sum_q \partial L_q / \partial\theta`:
    exact for the mean of per-rank losses, e.g. each rank's loss over its own rows against
    the gathered columns, weighted ``W / N`` per row (the local mean when sizes are equal).
    :func:`info_nce` and :func:`clip_loss` do this bookkeeping for you.

    Without an initialised process group (or with one rank) it returns ``x``.

    Args:
        x: this rank's rows.
        process_group: process group (``None``: the default group), as in the losses.

    Shape:
        x: ``(n_r, *)``; output: ``(sum_r n_r, *)``.

    Raises:
        DistributedError: a rank rejected its input or the collective failed.
        ValueError, TypeError: trailing shapes or dtypes that differ across ranks.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import all_gather_with_grad
        >>> x = torch.ones(3, 2, requires_grad=True)
        >>> all_gather_with_grad(x).shape   # no process group: the identity
        torch.Size([3, 2])
    """
    state = resolve_group(process_group, "all_gather_with_grad")
    if state is None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        return x
    group, rank, world = state
    err = None
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.dim() > 9:
        err = TypeError(
            f"x must be a torch.Tensor with 1 to 9 dimensions, got {getattr(x, 'shape', type(x))}"
        )
    trailing = list(x.shape[1:]) if err is None else []
    checks = [("dtype", dtype_code(x))] + [
        (f"size of dimension {k}", trailing[k - 1] if k - 1 < len(trailing) else -1) for k in range(1, 9)
    ]
    sizes = agree(
        "all_gather_with_grad",
        group,
        collective_device(x, group),
        err,
        x.shape[0] if err is None else 0,
        checks,
    )
    return GatherWithGradFn.apply(x, "all_gather_with_grad", sizes, rank, group)


def info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: Temperature = 0.5,
    *,
    exclude_self: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
    process_group: Group = None,
    gradient: str = "ddp",
    check_finite: bool = True,
    block_size: int | None = None,
) -> torch.Tensor:
    r"""InfoNCE / NT-Xent over the global batch: every rank's samples are everyone's negatives.

    With :math:`z_1 = \mathrm{cat}_r\, z_{1,r}`, :math:`z_2 = \mathrm{cat}_r\, z_{2,r}`
    (rank order), :math:`Z = [z_1; z_2]` (``N = 2B`` rows, ``B = sum_r B_r``) and
    :math:`p(i) = (i + B) \bmod N`,

    .. math::

        \mathcal L = \frac1N \sum_{i=1}^{N} -\log
            \frac{\exp(z_i \cdot z_{p(i)} / \tau)}{\sum_k [k \ne i]\, \exp(z_i \cdot z_k / \tau)}

    exactly :func:`contrastive.info_nce` of the concatenated views, whose value every rank
    returns. The gradient is the closed form :math:`(G + G^\top) Z / (N\tau)` split by rows:
    rank ``r`` computes the rows :math:`R_r` of ``G`` (its own samples, both views) against
    all ``N`` columns, keeps :math:`(G Z)_{R_r}` and reduce-scatters
    :math:`G_{R_r}^\top Z_{R_r}`, so the gradient of its embeddings is
    :math:`\partial \mathcal L / \partial z_{R_r}` summed over every rank's rows, times
    ``W`` for ``gradient='ddp'`` (see the module docstring). Memory per rank
    ``O(N d + block_size^2)``; communication: one all-gather of ``(B, 2d)``, one
    reduce-scatter of ``(B, 2d)`` and two scalars. Half-precision inputs are gathered as
    they are and accumulated in float32.

    Args:
        z1: this rank's embeddings of the first view (may have 0 rows on some ranks).
        z2: this rank's embeddings of the second view, row-aligned with ``z1``.
        temperature: tau > 0, a float or a scalar tensor, the same on every rank.
        exclude_self: drop the self-similarity (at its global index) from the denominator.
        normalize: L2-normalise rows (cosine similarity).
        reduction: ``'mean'`` (over the ``N`` global rows) | ``'sum'`` (global) |
            ``'none'``: this rank's ``2 B_r`` row losses, ``[rows of z1_r; rows of z2_r]``;
            back-propagating ``w`` through them is the gradient of
            :math:`\sum_{\text{ranks}} \sum_i w_i \ell_i` (so ``losses.sum() / N`` is the
            global mean; its backward runs collectives, so every rank must call it).
        process_group: the group whose ranks share the batch (``None``: the default group).
            Without an initialised process group this is :func:`contrastive.info_nce`.
        gradient: ``'ddp'`` (default): the embedding gradient is ``world_size x`` the exact
            one, for a wrapper that averages parameter gradients over ranks (DDP, FSDP).
            ``'exact'``: ``dL/dz`` of the global loss w.r.t. this rank's inputs.
        check_finite: raise on NaN/Inf inputs.
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).

    Shape:
        z1, z2: ``(B_r, d)``; output: scalar, or ``(2 B_r,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``z1``, the same on every rank.

    Raises:
        TypeError, ValueError: bad inputs on this rank, or settings (d, dtype, temperature,
            flags) that differ across ranks (raised on every rank).
        DistributedError: another rank rejected its inputs, or a collective failed.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import info_nce
        >>> z = torch.eye(4)
        >>> round(info_nce(z, z, temperature=1.0).item(), 4)   # one process: contrastive.info_nce
        1.1654
    """
    state = resolve_group(process_group, "info_nce")
    if state is None:
        check_gradient(gradient)
        return functional.info_nce(
            z1,
            z2,
            temperature,
            exclude_self=exclude_self,
            normalize=normalize,
            reduction=reduction,
            check_finite=check_finite,
            block_size=block_size,
        )
    return _pair_loss(
        "info_nce",
        "info_nce",
        z1,
        z2,
        temperature,
        [("exclude_self", exclude_self)],
        reduction,
        normalize,
        check_finite,
        block_size,
        gradient,
        state,
    )


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: Temperature = 0.07,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    process_group: Group = None,
    gradient: str = "ddp",
    check_finite: bool = True,
    block_size: int | None = None,
) -> torch.Tensor:
    r"""Two-tower (CLIP) loss over the global batch ``a = cat_r a_r``, ``b = cat_r b_r``.

    .. math::

        S_{ij} = \frac{a_i \cdot b_j}{\tau}, \qquad
        \ell_i = \tfrac12 \Big(\log\sum_j e^{S_{ij}} - S_{ii}\Big)
                + \tfrac12 \Big(\log\sum_j e^{S_{ji}} - S_{ii}\Big)

    over all ``B = sum_r B_r`` global pairs: the value of :func:`contrastive.clip_loss` of
    the concatenated towers, on every rank. It is the symmetric :func:`retrieval_loss`
    without negatives: rank ``r`` computes its rows ``a_r`` against all of ``b`` once, which
    gives its rows' softmax and partial column normalisers (combined over the ranks), keeps its
    rows' gradient and reduce-scatters what they send to the other ranks' ``b``. Exactness, the
    ``gradient`` modes, the temperature and the contract are those of :func:`info_nce`.

    Args:
        a: this rank's first-tower embeddings (e.g. images).
        b: this rank's second-tower embeddings, row-aligned with ``a``.
        temperature: tau > 0, a float or a scalar tensor, the same on every rank.
        normalize: L2-normalise rows.
        reduction: ``'mean'`` (over the ``B`` global pairs) | ``'sum'`` | ``'none'`` (this
            rank's ``B_r`` pair losses).
        process_group, gradient, check_finite, block_size: as in :func:`info_nce`.

    Shape:
        a, b: ``(B_r, d)``; output: scalar, or ``(B_r,)`` for ``reduction='none'``.

    Raises:
        TypeError, ValueError, DistributedError: as in :func:`info_nce`.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import clip_loss
        >>> round(clip_loss(torch.eye(3), torch.eye(3), temperature=1.0).item(), 4)
        0.5514
    """
    state = resolve_group(process_group, "clip_loss")
    if state is None:
        check_gradient(gradient)
        return functional.clip_loss(
            a,
            b,
            temperature,
            normalize=normalize,
            reduction=reduction,
            check_finite=check_finite,
            block_size=block_size,
        )
    return _pair_loss(
        "clip_loss",
        "clip",
        a,
        b,
        temperature,
        [],
        reduction,
        normalize,
        check_finite,
        block_size,
        gradient,
        state,
    )
