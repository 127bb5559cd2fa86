"""Triton GPU kernels for the blockwise InfoNCE engine (optional: ``pip install 'contrastive[triton]'``).

Importing this package never imports Triton: the kernels load on the first call of
:func:`info_nce_triton` or :func:`clip_triton`. The contract is the torch engine's, so that a
backend switch is a swap (see :mod:`contrastive.kernels.dispatch` for the rule).

* :func:`info_nce_triton` ``(z, inv_temp, exclude_self, weights=None, compute_grad=True,
  block_size=None) -> (loss_rows, grad_z, d_inv_temp)``
* :func:`clip_triton` ``(a, b, inv_temp, weights=None, compute_grad=True, block_size=None)
  -> (loss_rows, grad_a, grad_b, d_inv_temp)``
* :func:`available`: Triton importable and a CUDA device present (or ``TRITON_INTERPRET=1``).

CUDA tensors run compiled kernels; CPU tensors run under the Triton interpreter, only when
``TRITON_INTERPRET=1`` is set (exact, slow, for tests).
"""

from __future__ import annotations

import importlib.util

__all__ = ["available", "info_nce_triton", "clip_triton", "triton_installed"]


def triton_installed() -> bool:
    """Whether the ``triton`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def available() -> bool:
    """Whether the Triton kernels can run: Triton imports and CUDA is present or ``TRITON_INTERPRET=1``.

    Examples:
        >>> isinstance(available(), bool)
        True
    """
    import torch

    from .dispatch import interpret_enabled

    if not (interpret_enabled() or torch.cuda.is_available()) or not triton_installed():
        return False
    from ._launch import _triton_importable

    return _triton_importable()


def __getattr__(name: str):
    """``info_nce_triton`` and ``clip_triton`` are :mod:`.host`'s, imported on first use (one
    definition each; importing this package stays light)."""
    if name in ("info_nce_triton", "clip_triton"):
        from . import host

        return getattr(host, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
