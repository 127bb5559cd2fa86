"""Input validation shared by the public functions (:mod:`contrastive.functional`,
:mod:`contrastive.distributed`, :mod:`contrastive.losses`), and the choice of back-end.

Every check raises ``TypeError`` or ``ValueError`` before any work, with a message that
names the argument and says how to fix it. None of these helpers is public API.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .common import ROWS, Rows, compute_dtype
from .matryoshka import Prefixes, prefix_floor, prefix_norms

FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
REDUCTIONS = ("mean", "sum", "none")


def check_tensor(name: str, x: Any, ndim: int | None = None) -> torch.Tensor:
    """Check that ``x`` is a floating tensor with ``ndim`` dimensions and at least one row."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; "
            f"wrap it with torch.as_tensor({name}, dtype=torch.float32)"
        )
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float64, float32, bfloat16 or float16), "
            f"got {x.dtype}; convert it with {name}.float()"
        )
    check_not_meta(name, x)
    if ndim is not None and x.dim() != ndim:
        shape = "(N, d)" if ndim == 2 else "(N,)" if ndim == 1 else f"{ndim}-D"
        raise ValueError(
            f"{name} must be {ndim}-D with shape {shape}, got shape {tuple(x.shape)}; "
            f"reshape it, e.g. {name}.reshape(len({name}), -1)"
            if ndim == 2
            else f"{name} must have shape {shape}, got shape {tuple(x.shape)}"
        )
    if x.dim() >= 1 and x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one row")
    return x


def check_not_meta(name: str, x: torch.Tensor) -> None:
    """Refuse a meta tensor (shape only): every later check and op would need its values."""
    if x.is_meta:
        raise ValueError(
            f"{name} is a meta tensor (a shape without data), so nothing can be computed from "
            f"it; pass a tensor with data (materialise a meta module with "
            f"module.to_empty(device='cpu') and initialise its weights first)"
        )


def _row_blocks(x: torch.Tensor) -> list[torch.Tensor]:
    """``x`` cut along its first dimension into the engine's ``ROWS``-row blocks (a 0-d tensor
    is one block): the checks' temporaries stay as small as the engine's."""
    return [x] if x.dim() == 0 else list(x.split(ROWS))


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise if ``x`` holds NaN or Inf (one host sync; skip with ``check_finite=False``).

    Checked a block of rows at a time: ``torch.isfinite`` of a float tensor makes a float
    copy (|x|) and two boolean ones, which on the whole of a large batch of embeddings would
    be the loss's largest allocation."""
    check_not_meta(name, x)
    if x.numel() and not bool(torch.stack([torch.isfinite(b).all() for b in _row_blocks(x)]).all()):
        raise ValueError(
            f"{name} contains NaN or Inf; clean the input (or, if you know it is finite, "
            f"pass check_finite=False to skip this check)"
        )


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}; row i of {name_a} is paired with row i of {name_b}"
        )


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} and {name_b} on {b.device}; move both to one device")


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_temperature(temperature: Any) -> float | torch.Tensor:
    """A positive finite float, or a positive finite scalar tensor (which may require grad).

    A tensor that requires grad is a learned temperature; when training has pushed it to
    0, inf or NaN the message says so and how to keep it in range.
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"temperature must be a scalar, got a tensor of shape {tuple(temperature.shape)}"
            )
        if not temperature.dtype.is_floating_point:
            raise TypeError(f"temperature tensor must be floating point, got {temperature.dtype}")
        if temperature.is_meta:
            raise ValueError("temperature is a meta tensor (no value); pass a float or a tensor with data")
        value = float(temperature.detach())
        if temperature.requires_grad and not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"the learned temperature (a tensor that requires grad, e.g. "
                f"InfoNCELoss(learn_temperature=True).log_temperature.exp()) has become {value}: "
                f"training pushed the learned parameter out of range; lower the learning rate, "
                f"clamp the parameter after each step (CLIP clamps logit_scale at log(100)), or "
                f"restart from a checkpoint saved before it diverged"
            )
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        value = float(temperature)
    else:
        raise TypeError(f"temperature must be a float or a scalar tensor, got {type(temperature).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be positive and finite, got {value}; SimCLR uses 0.5, CLIP 0.07")
    return temperature


def check_temperature_device(
    temperature: float | torch.Tensor, ref: torch.Tensor, name: str = "temperature"
) -> float | torch.Tensor:
    """A tensor ``temperature`` (or another scalar parameter, ``name``) on ``ref``'s device, as 0-d.

    A float passes through unchanged; a tensor must be on the embeddings' device and comes
    back reshaped to a 0-d tensor (a ``(1,)`` parameter is accepted).
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.device != ref.device:
            raise ValueError(
                f"{name} is on {temperature.device} and the embeddings on {ref.device}; "
                f"move the {name} tensor to {ref.device}"
            )
        return temperature.reshape(())
    return temperature


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be a real bool (or a NumPy/torch boolean scalar); ``'no'`` is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.numel() == 1:
        return bool(value)
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_margin(margin: Any) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(f"margin must be a float, got {type(margin).__name__}")
    margin = float(margin)
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be finite and >= 0, got {margin}; DrLIM uses margin=1.0")
    return margin


