"""Input validation shared by the public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that names the
argument and says how to fix it. None of these helpers is public API.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
REDUCTIONS = ("mean", "sum", "none")


def check_tensor(name: str, x, ndim: Optional[int] = None) -> torch.Tensor:
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


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise if ``x`` holds NaN or Inf (one reduction; skip with ``check_finite=False``)."""
    if not bool(torch.isfinite(x).all()):
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
        raise ValueError(
            f"{name_a} is on {a.device} and {name_b} on {b.device}; move both to one device"
        )


def check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_temperature(temperature) -> Union[float, torch.Tensor]:
    """A positive finite float, or a positive finite scalar tensor (which may require grad)."""
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"temperature must be a scalar, got a tensor of shape {tuple(temperature.shape)}"
            )
        if not temperature.dtype.is_floating_point:
            raise TypeError(f"temperature tensor must be floating point, got {temperature.dtype}")
        value = float(temperature.detach())
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        value = float(temperature)
    else:
        raise TypeError(
            f"temperature must be a float or a scalar tensor, got {type(temperature).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"temperature must be positive and finite, got {value}; SimCLR uses 0.5, CLIP 0.07"
        )
    return temperature


def check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(f"margin must be a float, got {type(margin).__name__}")
    margin = float(margin)
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be finite and >= 0, got {margin}; DrLIM uses margin=1.0")
    return margin


def check_unit_rows(name: str, x: torch.Tensor) -> None:
    """Raise when a row has zero norm (its direction, needed to normalise, is undefined)."""
    norms = torch.linalg.vector_norm(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1)
    if bool((norms == 0).any()):
        bad = int(torch.nonzero(norms == 0)[0, 0])
        raise ValueError(
            f"{name} has a zero-norm row (row {bad}) and normalize=True needs its direction; "
            f"remove or perturb such rows, or pass normalize=False with your own normalisation"
        )
