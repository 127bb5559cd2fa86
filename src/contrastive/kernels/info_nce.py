"""Deprecated: the Triton host code moved to :mod:`contrastive.kernels.host` (removed next release).

Importing this module warns once and re-exports the host module's names, plus the two it
used to carry: ``available`` (now :func:`contrastive.kernels.available`, and a warning alias
here) and ``interpret_enabled`` (now :func:`contrastive.kernels.dispatch.interpret_enabled`).
"""

from __future__ import annotations

import warnings

from .dispatch import interpret_enabled  # noqa: F401  (re-exported for older callers)
from .host import *  # noqa: F403  (re-exported for older callers)
from .host import FIXED_SHIFT_MAX, clip_triton, info_nce_triton  # noqa: F401

warnings.warn(
    "contrastive.kernels.info_nce is deprecated; import from contrastive.kernels (info_nce_triton, "
    "clip_triton, available) or contrastive.kernels.host",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["info_nce_triton", "clip_triton", "available", "interpret_enabled", "FIXED_SHIFT_MAX"]


def available() -> bool:
    """Deprecated alias of :func:`contrastive.kernels.available` (removed in the next release).

    Returns:
        Whether the Triton kernels can run here.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     isinstance(available(), bool)
        True
    """
    from . import available as _available

    warnings.warn(
        "contrastive.kernels.info_nce.available is deprecated; use contrastive.kernels.available",
        DeprecationWarning,
        stacklevel=2,
    )
    return _available()
