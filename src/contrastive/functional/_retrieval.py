"""The retrieval loss with in-batch and hard negatives and its features (GTE directions,
hardness weighting, Robinson's HCL, GIST guide masks, Matryoshka) on the engine; re-exported by
:mod:`contrastive.functional`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops import validation as V
from ..ops.common import Temperature, no_negatives_loss
from ..ops.engine import run as run_engine
from ..ops.matryoshka_objectives import matryoshka_objective
from ..ops.retrieval import retrieval_objective
from ..ops.retrieval_features import retrieval_features_objective
from ..ops.tiles import check_block_size
from ..ops.validation import check_common, check_pair, engine_backend


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
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Retrieval loss with in-batch and hard negatives (MultipleNegativesRankingLoss-style).

    The candidates are every positive and every negative; row ``i`` is a cross-entropy at its
    own positive:

    .. math::

        \ell_i = -\log \frac{\exp(a_i \cdot p_i / \tau)}
            {\sum_j \exp(a_i \cdot p_j / \tau) + \sum_m \exp(a_i \cdot n_m / \tau)}

    ``negatives`` ``(B, K, d)`` are K hard negatives per anchor (every anchor sees all B K of
    them, as in sentence-transformers), or ``(M, d)`` shared ones (e.g. a queue of earlier
    embeddings, which may carry no gradient). ``positive_ids``: a positive ``p_j`` (j != i) whose
    id equals that of ``p_i`` is not a negative of row i (a duplicate in the batch), in every
    direction. Computed blockwise, every mask per tile from O(N) vectors: O((B + M) d) memory.
    Derivation: ``docs/derivations/retrieval_loss.md``.

    The features people pick the loss for (issue 25), with sentence-transformers 6.3's semantics
    where it defines them:

    * ``directions`` / ``partition_mode`` (GTE, Li et al. 2023; MultipleNegativesRankingLoss's
      arguments, same refusals): ``"query_to_doc"`` (required), ``"doc_to_query"`` (p_i against
      every anchor), ``"query_to_query"`` (a_i against the other anchors), ``"doc_to_doc"`` (p_i
      against every document but query i's own: its positive and own hard negatives).
      ``"joint"``: one partition function per row over every set named, at the positive
      s(a_i, p_i); ``"per_direction"``: each direction's softmax, the losses averaged (refused
      with the same-type directions). ``("query_to_doc", "doc_to_query")`` per direction is the
      former ``symmetric=True``; without negatives it is :func:`~contrastive.functional.clip_loss`.
    * ``hardness_mode`` / ``hardness_strength`` alpha (Lan et al. 2025, Eq. 5): the query_to_doc
      logit of a selected negative is ``s / tau + alpha * stop_grad(s)``;
      ``"in_batch_negatives"``: candidates not the query's own (other positives, other queries'
      hard negatives); ``"hard_negatives"``: the query's own hard negatives; ``"all_negatives"``:
      every candidate but the positive. A shared ``(M, d)`` set counts as every query's own hard
      negatives.
    * ``hcl_beta`` / ``hcl_tau_plus`` (Robinson et al. 2021, the authors' code): row i's
      negatives (every candidate but its positive and masked duplicates) reweighted by
      ``exp(beta s / tau)`` normalised by their mean, debiased with ``tau+`` and clamped at
      ``n_i exp(-1/tau)``; ``loss_i = -log(e^{l_i} / (e^{l_i} + Ng_i))``. A learnable temperature
      gets the clamp floor's derivative too. Only with the default directions and without
      hardness or a guide.
    * ``guide`` (GIST, Solatorio 2024; GISTEmbedLoss's masks): guide embeddings from a second
      model (no gradient, any width), ``t_i = g(a_i, p_i)`` their cosine; candidate j is dropped
      from row i when its guide similarity to row i exceeds ``t_i - guide_margin``
      (``"absolute"``) or ``t_i - |t_i| guide_margin`` (``"relative"``); ties kept, also for a
      duplicate positive (bit-equal guide embeddings tie exactly); the row's own positive never
      dropped. ``contrast_anchors`` / ``contrast_positives`` add the anchor-anchor and the
      positive-positive (positives only) blocks, self pairs masked, each guide-masked against
      the same ``t_i``: GIST's blocks. With the default directions only.

    One anchor without negatives (B = 1, ``negatives=None``) has no negative: the loss is
    exactly 0, and so is its gradient.

    Args:
        anchors: queries.
        positives: the positive of each anchor, row-aligned.
        negatives: hard negatives ``(B, K, d)``, shared negatives ``(M, d)``, or ``None``.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        directions: the candidate sets, a tuple of ``"query_to_doc"``, ``"doc_to_query"``,
            ``"query_to_query"``, ``"doc_to_doc"``.
        partition_mode: ``"joint"`` or ``"per_direction"``.
        hardness_mode: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or ``"all_negatives"``.
        hardness_strength: alpha >= 0 (ignored without ``hardness_mode``, as in
            sentence-transformers).
        hcl_beta: Robinson's beta >= 0, or ``None`` (off).
        hcl_tau_plus: Robinson's class prior tau+ in [0, 1).
        guide: ``(guide_anchors, guide_positives)`` or with ``guide_negatives`` (needed exactly
            when ``negatives`` are given, same rows, any width), or ``None``.
        guide_margin: the margin of the false-negative threshold.
        guide_margin_strategy: ``"absolute"`` or ``"relative"``.
        contrast_anchors: add GIST's guide-masked anchor-anchor block (needs ``guide``).
        contrast_positives: add GIST's guide-masked positive-positive block (needs ``guide``).
        positive_ids: integer id of each positive ``(B,)`` (e.g. a document id).
        normalize: L2-normalise rows (anchors, positives and negatives).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-anchor losses).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own, all in one walk over the tiles
            (see :func:`~contrastive.functional.nt_xent`); needs ``normalize=True``. With
            the features that run on their own blocks (joint or same-type directions,
            hardness, HCL, a guide) each prefix is its own walk, exact but not fused.

    Shape:
        anchors, positives: ``(B, d)``; negatives: ``(B, K, d)`` or ``(M, d)``;
        positive_ids: ``(B,)``; output: scalar, or ``(B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``anchors``.

    Raises:
        TypeError: non-tensor or non-floating inputs, dtypes that differ, non-integer ids.
        ValueError: shapes that do not match (negatives or guide embeddings of the wrong shape,
            K = 0), devices that differ, temperature <= 0, NaN/Inf, zero rows, bad
            reduction/block_size/backend, an unknown or refused direction or partition mode,
            a bad hardness mode or negative strength, hcl_beta < 0 or tau+ outside [0, 1),
            refused feature combinations.

    Examples:
        >>> import torch
        >>> from contrastive import retrieval_loss
        >>> a = torch.eye(2); p = torch.eye(2); n = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
        >>> round(retrieval_loss(a, p, n, temperature=1.0).item(), 4)   # -log(e / (2e + 2))
        1.0064
        >>> two = retrieval_loss(a, p, n, 1.0, directions=("query_to_doc", "doc_to_query"))
        >>> round(two.item(), 4)   # joint: -log(e / (2e + 2 + e + 1))
        1.4119

    References:
        Henderson et al. Efficient Natural Language Response Suggestion for Smart Reply. 2017.
        Karpukhin et al. Dense Passage Retrieval for Open-Domain Question Answering. EMNLP 2020.
    """
    check_pair("anchors", anchors, "positives", positives)
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
    dirs = V.check_directions(directions, partition_mode)
    hardness_mode, hardness_strength = V.check_hardness(hardness_mode, hardness_strength)
    hcl = V.check_hcl(hcl_beta, hcl_tau_plus)
    contrast_anchors = V.check_bool("contrast_anchors", contrast_anchors)
    contrast_positives = V.check_bool("contrast_positives", contrast_positives)
    raw_guide = guide  # as given (a Matryoshka walk per prefix passes it on)
    if guide is not None:
        guide, guide_margin = V.check_guide(
            guide, anchors, negatives, guide_margin, guide_margin_strategy, check_finite
        )
    V.check_feature_combination(
        dirs, hardness_mode, hcl, guide is not None, contrast_anchors, contrast_positives
    )
    if hcl is not None and B < 2 and neg is None:
        raise ValueError("hcl_beta needs at least one negative per row: pass B >= 2 or negatives")
    temperature = V.check_param("temperature", temperature, anchors, True)
    check_common(names, tensors, reduction, check_finite, normalize)
    prefixes = V.check_prefixes(names, tensors, matryoshka_dims, matryoshka_weights, normalize)
    engine_backend("retrieval_loss", backend)
    if B == 1 and (neg is None or neg.shape[0] == 0):  # one pair: no negative, exactly 0
        return no_negatives_loss([anchors, positives], temperature, 1, reduction)
    bs = check_block_size(block_size, max(B, 1 if neg is None else neg.shape[0]), anchors.device)
    plain = (hardness_mode is None or hardness_strength == 0.0) and hcl is None and guide is None
    if plain and (
        dirs == ("query_to_doc",)
        or (set(dirs) == {"query_to_doc", "doc_to_query"} and partition_mode == "per_direction")
    ):
        build = matryoshka_objective(retrieval_objective(len(dirs) == 2, positive_ids, bs), prefixes)
    else:
        if prefixes is not None:  # the features' blocks have no prefix tiles yet: a walk per prefix
            parts = [
                w_k
                * retrieval_loss(
                    anchors[..., :d_k],
                    positives[..., :d_k],
                    None if negatives is None else negatives[..., :d_k],
                    temperature,
                    directions=dirs,
                    partition_mode=partition_mode,
                    hardness_mode=hardness_mode,
                    hardness_strength=hardness_strength,
                    hcl_beta=hcl_beta,
                    hcl_tau_plus=hcl_tau_plus,
                    guide=raw_guide,
                    guide_margin=guide_margin,
                    guide_margin_strategy=guide_margin_strategy,
                    contrast_anchors=contrast_anchors,
                    contrast_positives=contrast_positives,
                    positive_ids=positive_ids,
                    reduction=reduction,
                    block_size=block_size,
                    check_finite=False,
                )
                for d_k, w_k in zip(prefixes.dims, prefixes.weights)
            ]
            return torch.stack(parts).sum(0)
        K = negatives.shape[1] if negatives is not None and negatives.dim() == 3 else 0
        build = retrieval_features_objective(
            B=B,
            K=K,
            directions=dirs,
            partition_mode=partition_mode,
            hardness_mode=hardness_mode,
            hardness_strength=hardness_strength,
            hcl=hcl,
            guide=guide,
            guide_margin=float(guide_margin),
            guide_margin_strategy=guide_margin_strategy,
            contrast_anchors=contrast_anchors,
            contrast_positives=contrast_positives,
            positive_ids=positive_ids,
            bs=bs,
        )
    return run_engine(build, [anchors, positives, neg], temperature, normalize=normalize, reduction=reduction)
