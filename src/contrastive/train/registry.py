"""The names the training settings accept: datasets, augmentations, optimisers, schedules, encoders.

One place for the name tables, so that imports go one way: :mod:`.config` validates settings
against these tables without importing the modules that implement them, and the
implementation modules (:mod:`.data`, :mod:`.augment`, :mod:`.optim`, :mod:`.models`) read
their names from here and import :mod:`.config` for the settings types. Neither torch nor any
other dependency is imported here.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "ENCODERS",
    "OBJECT",
    "OPTIMIZERS",
    "PYTHON",
    "SCHEDULES",
    "check_encoder_name",
]

#: ``data.name``: the loaders of :mod:`.data`.
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "folder", "npy")
#: ``augment.kind``: the augmentation sets of :mod:`.augment` (``auto`` picks by the data).
AUGMENTATIONS = ("auto", "simclr", "affine", "noise", "none")
#: ``optim.name``: the optimisers of :mod:`.optim`.
OPTIMIZERS = ("sgd", "lars", "adamw")
#: ``optim.schedule``: the learning-rate schedules of :mod:`.optim`.
SCHEDULES = ("cosine", "constant")
#: ``model.encoder``: the built-in encoders of :mod:`.models` (besides ``python:`` and ``object:``).
ENCODERS = ("auto", "mlp", "cnn", "resnet18")
#: ``model.encoder = "python:package.module:factory"``: your own encoder factory.
PYTHON = "python:"
#: Recorded for a module passed from Python: it must be passed again to resume or evaluate.
OBJECT = "object:"


def check_encoder_name(name: Any, key: str = "model.encoder") -> None:
    """Raise a ValueError unless ``name`` is a built-in encoder, ``python:package.module:factory``
    or ``object:...`` (recorded by a run whose encoder was passed from Python).

    Args:
        name: the ``model.encoder`` setting.
        key: the setting's name in error messages.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: an unknown encoder, or a ``python:`` spec without a factory.

    Examples:
        >>> check_encoder_name("cnn"); check_encoder_name("python:mypkg.nets:make")
        >>> check_encoder_name("python:mypkg.nets")
        Traceback (most recent call last):
        ...
        ValueError: model.encoder='python:mypkg.nets' must look like python:package.module:factory (a callable taking the sample shape and the embedding size)
    """
    if not isinstance(name, str):
        raise TypeError(f"{key} must be a string, got {type(name).__name__}")
    if name in ENCODERS or name.startswith(OBJECT):
        return
    if name.startswith(PYTHON):
        module, _, attr = name[len(PYTHON) :].partition(":")
        if module and attr and all(p.isidentifier() for p in module.split(".") + attr.split(".")):
            return
        raise ValueError(
            f"{key}={name!r} must look like python:package.module:factory (a callable taking the "
            f"sample shape and the embedding size)"
        )
    raise ValueError(f"{key} must be one of {ENCODERS} or python:package.module:factory, got {name!r}")
