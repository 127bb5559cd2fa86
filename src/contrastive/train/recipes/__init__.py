"""Training recipes. Each recipe module defines ``RECIPE``, a :class:`Recipe`; the ``train``
command offers every recipe module listed in :data:`RECIPE_MODULES` that is installed, so a
new recipe (e.g. ``siamese``) is one new module plus one line here. A recipe module is a
:class:`contrastive.train.loop.Task` subclass (data, model, batch, embedding, loss,
evaluation) and three thin functions on the shared loop.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPE_MODULES", "Recipe", "available_recipes", "get_recipe"]

RECIPE_MODULES = [
    "contrastive.train.recipes.simclr",
    "contrastive.train.recipes.siamese",
    "contrastive.train.recipes.retrieval",
]


@dataclass(frozen=True)
class Recipe:
    """What the command line needs from a recipe.

    Attributes:
        name: the sub-command (``contrastive train NAME``).
        help: one line for ``--help``.
        config_cls: the configuration dataclass (sections of scalars).
        train: ``train(cfg, resume_dir or None, *, encoder=None) -> summary dict``.
        evaluate: ``evaluate(run_dir, checkpoint, *, encoder=None) -> dict`` for ``contrastive eval``.
        load_encoder: ``load_encoder(run_dir, checkpoint, *, encoder=None) -> (encoder, cfg)`` for
            ``contrastive embed``. ``encoder``: the user's own encoder passed from Python.
        embed: for recipes whose inputs are not tensors (text): ``embed(run_dir, spec, checkpoint,
            batch_size, side) -> (N, d) array``, used by ``contrastive embed`` instead of ``load_encoder``.
        search: ``search(run_dir, query, k, checkpoint) -> [(score, text)]`` for ``contrastive search``.
    """

    name: str
    help: str
    config_cls: type
    train: Callable[[Any, str | None], dict[str, Any]]
    evaluate: Callable[[str, str], dict[str, Any]]
    load_encoder: Callable[[str, str], Any]
    embed: Callable[..., Any] | None = (
        None  # text recipes: embed(run_dir, spec, checkpoint, batch_size, side)
    )
    search: Callable[..., Any] | None = None  # search(run_dir, query, k, checkpoint) -> [(score, text)]


def available_recipes() -> dict[str, Recipe]:
    """``{name: Recipe}`` for every installed module of :data:`RECIPE_MODULES`.

    Examples:
        >>> "simclr" in available_recipes()
        True
    """
    out = {}
    for module in RECIPE_MODULES:
        if importlib.util.find_spec(module) is None:
            continue
        recipe = importlib.import_module(module).RECIPE
        out[recipe.name] = recipe
    return out


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a ValueError lists the available ones otherwise."""
    recipes = available_recipes()
    if name not in recipes:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(sorted(recipes))}")
    return recipes[name]
