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

from collections.abc import Sequence

import torch

from . import functional
from .ops import validation as V
from .ops.collectives import (
    GRADIENTS,
    DistributedError,
    GatherWithGradFn,
    Group,
    agree,
    check_gradient,
    collective_device,
    dtype_code,
    gather_rows,
    resolve_group,
    rows_or_empty,
)
from .ops.common import Temperature
from .ops.dist_features import FEATURE_SETTINGS, check_dist_features, dist_features_build, feature_settings
from .ops.dist_objectives import (
    RowConfig,
    check_embeddings,
    dist_build,
    objective_loss,
    siglip_build,
    two_input_loss,
)
from .ops.engine import present

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


def _mrl(dims, weights, named):
    """objective_loss's ``matryoshka`` argument (``None``: neither dims nor weights given)."""
    return None if dims is None and weights is None else (dims, weights, named)


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
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    matryoshka_dims: tuple[int, ...] | list[int] | None = None,
    matryoshka_weights: tuple[float, ...] | list[float] | None = None,
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
    reduce-scatter of ``(B, 2d)`` and two scalars. Half-precision inputs are normalised in
    float32 on their rank (as the single-process engine does) and gathered in float32.

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
        hcl_beta, hcl_tau_plus: Robinson et al.'s hard-negative estimator (see
            :func:`contrastive.functional.nt_xent`), each row's negatives drawn from all ``N``
            global rows; the same on every rank.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own (see
            :func:`contrastive.functional.nt_xent`); the same on every rank. One engine run per
            prefix (exact; the single-process form fuses them into one walk).

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
            hcl_beta=hcl_beta,
            hcl_tau_plus=hcl_tau_plus,
            matryoshka_dims=matryoshka_dims,
            matryoshka_weights=matryoshka_weights,
        )
    return two_input_loss(
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
        (matryoshka_dims, matryoshka_weights),
        (hcl_beta, hcl_tau_plus),
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
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    matryoshka_dims: tuple[int, ...] | list[int] | None = None,
    matryoshka_weights: tuple[float, ...] | list[float] | None = None,
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
        hcl_beta, hcl_tau_plus: Robinson et al.'s estimator in each direction (see
            :func:`contrastive.functional.clip_loss`), the negatives drawn from all ``B`` pairs.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in :func:`info_nce`.

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
            hcl_beta=hcl_beta,
            hcl_tau_plus=hcl_tau_plus,
            matryoshka_dims=matryoshka_dims,
            matryoshka_weights=matryoshka_weights,
        )
    return two_input_loss(
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
        (matryoshka_dims, matryoshka_weights),
        (hcl_beta, hcl_tau_plus),
    )


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: Temperature = 0.1,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    process_group: Group = None,
    gradient: str = "ddp",
    check_finite: bool = True,
    block_size: int | None = None,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Supervised contrastive loss (Khosla et al. 2020) over the global batch ``z = cat_r z_r``.

    With the ``N = sum_r N_r`` global rows (every view stacked), their labels
    ``y = cat_r labels_r`` and :math:`P(i) = \{p \ne i : y_p = y_i\}`,

    .. math::

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \ne i} \exp(z_i \cdot z_a / \tau)}
          = \log \sum_{a \ne i} e^{z_i \cdot z_a / \tau}
            - \frac{z_i \cdot (c_{y_i} - z_i)}{\tau\, |P(i)|}

    (``c_y`` the sum of the rows labelled ``y``), ``0`` for a row without positive:
    :func:`contrastive.supcon_loss` of the concatenated batch, on every rank. Every row of every
    rank is a candidate (positive or negative) of every row. ``'mean'`` averages over the global
    rows that have a positive. Exactness, ``gradient`` and the contract are those of
    :func:`info_nce`.

    **Cost.** Rank ``r`` computes its ``N_r`` rows against all ``N`` columns (softmax pass
    ``2 N_r N d`` flops, gradient pass ``4 N_r N d``: ``6 N^2 d`` over all ranks, 1.5x the
    one-process engine's ``4 N^2 d``, which uses the symmetry of ``Z Z^T``); the positive
    terms are class sums, ``O(N d)``. Memory per rank ``O(N d + block_size^2)``;
    communication: one all-gather of ``(N, d)`` and of the labels, one reduce-scatter of
    ``(N, d)``, two scalar all-reduces (the loss, the temperature gradient).

    Args:
        z: this rank's embeddings, all views stacked (may have 0 rows on some ranks).
        labels: this rank's integer class labels; rows with equal labels are positives.
        temperature: tau > 0, a float or a scalar tensor, the same on every rank.
        normalize: L2-normalise rows (cosine similarity).
        reduction: ``'mean'`` (over the global rows with a positive) | ``'sum'`` |
            ``'none'``: this rank's ``N_r`` row losses (0 where a row has no positive).
        process_group, gradient, check_finite, block_size: as in :func:`info_nce`.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in :func:`info_nce`.

    Shape:
        z: ``(N_r, d)``; labels: ``(N_r,)``; output: scalar, or ``(N_r,)`` for ``'none'``.

    Returns:
        The loss in the dtype of ``z``, the same on every rank.

    Raises:
        TypeError, ValueError: bad inputs on this rank (labels not integers or of the wrong
            shape, ...), or settings that differ across ranks (raised on every rank).
        DistributedError: another rank rejected its inputs, or a collective failed.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import supcon_loss
        >>> z = torch.eye(4)
        >>> round(supcon_loss(z, torch.tensor([0, 0, 1, 1]), temperature=1.0).item(), 4)   # log 3
        1.0986
    """
    state = resolve_group(process_group, "supcon_loss")
    if state is None:
        check_gradient(gradient)
        return functional.supcon_loss(
            z,
            labels,
            temperature,
            normalize=normalize,
            reduction=reduction,
            check_finite=check_finite,
            block_size=block_size,
            matryoshka_dims=matryoshka_dims,
            matryoshka_weights=matryoshka_weights,
        )
    local = {}

    def validate():
        rows_or_empty("z", z)
        local["labels"] = V.check_ids("labels", labels, z.shape[0], z, "class labels")
        check_embeddings("supcon_loss", [("z", z)], normalize, check_finite)
        return [z.shape[0]], []

    def build(cfg, sizes):
        y = gather_rows("supcon_loss", local["labels"], sizes[0], cfg["group"])  # (N,) global labels
        rc = RowConfig(**cfg)
        return dist_build("supcon", rc, y), rc

    return objective_loss(
        "supcon_loss",
        state,
        gradient,
        block_size,
        reduction,
        normalize,
        temperature,
        None,
        [z],
        validate,
        1,
        [],
        build,
        _mrl(matryoshka_dims, matryoshka_weights, [("z", z)]),
    )


def retrieval_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: Temperature = 0.05,
    *,
    directions: Sequence[str] = ("query_to_doc",),
    partition_mode: str = "joint",
    hardness_mode: str | None = None,
    hardness_strength: float = 0.0,
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    guide: Sequence[torch.Tensor | None] | None = None,
    guide_margin: float = 0.0,
    guide_margin_strategy: str = "absolute",
    contrast_anchors: bool = False,
    contrast_positives: bool = False,
    positive_ids: torch.Tensor | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    process_group: Group = None,
    gradient: str = "ddp",
    check_finite: bool = True,
    block_size: int | None = None,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Retrieval loss with hard negatives over the global batch: every rank's positives and
    negatives are candidates of every anchor.

    The global batch is the concatenation in rank order of ``anchors``, ``positives``,
    ``negatives`` (along their first dimension) and ``positive_ids``; the candidates ``c_j``
    are all ``B`` positives then all negatives, and

    .. math::

        \ell_i = \log \sum_{j \notin F(i)} e^{a_i \cdot c_j / \tau} - a_i \cdot p_i / \tau,
        \qquad F(i) = \{j \ne i \le B : \mathrm{id}_j = \mathrm{id}_i\}

    (``F`` empty without ``positive_ids``); ``directions=("query_to_doc", "doc_to_query"),
    partition_mode="per_direction"`` averages it with the positive-to-anchor direction (each
    ``p_i`` against every anchor, anchors with its id masked the same way). Every loss feature
    of the single-process function is taken, with its semantics and refusals: the other GTE
    directions and ``"joint"``, ``hardness_mode``, ``hcl_beta``, a GIST ``guide`` with its
    blocks, Matryoshka prefixes. This is :func:`contrastive.retrieval_loss` of the concatenated
    batch, on every rank. Exactness, ``gradient`` and the contract are those of
    :func:`info_nce`. A queue of shared negatives ``(M, d)`` replicated on every rank should
    be passed in disjoint shares (e.g. ``queue.chunk(world_size)[rank]``): the candidates are
    the concatenation of what the ranks pass. Negatives without ``requires_grad`` get no
    gradient pass over their columns (on every rank alike: it is one of the checked settings).

    **Cost.** Rank ``r`` computes its ``B_r`` anchors against all ``C = B (1 + K)`` (or
    ``B + M``) candidates, ``6 B_r C d`` flops (``4`` of the ``6`` for the negatives'
    columns when they need no gradient); the symmetric direction's column softmax comes out
    of the same tiles (its normalisers are per-rank partial sums, combined). Over all ranks
    that is the one-process count, with no redundant tile. Memory per rank
    ``O(C d + block_size^2)``, the id masks computed per tile from the ``(B,)`` ids;
    communication: one all-gather of the candidates ``(B, (1 + K) d)`` (plus ``(M, d)`` for
    shared negatives) and of the ids, the same reduce-scatter, two scalar all-reduces, and
    for the two-way directions an all-gather of ``(W, B)`` partial log-sum-exps and of the ``(B,)``
    weights.

    **The loss features** (anything but the two plain direction sets above without features;
    :mod:`contrastive.ops.dist_features`): rank ``r`` computes its rows' partitions completely,
    its anchors (and, for ``doc_to_query``, ``doc_to_doc`` or ``contrast_positives``, its
    positives) against the gathered candidates of every block named, the masks and boosts of
    the single-process objective at the rows' global indices. The ``doc_to_query`` logits are
    computed by the positive's owner, so those tiles are walked twice over the ranks (once as
    ``query_to_doc``); ``query_to_query`` / ``doc_to_doc`` gather the anchors / positives as
    candidates (no symmetric walk: each rank's rows against all). The guide embeddings are
    gathered like the candidates, without gradient. Matryoshka runs one engine pass per prefix.

    Args:
        anchors: this rank's queries (may have 0 rows on some ranks).
        positives: the positive document of each anchor, row-aligned.
        negatives: ``None``; ``(B_r, K, d)``, K >= 1 hard negatives per anchor; or
            ``(M_r, d)`` shared negatives (e.g. a queue, possibly without gradient).
        temperature: tau > 0, a float or a scalar tensor, the same on every rank.
        directions, partition_mode: the GTE candidate sets and their partition, as in
            :func:`contrastive.retrieval_loss` (``"query_to_doc"``, ``"doc_to_query"``,
            ``"query_to_query"``, ``"doc_to_doc"``; ``"joint"`` or ``"per_direction"``), over
            the global batch; the same on every rank.
        hardness_mode, hardness_strength: Lan et al.'s hardness penalty, as in
            :func:`contrastive.retrieval_loss` (a shared negative set counts as every query's
            own hard negatives); the same on every rank.
        hcl_beta, hcl_tau_plus: Robinson et al.'s estimator over each anchor's global negatives
            (only with the default directions, without hardness or guide).
        guide: ``(guide_anchors, guide_positives)`` or with ``guide_negatives``: this rank's
            rows of the guide model's embeddings (no gradient, any width, split like the
            embeddings), GIST's false-negative masks against the global batch.
        guide_margin, guide_margin_strategy, contrast_anchors, contrast_positives: as in
            :func:`contrastive.retrieval_loss`; the same on every rank.
        positive_ids: ``(B_r,)`` integer ids of the positives; candidates with anchor i's id
            (other than its own positive) are not its negatives. Given on all ranks or none.
        normalize: L2-normalise rows.
        reduction: ``'mean'`` (over the ``B`` global anchors) | ``'sum'`` | ``'none'`` (this
            rank's ``B_r`` anchor losses).
        process_group, gradient, check_finite, block_size: as in :func:`info_nce`.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in :func:`info_nce`
            (a guide keeps its own width).

    Shape:
        anchors, positives: ``(B_r, d)``; negatives: ``(B_r, K, d)`` or ``(M_r, d)``;
        positive_ids: ``(B_r,)``; guide: ``(B_r, g)`` each, negatives' ``(B_r, K, g)`` or
        ``(M_r, g)``; output: scalar, or ``(B_r,)`` for ``'none'``.

    Raises:
        TypeError, ValueError, DistributedError: as in :func:`info_nce`.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import retrieval_loss
        >>> a = torch.eye(3)
        >>> round(retrieval_loss(a, a, -a[:, None], temperature=1.0).item(), 4)   # log(e + 4 + 1/e) - 1
        0.9581
    """
    features = dict(
        directions=directions,
        partition_mode=partition_mode,
        hardness_mode=hardness_mode,
        hardness_strength=hardness_strength,
        hcl_beta=hcl_beta,
        hcl_tau_plus=hcl_tau_plus,
        guide=guide,
        guide_margin=guide_margin,
        guide_margin_strategy=guide_margin_strategy,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
    )
    state = resolve_group(process_group, "retrieval_loss")
    if state is None:
        check_gradient(gradient)
        return functional.retrieval_loss(
            anchors,
            positives,
            negatives,
            temperature,
            **features,  # type: ignore[arg-type]
            positive_ids=positive_ids,
            normalize=normalize,
            reduction=reduction,
            check_finite=check_finite,
            block_size=block_size,
            matryoshka_dims=matryoshka_dims,
            matryoshka_weights=matryoshka_weights,
        )
    local: dict = {}
    kind = (
        0 if negatives is None else 1 if isinstance(negatives, torch.Tensor) and negatives.dim() == 3 else 2
    )

    def validate():
        rows_or_empty("anchors", anchors)
        rows_or_empty("positives", positives)
        V.check_same_shape("anchors", anchors, "positives", positives)
        named = [("anchors", anchors), ("positives", positives)]
        K, M = 0, 0
        if negatives is not None:
            if not isinstance(negatives, torch.Tensor) or negatives.dim() not in (2, 3):
                raise ValueError(
                    f"negatives must be None, (B, K, d) hard negatives per anchor or (M, d) shared "
                    f"negatives, got {getattr(negatives, 'shape', type(negatives).__name__)}"
                )
            if negatives.dtype not in V.FLOAT_DTYPES:
                raise TypeError(
                    f"negatives must be a floating tensor, got {negatives.dtype}; "
                    f"convert it with negatives.float()"
                )
            if kind == 1:
                if negatives.shape[0] != anchors.shape[0]:
                    raise ValueError(
                        f"negatives (B, K, d) must have one row per anchor: got {negatives.shape[0]} "
                        f"rows for {anchors.shape[0]} anchors"
                    )
                K = negatives.shape[1]
                if K == 0:
                    raise ValueError(
                        "negatives has K = 0 hard negatives per anchor; pass negatives=None instead"
                    )
                M = K * anchors.shape[0]
            else:
                M = negatives.shape[0]
            named.append(("negatives", negatives))
        if positive_ids is not None:
            local["ids"] = V.check_ids("positive_ids", positive_ids, anchors.shape[0], anchors, "ids")
        check_embeddings("retrieval_loss", named, normalize, check_finite)
        neg_grad = negatives is not None and negatives.requires_grad and torch.is_grad_enabled()
        f = local["features"] = check_dist_features(anchors, negatives, check_finite, **features)
        return [anchors.shape[0], M], [kind, K, neg_grad, positive_ids is not None, *feature_settings(f)]

    def build(cfg, sizes):
        ids = None
        if positive_ids is not None:
            ids = gather_rows("retrieval_loss", local["ids"], sizes[0], cfg["group"])  # (B,) global ids
        K = present(negatives).shape[1] if kind == 1 else 0  # kind 1: (B, K, d) negatives
        f = local["features"]
        symmetric = set(f["directions"]) == {"query_to_doc", "doc_to_query"}
        rc = RowConfig(
            **cfg,
            symmetric=symmetric,
            neg_sizes=sizes[1] if kind else None,
            neg_per_anchor=K,
            neg_grad=bool(kind and present(negatives).requires_grad and torch.is_grad_enabled()),
        )
        if f["plain"]:
            return dist_build("retrieval", rc, ids), rc
        if f["hcl"] is not None and sum(sizes[0]) < 2 and sum(sizes[1]) == 0:
            raise ValueError("hcl_beta needs at least one negative per row: pass B >= 2 or negatives")
        return dist_features_build(rc, ids=ids, **{k: v for k, v in f.items() if k != "plain"}), rc

    inputs = [anchors, positives, None]
    if (
        kind == 1
        and negatives is not None
        and isinstance(anchors, torch.Tensor)
        and negatives.shape[0] == anchors.shape[0]
    ):
        inputs[2] = negatives.reshape(-1, negatives.shape[-1])  # (B_r K, d), anchor-major
    elif kind == 2:
        inputs[2] = negatives
    return objective_loss(
        "retrieval_loss",
        state,
        gradient,
        block_size,
        reduction,
        normalize,
        temperature,
        None,
        inputs,
        validate,
        2,
        [
            "negatives' form (0 none, 1 (B, K, d), 2 (M, d))",
            "K (negatives per anchor)",
            "negatives' requires_grad",
            "use of positive_ids",
            *FEATURE_SETTINGS,
        ],
        build,
        _mrl(
            matryoshka_dims,
            matryoshka_weights,
            [("anchors", anchors), ("positives", positives), ("negatives", negatives)],
        ),
    )


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: Temperature = 0.1,
    bias: Temperature = -10.0,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    process_group: Group = None,
    gradient: str = "ddp",
    check_finite: bool = True,
    block_size: int | None = None,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""The sigmoid loss of SigLIP (Zhai et al. 2023) over the global batch ``a = cat_r a_r``,
    ``b = cat_r b_r``.

    .. math::

        \mathcal L = -\frac1B \sum_{i=1}^{B} \sum_{j=1}^{B}
            \log \sigma\big(z_{ij} (a_i \cdot b_j / \tau + \text{bias})\big), \qquad
        z_{ii} = 1,\; z_{ij} = -1 \; (i \ne j)

    over all ``B = sum_r B_r`` pairs: :func:`contrastive.siglip_loss` of the concatenated
    towers, on every rank, with the full, all-reduced gradients of a learnable temperature and
    bias. The loss has no normaliser, so rank ``r`` computes its rows' loss and gradient in a
    single pass over ``a_r`` against all of ``b`` and reduce-scatters what they send to the
    other ranks' ``b``. Exactness, ``gradient`` and the contract are those of :func:`info_nce`.

    **Cost.** ``6 B_r B d`` flops per rank (``6 B^2 d`` in all, the one-process count), two
    exponential-type maps per entry; memory ``O(B d + block_size^2)``; communication one
    all-gather and one reduce-scatter of ``b``, ``(B, d)``, and two all-reduces of scalars.

    Args:
        a: this rank's first-tower embeddings (may have 0 rows on some ranks).
        b: this rank's second-tower embeddings, row-aligned with ``a``.
        temperature: tau > 0, a float or a scalar tensor, the same on every rank.
        bias: the logit bias, a float or a scalar tensor (which may require grad), the same on
            every rank.
        normalize: L2-normalise rows.
        reduction: ``'mean'`` (the sum over all ``B^2`` pairs divided by ``B``) | ``'sum'`` |
            ``'none'`` (this rank's ``B_r`` row sums).
        process_group, gradient, check_finite, block_size: as in :func:`info_nce`.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, as in :func:`info_nce`.

    Shape:
        a, b: ``(B_r, d)``; output: scalar, or ``(B_r,)`` for ``'none'``.

    Raises:
        TypeError, ValueError, DistributedError: as in :func:`info_nce`.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import siglip_loss
        >>> a = torch.eye(3)                 # one process: contrastive.siglip_loss
        >>> round(siglip_loss(a, a, temperature=1.0, bias=0.0).item(), 4)   # softplus(-1) + 2 softplus(0)
        1.6996
    """
    state = resolve_group(process_group, "siglip_loss")
    if state is None:
        check_gradient(gradient)
        return functional.siglip_loss(
            a,
            b,
            temperature,
            bias,
            normalize=normalize,
            reduction=reduction,
            check_finite=check_finite,
            block_size=block_size,
            matryoshka_dims=matryoshka_dims,
            matryoshka_weights=matryoshka_weights,
        )

    def validate():
        rows_or_empty("a", a)
        rows_or_empty("b", b)
        V.check_same_shape("a", a, "b", b)
        check_embeddings("siglip_loss", [("a", a), ("b", b)], normalize, check_finite)
        return [a.shape[0]], []

    return objective_loss(
        "siglip_loss",
        state,
        gradient,
        block_size,
        reduction,
        normalize,
        temperature,
        bias,
        [a, b],
        validate,
        1,
        [],
        siglip_build,
        _mrl(matryoshka_dims, matryoshka_weights, [("a", a), ("b", b)]),
    )
