"""Training recipes. Each recipe module defines ``RECIPE``, a :class:`~.base.Recipe`; the
``train`` command offers every recipe in :data:`RECIPES`, so a new recipe (e.g. ``siamese``) is
one new module plus one import and one entry here. A recipe module is a
:class:`contrastive.train.loop.Task` subclass (data, model, batch, embedding, loss,
evaluation) and three thin functions on the shared loop.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import retrieval, siamese, simclr
from .base import Recipe

__all__ = ["RECIPES", "Recipe", "available_recipes", "get_recipe"]

#: The recipe modules, in the order ``contrastive train --help`` lists them.
RECIPES = (simclr, siamese, retrieval)


def __getattr__(name: str) -> Any:
    if name == "RECIPE_MODULES":  # deprecated: the recipes are imported by name (RECIPES)
        warnings.warn(
            "contrastive.train.recipes.RECIPE_MODULES is deprecated and goes in the next release; "
            "use contrastive.train.recipes.RECIPES (the modules) or available_recipes()",
            DeprecationWarning,
            stacklevel=2,
        )
        return [module.__name__ for module in RECIPES]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_recipes() -> dict[str, Recipe]:
    """``{name: Recipe}`` for every recipe module of :data:`RECIPES`.

    Examples:
        >>> "simclr" in available_recipes()
        True
    """
    return {module.RECIPE.name: module.RECIPE for module in RECIPES}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a ValueError lists the available ones otherwise."""
    recipes = available_recipes()
    if name not in recipes:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(sorted(recipes))}")
    return recipes[name]
