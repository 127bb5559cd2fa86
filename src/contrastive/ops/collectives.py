"""Collectives over rows of unequal count, with errors that say what failed and where.

Ranks may hold different numbers of rows (``sizes[r]`` on rank r, the same on every rank
after one small exchange). Fixed-size collectives carry them: each rank pads its rows to
``max(sizes)``; a gather concatenates the unpadded slices; a reduce-scatter sends row block
r of an (sum(sizes), ...) tensor to rank r, summed over ranks. Every collective is wrapped
so that a peer that failed, exited or timed out gives a :class:`DistributedError` naming
the operation, instead of a bare backend error. :class:`GatherWithGradFn` is the gather with
its reduce-scatter as backward.

The process-group plumbing of :mod:`contrastive.distributed` lives here too: the group, rank
and world size (:func:`resolve_group`), and the checked settings exchange (:func:`agree`), so
that no rank waits for a collective another rank will not reach.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from . import validation as V

# torch >= 2.10 renamed the tensor forms; older versions only have the old names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


# a process group, or None for the default one
Group = dist.ProcessGroup | None


class DistributedError(RuntimeError):
    """A collective failed, or another rank rejected its inputs: raised on every rank."""


def guarded(op: str, what: str, fn: Callable[[], Any], group: Group) -> Any:
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
    guarded(
        op, "exchange of batch sizes and settings", lambda: _all_gather_single(out, mine, group=group), group
    )
    return out.view(-1, mine.numel())


def gather_rows(op: str, x: torch.Tensor, sizes: list[int], group: Group) -> torch.Tensor:
    """Concatenation over ranks of each rank's x (sizes[r] rows), shape (sum(sizes), ...)."""
    world, top = len(sizes), max(sizes)
    x = x.contiguous()
    if x.shape[0] < top:  # pad to the largest rank
        x = torch.cat([x, x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))])
    out = x.new_empty((world * top,) + tuple(x.shape[1:]))
    guarded(op, "all-gather of the embeddings", lambda: _all_gather_single(out, x, group=group), group)
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
    guarded(
        op, "reduce-scatter of the gradients", lambda: _reduce_scatter_single(out, full, group=group), group
    )
    return out[: sizes[rank]]


def all_reduce(op: str, t: torch.Tensor, what: str, group: Group) -> torch.Tensor:
    """Sum of t over ranks (in place)."""
    guarded(op, what, lambda: dist.all_reduce(t, group=group), group)
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


GRADIENTS = ("ddp", "exact")


def resolve_group(process_group: Group, op: str) -> tuple[Group, int, int] | None:
    """(group, rank, world_size), or None for the single-process path."""
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise RuntimeError(
                f"contrastive.distributed.{op}: process_group was given but torch.distributed is "
                f"not initialised; call torch.distributed.init_process_group first (torchrun sets "
                f"the environment for it), or pass process_group=None for one process"
            )
        return None
    rank = dist.get_rank(process_group)
    if rank < 0:
        raise ValueError(f"contrastive.distributed.{op}: this process is not a member of process_group")
    world = dist.get_world_size(process_group)
    return (process_group, rank, world) if world > 1 else None


def check_gradient(gradient: Any) -> str:
    if gradient not in GRADIENTS:
        raise ValueError(
            f"gradient must be 'ddp' (the gradient is scaled by the world size, for DDP's "
            f"averaging) or 'exact' (dL/d(local input)), got {gradient!r}"
        )
    return gradient


def dtype_code(x: object) -> int:
    return zlib.crc32(str(x.dtype).encode()) if isinstance(x, torch.Tensor) else -1


def collective_device(x, group):
    if isinstance(x, torch.Tensor):
        return x.device
    if "nccl" in str(dist.get_backend(group)) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(op, group, device, err, n_local, checks):
    """Exchange [error?, rows, *checked values] between ranks; raise the same error on every
    rank when one rank's inputs were rejected or a setting differs. Returns the row counts
    per rank; ``n_local`` may be a tuple of counts, then a tuple of per-rank lists."""
    names = [name for name, _ in checks]
    counts = list(n_local) if isinstance(n_local, tuple) else [n_local]
    nc = len(counts)
    M = exchange(op, [err is not None] + counts + [float(v) for _, v in checks], device, group).cpu()
    bad = [r for r in range(M.shape[0]) if M[r, 0] != 0]
    if bad:
        if err is not None:
            raise err
        raise DistributedError(
            f"contrastive.distributed.{op}: rank(s) {bad} rejected their inputs (see the error "
            f"raised there); every rank stops here so that none waits for the others"
        )
    for k, name in enumerate(names):
        col = M[:, 1 + nc + k]
        if bool((col != col[0]).any()):
            raise ValueError(
                f"contrastive.distributed.{op}: {name} differs across ranks (per rank: "
                f"{col.tolist()}); every rank must call it with the same {name}"
            )
    per_rank = [[int(n) for n in M[:, 1 + k].tolist()] for k in range(nc)]
    return tuple(per_rank) if isinstance(n_local, tuple) else per_rank[0]


def rows_or_empty(name, x):
    """check_tensor, except that a rank may hold zero rows of the global batch."""
    if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] == 0 and x.dtype in V.FLOAT_DTYPES:
        return x
    return V.check_tensor(name, x, 2)