def check_nonzero_rows(name: str, x: torch.Tensor) -> None:
    """Raise when a row is exactly zero (its direction, needed to normalise, is undefined).

    Any row with a nonzero entry has a direction, however small or large its norm (rows of
    norm 1e-25 in float32 are valid): the normalisation rescales before it divides. NaN and
    Inf are :func:`check_finite`'s to refuse. No norm is computed here, so nothing can
    underflow or overflow.
    """
    zero = ~torch.cat([(b != 0).any(dim=-1).reshape(-1) for b in _row_blocks(x)])  # (N,), blockwise
    if bool(zero.any()):
        bad = int(torch.nonzero(zero)[0, 0])
        raise ValueError(
            f"{name} has a zero-norm row (row {bad}) and normalize=True needs its direction; "
            f"remove or perturb such rows, or pass normalize=False with your own normalisation"
        )


def check_matryoshka(dims: Any, weights: Any, width: int | None, normalize: bool) -> Prefixes | None:
    """The Matryoshka prefixes of ``matryoshka_dims`` / ``matryoshka_weights`` (``None``: off).

    Dims in any order, repeats allowed (sorted with their weights and merged as
    sentence-transformers' MatryoshkaLoss counts them), each in 1..width; weights finite reals,
    one per dim (``None``: ones). Each prefix is normalised on its own, so ``normalize=False``
    is refused. ``width=None``: not known yet (a Module's constructor), dims only checked >= 1."""
    if dims is None:
        if weights is not None:
            raise ValueError("matryoshka_weights was given without matryoshka_dims; pass both or neither")
        return None
    if isinstance(dims, (int, torch.Tensor)) or not isinstance(dims, (list, tuple)):
        raise TypeError(
            f"matryoshka_dims must be a list or tuple of ints such as (768, 512, 256, 128, 64), "
            f"got {type(dims).__name__}"
        )
    if not dims:
        raise ValueError(
            "matryoshka_dims is empty; pass at least one prefix dimension, or None for no Matryoshka"
        )
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"matryoshka_dims must hold ints, got {d!r} ({type(d).__name__})")
        if width is None and d < 1:
            raise ValueError(f"matryoshka_dims must be positive prefix dimensions, got {d}")
        if width is not None and not 1 <= d <= width:
            raise ValueError(
                f"matryoshka_dims must lie in 1..{width} (the embedding width), got {d}; "
                f"drop it or widen the embeddings"
            )
    if weights is not None:
        if isinstance(weights, (int, float, torch.Tensor)) or not isinstance(weights, (list, tuple)):
            raise TypeError(
                f"matryoshka_weights must be a list or tuple of numbers, got {type(weights).__name__}"
            )
        if len(weights) != len(dims):
            raise ValueError(
                f"matryoshka_weights has {len(weights)} entries for {len(dims)} matryoshka_dims; "
                f"give one weight per dim (or None for ones)"
            )
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"matryoshka_weights must be finite numbers, got {w!r}")
    if not normalize:
        raise ValueError(
            "matryoshka_dims normalises every prefix on its own (as sentence-transformers' "
            "MatryoshkaLoss does), so normalize=False cannot go with it; pass normalize=True"
        )
    return Prefixes(dims, weights)


