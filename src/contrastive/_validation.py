"""Input validation shared by the public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that names the
argument and says how to fix it. None of these helpers is public API.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from .ops.common import ROWS

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


def check_unit_rows(name: str, x: torch.Tensor) -> None:
    """Deprecated alias of :func:`check_nonzero_rows` (the old name said "unit" but the
    check has always been "not zero")."""
    warnings.warn("check_unit_rows is deprecated; use check_nonzero_rows", DeprecationWarning, stacklevel=2)
    check_nonzero_rows(name, x)


INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


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


def no_negatives_loss(
    tensors: list[torch.Tensor], temperature: Any, rows: int, reduction: str
) -> torch.Tensor:
    """The loss of a batch that has no negative at all (one pair): exactly 0, and so is its
    gradient (the softmax is over the positive alone), as the cross-entropy of one logit is in
    sentence-transformers and open_clip; computed rather than rounded (the engine's
    ``lse - positive`` leaves +-1e-7 in float32, a negative loss). The zero stays in the graph
    of ``tensors`` (and a tensor ``temperature``), so ``backward`` fills their ``.grad`` with 0.

    Examples:
        >>> z = torch.randn(1, 3, requires_grad=True)
        >>> loss = no_negatives_loss([z], 0.5, 2, "mean"); loss.backward()
        >>> loss.item(), z.grad.abs().sum().item()
        (0.0, 0.0)
    """
    leaves = [t for t in tensors if t is not None] + [temperature] * isinstance(temperature, torch.Tensor)
    zero = sum((t * 0).sum().to(tensors[0].dtype) for t in leaves)  # 0 in the graph of every input
    if reduction == "none":
        return zero + torch.zeros(rows, dtype=tensors[0].dtype, device=tensors[0].device)  # (rows,)
    return zero
