"""Tile bookkeeping shared by the blockwise engines: block plans, reusable tile buffers,
the shift rule (fixed shift or online max), and the default tile size.

For rows of norm at most rho, every logit s * inv_temp lies in [-c, c] with
c = inv_temp * rho_a * rho_b. The engines subtract the fixed shift c before exponentiating,
so every exponential lies in [exp(-2c), 1]: no overflow, and no underflow as long as
exp(-2c) is a normal number of the accumulation dtype. Past that point they switch to an
online (running) maximum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from .common import ROWS, Blocks, rowdot, take

DEFAULT_BLOCK_CPU = 512
DEFAULT_BLOCK_CUDA = 4096


def default_block_size(device: torch.device, n: int) -> int:
    """512 rows on CPU (the tile fits in cache next to the GEMM operands), 4096 on GPUs."""
    b = DEFAULT_BLOCK_CUDA if device.type == "cuda" else DEFAULT_BLOCK_CPU
    return max(1, min(b, n))


def check_block_size(block_size: object, n: int, device: torch.device) -> int:
    if block_size is None:
        return default_block_size(device, n)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(
            f"block_size must be a positive int (rows per tile) or None for automatic, got {block_size!r}"
        )
    return min(block_size, n)


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, end), ...] covering range(n) in steps of ``size``."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]


Tile = tuple[int, int, int, int, torch.Tensor, torch.Tensor, torch.Tensor]


def walk(
    x: Blocks, y: Blocks, inv_temp: float, bs: int, buf: TileBuffers, upper: bool = False
) -> Iterator[Tile]:
    """The tiles of S = inv_temp x y^T as ``(i0, i1, j0, j1, inv_temp x_I, x_I, y_J)``: for
    every row block I (in order), the column blocks J in order (only J >= I when ``upper``,
    for a symmetric S with y = x).

    Rows are visited in bands of ``ROWS`` rows: a band's rows (and their scaled copy) are made
    once, and each column block once per band rather than once per tile, which matters when x
    and y are :class:`~.common.Rows` made on the fly. For a fixed row block the column blocks
    still come in order, and for a fixed column block the row blocks, so sums over either index
    accumulate in the same order as a plain double loop (``upper`` interleaves them).
    """
    R, C, d = x.shape[0], y.shape[0], y.shape[1]
    band = max(1, ROWS // bs) * bs
    for b0 in range(0, R, band):
        b1 = min(b0 + band, R)
        xb = x[b0:b1]  # (band, d) rows made once per band
        xs = xb * inv_temp  # 1/tau folded into the band, never into all of x
        rows = blocks(b1 - b0, bs)
        for j0, j1 in blocks(C, bs)[b0 // bs if upper else 0 :]:
            y_j = take(y, j0, j1, buf.get("Y", j1 - j0, d))  # (bs, d)
            for r0, r1 in rows:
                if upper and j0 < b0 + r0:
                    continue
                yield b0 + r0, b0 + r1, j0, j1, xs[r0:r1], xb[r0:r1], y_j


def use_fixed_shift(c: float, dtype: torch.dtype) -> bool:
    """True when exp(-2c) is a normal number of ``dtype`` with headroom for the sums."""
    return 2.0 * c <= -math.log(torch.finfo(dtype).tiny) - 8.0


def _max_sq_norm(rows: Sequence[Blocks | None]) -> float:
    """max |x_i|^2 over the rows of every non-empty block (0 when there is none)."""
    return max((float(rowdot(x, x).max()) for x in rows if x is not None and x.shape[0]), default=0.0)


def logit_bound(
    inv_temp: float, xs: Sequence[Blocks | None], ys: Sequence[Blocks | None] | None = None
) -> tuple[float, bool]:
    """The logit bound of S = inv_temp X Y^T and the shift rule, for every objective (one place).

    c = inv_temp * max_i |x_i| * max_j |y_j| >= every |S_ij|, over the rows of the blocks in
    ``xs`` against those in ``ys`` (``None`` blocks and empty ones skipped); ``ys=None`` is the
    symmetric S = inv_temp Z Z^T of the rows in ``xs``, c = inv_temp * max_i |z_i|^2. Returns
    ``(c, fixed)``, ``fixed`` from :func:`use_fixed_shift` in the dtype of the first block.

    Examples:
        >>> import torch
        >>> logit_bound(2.0, [torch.tensor([[3.0, 4.0]])])   # 2 * 5^2; float32 exp(-100) underflows
        (50.0, False)
        >>> logit_bound(2.0, [torch.ones(1, 4)], [None, torch.full((1, 4), 3.0)])  # 2 * 2 * 6
        (24.0, True)
    """
    if ys is None:
        c = inv_temp * _max_sq_norm(xs)
    else:
        c = inv_temp * (_max_sq_norm(xs) * _max_sq_norm(ys)) ** 0.5
    dtype = next(x.dtype for x in xs if x is not None)
    return c, use_fixed_shift(c, dtype)


class TileBuffers:
    """Tile-shaped scratch tensors, allocated once per shape and reused across tiles."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self._bufs: dict[tuple[str, int, int], torch.Tensor] = {}

    def get(self, name: str, m: int, n: int) -> torch.Tensor:
        key = (name, m, n)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = torch.empty(m, n, dtype=self.dtype, device=self.device)
        return buf