def check_prefix_rows(name: str, x: torch.Tensor, prefixes: Prefixes | None) -> None:
    """Raise when a row's prefix is zero or too small against the row for its direction to be
    computed (below :func:`~contrastive.ops.matryoshka.prefix_floor` of the row's norm)."""
    if prefixes is None:
        return
    x = x.detach().reshape(-1, x.shape[-1])
    rows = Rows(x, compute_dtype(x.dtype), True)
    norms = prefix_norms(rows, prefixes.bounds)  # (K, N), of the unit rows
    floor = prefix_floor(rows.dtype, x.shape[1])
    bad = norms < floor
    if bool(bad.any()):
        k, i = (int(v) for v in torch.nonzero(bad)[0])
        what = (
            "is all zeros" if float(norms[k, i]) == 0 else f"has norm {float(norms[k, i]):.3g} of the row's"
        )
        raise ValueError(
            f"{name} row {i}: its first {prefixes.dims[k]} entries (a matryoshka_dims prefix) {what}, "
            f"so that prefix has no direction to normalise (below {floor:.2g} of the row); "
            f"perturb such rows or drop that dim"
        )


INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_prefixes(
    names: Sequence[str], tensors: Sequence[torch.Tensor], dims: Any, weights: Any, normalize: bool
) -> Prefixes | None:
    """The validated Matryoshka prefixes (``None``: off), every input's prefixes checked."""
    prefixes = check_matryoshka(dims, weights, tensors[0].shape[-1], normalize)
    for n, t in zip(names, tensors):
        check_prefix_rows(n, t, prefixes)
    return prefixes


def check_two_view_features(
    names: Sequence[str],
    tensors: Sequence[torch.Tensor],
    dims: Any,
    weights: Any,
    normalize: bool,
    hcl_beta: Any,
    hcl_tau_plus: Any,
    backend: str,
) -> tuple[Prefixes | None, tuple[float, float] | None, str]:
    """The Matryoshka prefixes and Robinson's HCL of ``info_nce`` / ``nt_xent`` / ``clip_loss``,
    and the back-end they leave: Matryoshka runs on the torch engine only (``'auto'`` becomes
    ``'torch'``), and the two do not combine yet."""
    prefixes = check_prefixes(names, tensors, dims, weights, normalize)
    if prefixes is not None:
        if backend in ("triton", "dense"):
            raise ValueError(
                f"matryoshka_dims runs on the torch engine only, got backend={backend!r}; "
                f"use backend='auto' or 'torch'"
            )
        backend = "torch"
    hcl = check_hcl(hcl_beta, hcl_tau_plus)
    if hcl is not None and prefixes is not None:
        raise ValueError("hcl_beta and matryoshka_dims do not combine yet; drop one of them")
    return prefixes, hcl, backend


