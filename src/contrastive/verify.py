"""Deprecated: the ``contrastive gradcheck`` command moved to :mod:`contrastive.gradcheck`.

``import contrastive.verify`` warns and re-exports :mod:`contrastive.gradcheck`'s names (the
same objects: ``TOLERANCE`` is the one dict); removed in the next release.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import gradcheck as _gradcheck
from .gradcheck import *  # noqa: F403  (re-exported for older callers)

warnings.warn(
    "contrastive.verify is deprecated; it is now contrastive.gradcheck (the `contrastive gradcheck` command)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    # anything else (private helpers included) comes from the new module
    return getattr(_gradcheck, name)
