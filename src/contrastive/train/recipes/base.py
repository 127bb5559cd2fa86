"""What a training recipe gives the command line: the :class:`Recipe` record.

Each recipe module (:mod:`.simclr`, :mod:`.siamese`, :mod:`.retrieval`) defines ``RECIPE``, a
:class:`Recipe` (:meth:`Recipe.of` makes it from the recipe's task and configuration);
:mod:`contrastive.train.recipes` collects them. This module imports nothing of the recipes, so
that they can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Recipe"]


@dataclass(frozen=True)
class Recipe:
    """What the command line needs from a recipe.

    Attributes:
        name: the sub-command (``contrastive train NAME``).
        help: one line for ``--help``.
        config_cls: the configuration dataclass (sections of scalars).
        train: ``train(cfg, resume_dir or None, *, encoder=None) -> summary dict``.
        evaluate: ``evaluate(run_dir, checkpoint, *, encoder=None, allow_changed_data=False) -> dict``
            for ``contrastive eval``.
        load_encoder: ``load_encoder(run_dir, checkpoint, *, encoder=None) -> (encoder, cfg)`` for
            ``contrastive embed``. ``encoder``: the user's own encoder passed from Python.
        embed: for recipes whose inputs are not tensors (text): ``embed(run_dir, spec, checkpoint,
            batch_size, side, *, allow_changed_data=False) -> (N, d) array``, used by ``contrastive
            embed`` instead of ``load_encoder``.
        search: ``search(run_dir, query, k, checkpoint, *, allow_changed_data=False) -> [(score,
            text)]`` for ``contrastive search``.
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

    @classmethod
    def of(cls, task_cls: type, config_cls: type, help: str, **more: Any) -> Recipe:
        """The recipe of ``task_cls`` (a :class:`contrastive.train.loop.Task`; its ``name`` is the
        sub-command) with ``train``, ``evaluate`` and ``load_encoder`` made by
        :func:`contrastive.train.loop.recipe_functions`; ``more``: ``embed``, ``search``.

        Examples:
            >>> from contrastive.train.recipes import simclr
            >>> simclr.RECIPE.name, simclr.RECIPE.train is simclr.train
            ('simclr', True)
        """
        from ..loop import recipe_functions

        train, evaluate, load_encoder = recipe_functions(task_cls, config_cls)
        return cls(task_cls.name, help, config_cls, train, evaluate, load_encoder, **more)
