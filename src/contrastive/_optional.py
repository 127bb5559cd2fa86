"""Optional dependencies: the one place that turns a missing package into the command that
installs it. Every lazy import of a package from an extra goes through :func:`needs`::

    with needs("train", "the loss plot"):
        import matplotlib

so a wheel installed without that extra says ``pip install "contrastive[train]"`` instead of
``No module named 'matplotlib'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["EXTRAS", "install_hint", "needs"]

# extra -> what it installs (import names), from pyproject.toml's optional-dependencies; the
# train extra's scikit-learn brings scipy; tensorboard is in no extra
EXTRAS = {
    "train": (
        "kornia",
        "sklearn",
        "scipy",
        "matplotlib",
        "tqdm",
        "safetensors",
        "PIL",
        "threadpoolctl",
        "tokenizers",
        "ir_measures",
        "tomli",
    ),
    "metric": ("sklearn", "scipy"),
    "hf": ("transformers",),
    "triton": ("triton",),
    "sentence-transformers": ("sentence_transformers",),
    "pml": ("pytorch_metric_learning",),
}
_PIP_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow"}


def install_hint(module: str, extra: str | None = None) -> str:
    """What to install for the missing top-level ``module``.

    Examples:
        >>> install_hint("sklearn", "train")
        'pip install "contrastive[train]"'
        >>> install_hint("tensorboard")
        'pip install tensorboard'
    """
    top = module.split(".")[0]
    if extra is None:
        extra = next((e for e, mods in EXTRAS.items() if top in mods), None)
    if extra is not None and top in EXTRAS.get(extra, ()):
        return f'pip install "contrastive[{extra}]"'
    return f"pip install {_PIP_NAMES.get(top, top)}"


@contextlib.contextmanager
def needs(extra: str, what: str) -> Iterator[None]:
    """Run an import block; a missing package raises :class:`ModuleNotFoundError` naming
    ``what`` needs it and the extra that installs it.

    Examples:
        >>> import sys
        >>> sys.modules["kornia"], saved = None, sys.modules.get("kornia")
        >>> try:
        ...     with needs("train", "augmentation"):
        ...         import kornia
        ... except ModuleNotFoundError as err:
        ...     print(err)
        ... finally:
        ...     _ = sys.modules.pop("kornia") if saved is None else sys.modules.update(kornia=saved)
        augmentation needs kornia, which is not installed: pip install "contrastive[train]"
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {sorted(EXTRAS)}, got {extra!r}")
    try:
        yield
    except ModuleNotFoundError as err:
        name = (err.name or "").split(".")[0]
        if not name or name == "contrastive":
            raise
        raise ModuleNotFoundError(
            f"{what} needs {name}, which is not installed: {install_hint(name, extra)}", name=err.name
        ) from None
