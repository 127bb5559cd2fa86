"""The backend rule of the InfoNCE engine: ``backend='auto' | 'torch' | 'triton'``.

* ``'torch'``: the pure-torch blockwise engine, on any device and dtype.
* ``'triton'``: the Triton kernels of :mod:`contrastive.kernels`; CUDA tensors of dtype
  float32, bfloat16 or float16 (or CPU tensors under ``TRITON_INTERPRET=1``, for tests).
  Anything else raises, naming the fix.
* ``'auto'`` (default): ``'triton'`` when every tensor is a CUDA tensor of a supported
  dtype and Triton is installed, else ``'torch'``. CPU tensors always take the torch
  engine under ``'auto'``, even with ``TRITON_INTERPRET=1`` (the interpreter is for tests).
* Any other name (``'dense'``, ...) is the caller's business and comes back unchanged.

Deciding imports nothing: Triton itself loads only when a kernel runs.
"""

from __future__ import annotations

import os

import torch

__all__ = ["choose_backend", "interpret_enabled"]

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpret_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` is set to a true value (``1``, ``true``, ``yes``, ``on``).

    The one place the package reads the variable: CPU tensors may then run the Triton kernels
    under the Triton interpreter (exact, slow, for tests).

    Returns:
        True when the variable, stripped and lower-cased, is one of the true values.

    Examples:
        >>> isinstance(interpret_enabled(), bool)
        True
    """
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def choose_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Resolve ``'auto'`` to ``'torch'`` or ``'triton'`` for these tensors; check ``'triton'``.

    Args:
        backend: ``'auto'``, ``'triton'``, or another backend name (returned unchanged;
            the caller validates it).
        *tensors: the embeddings the loss will read (one or two ``(N, d)`` tensors).

    Returns:
        The backend to run.

    Raises:
        ValueError: ``'triton'`` without Triton installed, or with tensors that are not on
            CUDA (and no ``TRITON_INTERPRET=1`` for CPU tensors).
        TypeError: ``'triton'`` with a dtype the kernels do not take (float64).

    Examples:
        >>> import torch
        >>> choose_backend("auto", torch.zeros(4, 3))      # CPU tensor: the torch engine
        'torch'
        >>> choose_backend("dense", torch.zeros(4, 3))      # not this module's decision
        'dense'
    """
    if backend not in ("auto", "triton"):
        return backend
    from . import triton_installed

    if backend == "auto":
        ok = (
            len(tensors) > 0
            and all(t.is_cuda and t.dtype in _TRITON_DTYPES for t in tensors)
            and triton_installed()
        )
        return "triton" if ok else "torch"
    if not triton_installed():
        raise ValueError(
            "backend='triton' needs the triton package: pip install 'contrastive[triton]', "
            "or use backend='torch'"
        )
    for t in tensors:
        if t.dtype not in _TRITON_DTYPES:
            raise TypeError(
                f"backend='triton' takes float32, bfloat16 or float16 embeddings, got {t.dtype}; "
                f"use backend='torch' for float64"
            )
        if not (t.is_cuda or (t.device.type == "cpu" and interpret_enabled())):
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got one on {t.device}; move the embeddings "
                f"to the GPU, use backend='torch', or set TRITON_INTERPRET=1 (CPU, slow, for tests)"
            )
    return "triton"