def online_update(
    m: torch.Tensor,
    r: torch.Tensor,
    sl: slice,
    tile_max: torch.Tensor,
    expsum: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """One online log-sum-exp step on rows ``sl``: running max ``m``, running sum ``r`` (both in
    place). ``expsum(shift)`` returns the tile's sums of exp(S - shift); a row that has seen only
    -inf keeps shift 0, so no inf - inf appears."""
    new = torch.maximum(m[sl], tile_max)
    safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
    r[sl] = r[sl] * torch.exp(m[sl] - safe) + expsum(safe)
    m[sl] = new


class TileMask:
    """Which entries of a logit tile are not candidates, from O(N) vectors (never an N x N mask).

    An entry (i, j) (global row i, global column j) is masked when

    * ``self_offset`` is set and j == i + self_offset (self-similarity, a diagonal), or
    * ``row_key[i] == col_key[j]`` (equal ids: a false negative, or j = p(i) for a decoupled
      positive), unless ``keep_offset`` is set and j == i + keep_offset (the row's own positive).

    Args:
        self_offset: the diagonal to mask, or ``None``.
        row_key, col_key: integer vectors ``(R,)`` and ``(C,)``, or ``None``.
        keep_offset: the diagonal kept despite equal keys, or ``None``.

    Examples:
        >>> import torch
        >>> T = torch.ones(3, 3)
        >>> TileMask(self_offset=0).apply(T, 0, 0, 0.0); T.diagonal()
        tensor([0., 0., 0.])
    """

    def __init__(
        self,
        self_offset: int | None = None,
        row_key: torch.Tensor | None = None,
        col_key: torch.Tensor | None = None,
        keep_offset: int | None = None,
    ):
        self.self_offset, self.row_key, self.col_key, self.keep_offset = (
            self_offset,
            row_key,
            col_key,
            keep_offset,
        )

    @property
    def empty(self) -> bool:
        return self.self_offset is None and self.row_key is None

    def apply(self, T: torch.Tensor, i0: int, j0: int, value: float) -> None:
        """Set the masked entries of the tile T = S[i0:i0+m, j0:j0+n] to ``value`` in place."""
        m, n = T.shape
        if self.row_key is not None and self.col_key is not None:
            eq = self.row_key[i0 : i0 + m, None] == self.col_key[None, j0 : j0 + n]  # (m, n) bool
            if self.keep_offset is not None:
                eq.diagonal(self.keep_offset + i0 - j0).fill_(False)
            T.masked_fill_(eq, value)
        if self.self_offset is not None:
            T.diagonal(self.self_offset + i0 - j0).fill_(value)  # empty when the tile misses it
