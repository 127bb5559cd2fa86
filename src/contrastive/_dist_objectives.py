"""Supervised contrastive, retrieval and SigLIP losses over the global batch of a
``torch.distributed`` job: the public functions re-exported by :mod:`contrastive.distributed`,
with its contract (see there), running the row-owner objectives of
:mod:`contrastive.ops.dist_objectives` on the engine contract."""

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
from .functional import Temperature
from .ops.collectives import Group, gather_rows
from .ops.dist_objectives import RowConfig, dist_build, global_loss
from .ops.engine import EngineFn, present
from .ops.tiles import check_block_size

__all__ = ["retrieval_loss", "siglip_loss", "supcon_loss"]


def _embeddings(op, named, normalize, check_finite):
    """Check the (name, tensor) embeddings of one rank: floating, one dtype and device, finite,
    nonzero rows when normalising (a rank may hold 0 rows)."""
    ref_name, ref = named[0]
    for name, x in named:
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} is {x.dtype} and {ref_name} is {ref.dtype}; cast both to one dtype")
        V.check_same_device(ref_name, ref, name, x)
        if x.shape[-1] != ref.shape[-1]:
            raise ValueError(
                f"{name} has embedding dimension {x.shape[-1]} and {ref_name} {ref.shape[-1]}; "
                f"they must agree"
            )
        flat = x.reshape(-1, x.shape[-1])
        if check_finite and flat.shape[0]:
            V.check_finite(name, flat)
        if normalize and flat.shape[0]:
            V.check_nonzero_rows(name, flat)


def _objective_loss(
    op,
    state,
    gradient,
    block_size,
    reduction,
    normalize,
    temperature,
    bias,
    inputs,
    validate,
    n_counts,
    setting_names,
    build,
):
    """The driver of the objectives on the engine contract: validate on every rank
    (``validate()`` returns the local row counts and the setting values; it may fill in
    ``inputs``), agree, then ``build(cfg, sizes)`` returns the engine's build (it may gather
    labels or ids), :class:`~contrastive.ops.engine.EngineFn` runs it and the loss value is
    all-reduced."""
    group, rank, world = state
    err, counts, settings, tau_value, b_value = None, None, None, 0.0, 0.0
    x0 = inputs[0]
    try:
        check_gradient(gradient)
        check_block_size(block_size, 1, torch.device("cpu"))  # validate here, size later
        V.check_reduction(reduction)
        counts, settings = validate()
        temperature = V.check_param("temperature", temperature, x0, True)
        tau_value = float(temperature.detach() if isinstance(temperature, torch.Tensor) else temperature)
        if bias is not None:
            bias = V.check_param("bias", bias, x0, False)
            b_value = float(bias.detach() if isinstance(bias, torch.Tensor) else bias)
    except (TypeError, ValueError) as e:
        err = e
    ok = err is None
    want_grad = torch.is_grad_enabled() and any(
        isinstance(x, torch.Tensor) and x.requires_grad for x in list(inputs) + [temperature, bias]
    )
    checks = [
        ("embedding dimension", x0.shape[-1] if ok else 0),
        ("embedding dtype", dtype_code(x0) if ok else 0),
        ("temperature", tau_value),
        ("bias", b_value),
        ("normalize", bool(normalize)),
        ("reduction", V.REDUCTIONS.index(reduction) if ok else 0),
        ("need for a gradient (requires_grad on the inputs, torch.no_grad)", want_grad),
        ("gradient", GRADIENTS.index(gradient) if ok else 0),
    ] + list(zip(setting_names, settings if ok and settings is not None else [0] * len(setting_names)))
    sizes = agree(
        op,
        group,
        collective_device(x0, group),
        err,
        tuple(counts) if ok and counts is not None else (0,) * n_counts,
        checks,
    )
    if sum(sizes[0]) == 0:
        raise ValueError(
            f"contrastive.distributed.{op}: the global batch is empty (every rank passed 0 rows)"
        )
    cfg = dict(
        op=op,
        group=group,
        rank=rank,
        sizes=sizes[0],
        scale=float(world) if gradient == "ddp" else 1.0,
        bs=check_block_size(block_size, max(sum(s) for s in sizes), x0.device),
    )
    engine_build, row_cfg = build(cfg, sizes)
    out = EngineFn.apply(engine_build, bool(normalize), reduction, want_grad, temperature, bias, *inputs)
    if reduction != "none":
        out = global_loss(row_cfg, out)
    return out.to(x0.dtype)


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
        )
    local = {}

    def validate():
        rows_or_empty("z", z)
        local["labels"] = V.check_ids("labels", labels, z.shape[0], z, "class labels")
        _embeddings("supcon_loss", [("z", z)], normalize, check_finite)
        return [z.shape[0]], []

    def build(cfg, sizes):
        y = gather_rows("supcon_loss", local["labels"], sizes[0], cfg["group"])  # (N,) global labels
        rc = RowConfig(**cfg)
        return dist_build("supcon", rc, y), rc

    return _objective_loss(
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
    )


