"""Per-tile selectors of :mod:`.blockloss`: which entries of a logit tile a side drops (self
pairs, equal ids, a query's own documents, a guide's false negatives) or boosts (hardness),
from O(N) vectors, never as an N x N tensor.

A selector is ``(i0, i1, j0, j1) -> bool tile`` (True = selected) in the tile's orientation
(global rows i0:i1, columns j0:j1), or ``None`` for nothing. Three are recognised by type and
cost no tile: :class:`Diag` (applied as a diagonal fill), :class:`Everything` and
:class:`AllButDiag` (boosts of a whole block).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: a per-tile selector: (i0, i1, j0, j1) -> bool tile (True = selected) or None (nothing)
Sel = Callable[[int, int, int, int], "torch.Tensor | None"]


def _diag(i0: int, i1: int, j0: int, j1: int, dev: torch.device) -> torch.Tensor:
    """(m, n) bool: global row == global column."""
    return torch.arange(i0, i1, device=dev)[:, None] == torch.arange(j0, j1, device=dev)[None, :]


class Diag:
    """Selects the global diagonal i == j (self pairs, a row's own positive); a mask applies it
    as a diagonal fill, without a tile. Symmetric, so it is its own transpose."""

    def __init__(self, dev: torch.device):
        self.dev = dev

    def __call__(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        return _diag(i0, i1, j0, j1, self.dev)


class Everything:
    """Selects every entry (a boost on the whole block)."""

    def __call__(self, i0: int, i1: int, j0: int, j1: int) -> None:
        return None


class AllButDiag:
    """Selects every entry but the global diagonal (a boost on every negative of a row)."""

    def __call__(self, i0: int, i1: int, j0: int, j1: int) -> None:
        return None


def eq_sel(rk: torch.Tensor, ck: torch.Tensor, keep_diag: bool = False) -> Sel:
    """Entries with equal keys (the global diagonal left out when ``keep_diag``)."""

    def sel(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        m = rk[i0:i1, None] == ck[None, j0:j1]
        if keep_diag:
            m.diagonal(i0 - j0).fill_(False)
        return m

    return sel


def transposed(sels: Sequence[Sel | None]) -> list[Sel]:
    """Selectors for the column side of a tile: each asked with the roles of rows and columns
    swapped (entry (i, j) of the tile is entry (j, i) of row j), returned in tile orientation."""

    def t(sel: Sel) -> Sel:
        if isinstance(sel, Diag):
            return sel

        def f(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor | None:
            m = sel(j0, j1, i0, i1)
            return None if m is None else m.T

        return f

    return [t(s) for s in sels if s is not None]


class Cut:
    """A tile's dropped entries: a bool tile (from the general selectors) and/or the global
    diagonal. Zeroing multiplies by a 0/1 tile (a masked fill with a dense random mask costs
    about ten times as much on CPU)."""

    def __init__(self, m: torch.Tensor | None, diag: bool, off: int):
        self.m, self.diag, self.off = m, diag, off
        self.keep = None if m is None else torch.logical_not(m)

    def zero_(self, T: torch.Tensor) -> None:
        if self.keep is not None:
            if self.keep.dtype != T.dtype:
                self.keep = self.keep.to(T.dtype)
            T.mul_(self.keep)
        if self.diag:
            T.diagonal(self.off).zero_()

    def neg_inf_(self, T: torch.Tensor) -> None:
        if self.m is not None:
            T.masked_fill_(self.m, float("-inf"))
        if self.diag:
            T.diagonal(self.off).fill_(float("-inf"))


def cut(sels: Sequence[Sel], i0: int, i1: int, j0: int, j1: int) -> Cut | None:
    """The :class:`Cut` of a side's selectors on one tile (``None``: nothing dropped)."""
    m, diag = None, False
    for s in sels:
        if isinstance(s, Diag):
            diag = True
            continue
        t = s(i0, i1, j0, j1)
        if t is not None:
            m = t if m is None else m | t
    return None if m is None and not diag else Cut(m, diag, i0 - j0)