def check_ids(name: str, ids: Any, n: int, ref: torch.Tensor, what: str) -> torch.Tensor:
    """An integer vector of length n on ref's device."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of integer {what}, got {type(ids).__name__}; "
            f"wrap it with torch.as_tensor({name})"
        )
    if ids.dtype not in INT_DTYPES:
        raise TypeError(
            f"{name} must hold integer {what}, got dtype {ids.dtype}; convert it with {name}.long()"
        )
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one entry per row, got {tuple(ids.shape)}")
    if ids.device != ref.device:
        raise ValueError(
            f"{name} is on {ids.device} and the embeddings on {ref.device}; move {name} to {ref.device}"
        )
    return ids.long()


def check_param(name: str, value: Any, ref: torch.Tensor, positive: bool) -> float | torch.Tensor:
    """temperature (positive) or bias (any finite value): a float or a scalar tensor on ref's device."""
    if positive:
        value = check_temperature(value)
    elif isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.dtype.is_floating_point:
            raise ValueError(
                f"{name} must be a float or a floating scalar tensor, got shape "
                f"{tuple(value.shape)} and dtype {value.dtype}"
            )
        if not math.isfinite(float(value.detach())):
            raise ValueError(f"{name} must be finite, got {float(value.detach())}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
        value = float(value)
    else:
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    return check_temperature_device(value, ref, name)


BACKENDS = ("auto", "torch", "triton", "dense")


def check_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Validate ``backend`` and resolve ``'auto'``: Triton for CUDA tensors when it is
    installed, else the torch engine (see :mod:`contrastive.kernels.dispatch`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from ..kernels.dispatch import choose_backend

    return choose_backend(backend, *tensors)


def engine_backend(name: str, backend: Any) -> str:
    """These objectives have no Triton kernel yet: 'auto' (on any device) and 'torch' run the
    torch engine."""
    if backend not in ("auto", "torch"):
        raise ValueError(
            f"backend for {name} must be 'auto' or 'torch' (there is no Triton kernel for it yet), "
            f"got {backend!r}"
        )
    return "torch"


def check_pair(na: str, a: Any, nb: str, b: Any) -> None:
    """Two 2-d floating tensors of one shape, device and dtype."""
    check_tensor(na, a, 2)
    check_tensor(nb, b, 2)
    check_same_shape(na, a, nb, b)
    check_same_device(na, a, nb, b)
    if a.dtype != b.dtype:
        raise TypeError(f"{na} is {a.dtype} and {nb} is {b.dtype}; cast both to one dtype")


def check_common(
    names: Sequence[str],
    tensors: Sequence[torch.Tensor],
    reduction: Any,
    finite: bool,
    normalize: bool,
) -> None:
    """The reduction, and each named tensor finite (when ``finite``) and without a zero row
    (when ``normalize``; rows are the last dimension's vectors)."""
    check_reduction(reduction)
    for n, t in zip(names, tensors):
        if finite:
            check_finite(n, t)
        if normalize:
            check_nonzero_rows(n, t.reshape(-1, t.shape[-1]))


# -- the loss features (GTE directions, hardness weighting, Robinson's HCL, GIST guide masks) --

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
    finite: bool,
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
        check_tensor(name, x, 2)
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
        check_tensor("guide_negatives", gn)
        want = (*negatives.shape[:-1], ga.shape[1])
        if tuple(gn.shape) != want:
            raise ValueError(
                f"guide_negatives must have shape {want} (the negatives' rows, guide width), got {tuple(gn.shape)}"
            )
        gn = gn.reshape(-1, ga.shape[1])
    for name, x in (("guide_anchors", ga), ("guide_positives", gp), ("guide_negatives", gn)):
        if x is None:
            continue
        check_same_device("anchors", anchors, name, x)
        if finite:
            check_finite(name, x)
        check_nonzero_rows(name, x)
    margin = _number("guide_margin", margin)
    if strategy not in MARGIN_STRATEGIES:
        raise ValueError(f"guide_margin_strategy must be 'absolute' or 'relative', got {strategy!r}")
    return (ga.detach(), gp.detach(), None if gn is None else gn.detach()), margin


def check_hcl_engine(name: str, backend: str, decoupled: bool, n_neg: int) -> None:
    """Robinson's estimator runs on the torch engine, with the positive in its denominator."""
    if backend not in ("auto", "torch"):
        raise ValueError(
            f"{name} with hcl_beta runs on the torch engine only, got backend={backend!r}; use 'auto' or 'torch'"
        )
    if decoupled:
        raise ValueError(
            f"{name}: hcl_beta and decoupled=True are two estimators of one denominator; pick one"
        )
    if n_neg < 1:
        raise ValueError(
            f"{name} with hcl_beta needs at least one negative per row, got {n_neg}; pass more pairs"
        )


def check_feature_combination(
    dirs: tuple[str, ...],
    hardness_mode: str | None,
    hcl: tuple[float, float] | None,
    guided: bool,
    contrast_anchors: bool,
    contrast_positives: bool,
) -> None:
    """The retrieval features' combinations, as :func:`contrastive.retrieval_loss` and its
    distributed form allow them: a guide and HCL with the default direction only, GIST's
    blocks only with a guide, HCL without hardness or a guide."""
    if guided and dirs != ("query_to_doc",):
        raise ValueError(
            f"guide runs with directions=('query_to_doc',) only (GIST's blocks come from "
            f"contrast_anchors / contrast_positives), got directions={dirs}"
        )
    if not guided and (contrast_anchors or contrast_positives):
        raise ValueError(
            "contrast_anchors / contrast_positives are GIST's guide-masked blocks and need guide; without a guide "
            "use directions=('query_to_doc', 'query_to_query') or ('query_to_doc', 'doc_to_doc')"
        )
    if hcl is not None and (dirs != ("query_to_doc",) or hardness_mode is not None or guided):
        raise ValueError(
            "hcl_beta (Robinson's estimator) runs with directions=('query_to_doc',) only, without "
            "hardness_mode and without guide; drop one of them"
        )
