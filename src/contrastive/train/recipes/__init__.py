"""Training recipes. Each recipe module defines ``RECIPE``, a :class:`~.base.Recipe`; the
``train`` command offers every recipe in :data:`RECIPES`, so a new recipe (e.g. ``siamese``) is
one new module plus one import and one entry here. A recipe module is a
:class:`contrastive.train.loop.Task` subclass (data, model, batch, embedding, loss,
evaluation) and three thin functions on the shared loop.
"""

from __future__ import annotations

from . import retrieval, siamese, simclr
from .base import Recipe

__all__ = ["RECIPES", "Recipe", "available_recipes", "get_recipe"]

#: The recipe modules, in the order ``contrastive train --help`` lists them.
RECIPES = (simclr, siamese, retrieval)


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
