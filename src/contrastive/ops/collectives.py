"""Collectives over rows of unequal count, with errors that say what failed and where.

Ranks may hold different numbers of rows (``sizes[r]`` on rank r, the same on every rank
after one small exchange). Fixed-size collectives carry them: each rank pads its rows to
``max(sizes)``; a gather concatenates the unpadded slices; a reduce-scatter sends row block
r of an (sum(sizes), ...) tensor to rank r, summed over ranks. Every collective is wrapped
so that a peer that failed, exited or timed out gives a :class:`DistributedError` naming
the operation, instead of a bare backend error. :class:`GatherWithGradFn` is the gather with
its reduce-scatter as backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

# torch >= 2.10 renamed the tensor forms; older versions only have the old names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


# a process group, or None for the default one
Group = dist.ProcessGroup | None


class DistributedError(RuntimeError):
    """A collective failed, or another rank rejected its inputs: raised on every rank."""


def run(op: str, what: str, fn: Callable[[], Any], group: Group) -> Any:
    """Run collective ``fn()``; turn a backend failure into a DistributedError naming it."""
    try:
        return fn()
    except RuntimeError as e:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        raise DistributedError(
            f"contrastive.distributed.{op}: the {what} failed on rank {rank} of {world}. Another "
            f"rank most likely failed, exited or did not reach this call within the process "
            f"group's timeout (init_process_group(timeout=...)); look for the first error in the "
            f"other ranks' output. Backend error: {e}"
        ) from e


def exchange(op: str, values: Sequence[float], device: torch.device, group: Group) -> torch.Tensor:
    """All-gather one small float64 vector per rank: returns (world_size, len(values))."""
    mine = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    out = mine.new_empty(dist.get_world_size(group) * mine.numel())
    run(op, "exchange of batch sizes and settings", lambda: _all_gather_single(out, mine, group=group), group)
    return out.view(-1, mine.numel())


def gather_rows(op: str, x: torch.Tensor, sizes: list[int], group: Group) -> torch.Tensor:
    """Concatenation over ranks of each rank's x (sizes[r] rows), shape (sum(sizes), ...)."""
    world, top = len(sizes), max(sizes)
    x = x.contiguous()
    if x.shape[0] < top:  # pad to the largest rank
        x = torch.cat([x, x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))])
    out = x.new_empty((world * top,) + tuple(x.shape[1:]))
    run(op, "all-gather of the embeddings", lambda: _all_gather_single(out, x, group=group), group)
    if all(n == top for n in sizes):
        return out
    return torch.cat([out[r * top : r * top + n] for r, n in enumerate(sizes)])


def reduce_scatter_rows(
    op: str, full: torch.Tensor, sizes: list[int], rank: int, group: Group
) -> torch.Tensor:
    """Row block r of ``full`` (sum(sizes), ...) summed over ranks, delivered to rank r."""
    top = max(sizes)
    full = full.contiguous()
    if any(n != top for n in sizes):  # slot r = block r, zero-padded
        padded = full.new_zeros((len(sizes) * top,) + tuple(full.shape[1:]))
        off = 0
        for r, n in enumerate(sizes):
            padded[r * top : r * top + n] = full[off : off + n]
            off += n
        full = padded
    out = full.new_empty((top,) + tuple(full.shape[1:]))
    run(op, "reduce-scatter of the gradients", lambda: _reduce_scatter_single(out, full, group=group), group)
    return out[: sizes[rank]]


def all_reduce(op: str, t: torch.Tensor, what: str, group: Group) -> torch.Tensor:
    """Sum of t over ranks (in place)."""
    run(op, what, lambda: dist.all_reduce(t, group=group), group)
    return t


class GatherWithGradFn(torch.autograd.Function):
    """``gather_rows`` whose backward is the reduce-scatter: rank r gets the gradient of its
    rows summed over every rank (the autograd behind ``contrastive.distributed.all_gather_with_grad``).
    ``GatherWithGradFn.apply(x, op, sizes, rank, group)``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, op: str, sizes: list[int], rank: int, group: Group
    ) -> torch.Tensor:
        ctx.args = (op, sizes, rank, group)
        return gather_rows(op, x, sizes, group)  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        op, sizes, rank, group = ctx.args
        return reduce_scatter_rows(op, g, sizes, rank, group), None, None, None, None