def retrieval_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: Temperature = 0.05,
    *,
    symmetric: bool = False,
    positive_ids: torch.Tensor | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    process_group: Group = None,
    gradient: str = "ddp",
    check_finite: bool = True,
    block_size: int | None = None,
) -> torch.Tensor:
    r"""Retrieval loss with hard negatives over the global batch: every rank's positives and
    negatives are candidates of every anchor.

    The global batch is the concatenation in rank order of ``anchors``, ``positives``,
    ``negatives`` (along their first dimension) and ``positive_ids``; the candidates ``c_j``
    are all ``B`` positives then all negatives, and

    .. math::

        \ell_i = \log \sum_{j \notin F(i)} e^{a_i \cdot c_j / \tau} - a_i \cdot p_i / \tau,
        \qquad F(i) = \{j \ne i \le B : \mathrm{id}_j = \mathrm{id}_i\}

    (``F`` empty without ``positive_ids``); ``symmetric=True`` averages it with the
    positive-to-anchor direction (each ``p_i`` against every anchor, anchors with its id
    masked the same way). This is :func:`contrastive.retrieval_loss` of the concatenated
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
    for ``symmetric`` an all-gather of ``(W, B)`` partial log-sum-exps and of the ``(B,)``
    weights.

    Args:
        anchors: this rank's queries (may have 0 rows on some ranks).
        positives: the positive document of each anchor, row-aligned.
        negatives: ``None``; ``(B_r, K, d)``, K >= 1 hard negatives per anchor; or
            ``(M_r, d)`` shared negatives (e.g. a queue, possibly without gradient).
        temperature: tau > 0, a float or a scalar tensor, the same on every rank.
        symmetric: add the positive-to-anchor direction and average the two.
        positive_ids: ``(B_r,)`` integer ids of the positives; candidates with anchor i's id
            (other than its own positive) are not its negatives. Given on all ranks or none.
        normalize: L2-normalise rows.
        reduction: ``'mean'`` (over the ``B`` global anchors) | ``'sum'`` | ``'none'`` (this
            rank's ``B_r`` anchor losses).
        process_group, gradient, check_finite, block_size: as in :func:`info_nce`.

    Shape:
        anchors, positives: ``(B_r, d)``; negatives: ``(B_r, K, d)`` or ``(M_r, d)``;
        positive_ids: ``(B_r,)``; output: scalar, or ``(B_r,)`` for ``'none'``.

    Raises:
        TypeError, ValueError, DistributedError: as in :func:`info_nce`.

    Examples:
        >>> import torch
        >>> from contrastive.distributed import retrieval_loss
        >>> a = torch.eye(3)
        >>> round(retrieval_loss(a, a, -a[:, None], temperature=1.0).item(), 4)   # log(e + 4 + 1/e) - 1
        0.9581
    """
    state = resolve_group(process_group, "retrieval_loss")
    if state is None:
        check_gradient(gradient)
        return functional.retrieval_loss(
            anchors,
            positives,
            negatives,
            temperature,
            symmetric=symmetric,
            positive_ids=positive_ids,
            normalize=normalize,
            reduction=reduction,
            check_finite=check_finite,
            block_size=block_size,
        )
    local = {}
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
        _embeddings("retrieval_loss", named, normalize, check_finite)
        neg_grad = negatives is not None and negatives.requires_grad and torch.is_grad_enabled()
        return [anchors.shape[0], M], [bool(symmetric), kind, K, neg_grad, positive_ids is not None]

    def build(cfg, sizes):
        ids = None
        if positive_ids is not None:
            ids = gather_rows("retrieval_loss", local["ids"], sizes[0], cfg["group"])  # (B,) global ids
        K = present(negatives).shape[1] if kind == 1 else 0  # kind 1: (B, K, d) negatives
        rc = RowConfig(
            **cfg,
            symmetric=bool(symmetric),
            neg_sizes=sizes[1] if kind else None,
            neg_per_anchor=K,
            neg_grad=bool(kind and present(negatives).requires_grad and torch.is_grad_enabled()),
        )
        return dist_build("retrieval", rc, ids), rc

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
    return _objective_loss(
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
            "symmetric",
            "negatives' form (0 none, 1 (B, K, d), 2 (M, d))",
            "K (negatives per anchor)",
            "negatives' requires_grad",
            "use of positive_ids",
        ],
        build,
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
        )

    def validate():
        rows_or_empty("a", a)
        rows_or_empty("b", b)
        V.check_same_shape("a", a, "b", b)
        _embeddings("siglip_loss", [("a", a), ("b", b)], normalize, check_finite)
        return [a.shape[0]], []

    return _objective_loss(
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
        _siglip_build,
    )


def _siglip_build(cfg, sizes):
    rc = RowConfig(**cfg)
    return dist_build("siglip", rc), rc
