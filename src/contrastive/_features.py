"""Validation of the loss-feature arguments (issue 25): GTE directions, hardness weighting,
Robinson's HCL, GIST guide masks. Each check raises one ``ValueError``/``TypeError`` naming the
argument and the fix, before any work."""

from __future__ import annotations

import math
from typing import Any

import torch

from . import _validation as V

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITION_MODES = ("joint", "per_direction")
HARDNESS_MODES = (None, "in_batch_negatives", "hard_negatives", "all_negatives")
MARGIN_STRATEGIES = ("absolute", "relative")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TypeError(f"{name} must be a finite float, got {value!r}")
    return float(value)


def check_directions(directions: Any, partition_mode: Any) -> tuple[str, ...]:
    """sentence-transformers 6.3 MultipleNegativesRankingLoss's rules: a non-empty tuple of known
    directions containing ``'query_to_doc'``; ``'per_direction'`` refuses the same-type
    directions. Repeats count once (its dict of similarity matrices keeps one per name)."""
    if isinstance(directions, str) or not isinstance(directions, (tuple, list)):
        raise TypeError(
            f"directions must be a tuple of direction names such as ('query_to_doc', 'doc_to_query'), "
            f"got {directions!r}"
        )
    if not directions:
        raise ValueError(
            "directions is empty; at least 'query_to_doc' (the positive pair's direction) is needed"
        )
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"directions has unknown names {bad}; valid: {DIRECTIONS}")
    if "query_to_doc" not in directions:
        raise ValueError("directions must include 'query_to_doc' (it contains the positive pair)")
    if partition_mode not in PARTITION_MODES:
        raise ValueError(f"partition_mode must be 'joint' or 'per_direction', got {partition_mode!r}")
    if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
        raise ValueError(
            "partition_mode='per_direction' needs every direction's candidates to include the positive pair; "
            "'query_to_query' and 'doc_to_doc' never do. Use partition_mode='joint' with them"
        )
    return tuple(dict.fromkeys(directions))


def check_hardness(mode: Any, strength: Any) -> tuple[str | None, float]:
    if mode not in HARDNESS_MODES:
        raise ValueError(f"hardness_mode must be one of {HARDNESS_MODES}, got {mode!r}")
    strength = _number("hardness_strength", strength)
    if strength < 0:
        raise ValueError(f"hardness_strength must be >= 0 (alpha of Lan et al.'s Eq. 5), got {strength}")
    # as MultipleNegativesRankingLoss: the strength is ignored without a mode
    return mode, (strength if mode is not None else 0.0)


def check_hcl(beta: Any, tau_plus: Any) -> tuple[float, float] | None:
    """``hcl_beta`` None (off) or >= 0, ``hcl_tau_plus`` in [0, 1) and only with ``hcl_beta``.
    A learnable temperature is supported (the clamp floor's derivative is included)."""
    tau_plus = _number("hcl_tau_plus", tau_plus)
    if beta is None:
        if tau_plus != 0.0:
            raise ValueError(
                f"hcl_tau_plus={tau_plus} needs hcl_beta; pass hcl_beta=0.0 for the debiased loss without reweighting"
            )
        return None
    beta = _number("hcl_beta", beta)
    if beta < 0:
        raise ValueError(
            f"hcl_beta must be >= 0 (the concentration of the hard-negative weights), got {beta}"
        )
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"hcl_tau_plus must be in [0, 1) (the class prior tau+), got {tau_plus}")
    return beta, tau_plus


def check_guide(
    guide: Any,
    anchors: torch.Tensor,
    negatives: torch.Tensor | None,
    margin: Any,
    strategy: Any,
    check_finite: bool,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], float]:
    """``guide`` = (guide_anchors (B, g), guide_positives (B, g), guide_negatives or None), the
    negatives shaped like ``negatives`` with width g; returns it (negatives flattened to rows)
    and the margin."""
    if not isinstance(guide, (tuple, list)) or len(guide) not in (2, 3):
        raise TypeError(
            "guide must be a tuple (guide_anchors, guide_positives) or (guide_anchors, guide_positives, "
            f"guide_negatives), got {type(guide).__name__}"
        )
    ga, gp, gn = guide[0], guide[1], guide[2] if len(guide) == 3 else None
    B = anchors.shape[0]
    for name, x in (("guide_anchors", ga), ("guide_positives", gp)):
        V.check_tensor(name, x, 2)
        if x.shape[0] != B:
            raise ValueError(f"{name} must have B = {B} rows like the anchors, got shape {tuple(x.shape)}")
    if ga.shape != gp.shape:
        raise ValueError(
            f"guide_anchors {tuple(ga.shape)} and guide_positives {tuple(gp.shape)} differ in shape"
        )
    if (gn is None) != (negatives is None):
        raise ValueError(
            "guide needs guide_negatives exactly when negatives are given (the guide embeddings of the same rows)"
        )
    if gn is not None:
        assert negatives is not None
        V.check_tensor("guide_negatives", gn)
        want = (*negatives.shape[:-1], ga.shape[1])
        if tuple(gn.shape) != want:
            raise ValueError(
                f"guide_negatives must have shape {want} (the negatives' rows, guide width), got {tuple(gn.shape)}"
            )
        gn = gn.reshape(-1, ga.shape[1])
    for name, x in (("guide_anchors", ga), ("guide_positives", gp), ("guide_negatives", gn)):
        if x is None:
            continue
        V.check_same_device("anchors", anchors, name, x)
        if check_finite:
            V.check_finite(name, x)
        V.check_nonzero_rows(name, x)
    margin = _number("guide_margin", margin)
    if strategy not in MARGIN_STRATEGIES:
        raise ValueError(f"guide_margin_strategy must be 'absolute' or 'relative', got {strategy!r}")
    return (ga.detach(), gp.detach(), None if gn is None else gn.detach()), margin
