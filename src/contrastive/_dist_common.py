"""Process-group plumbing shared by the distributed losses: the group and rank, the checked
settings exchange (so that no rank waits for a collective another rank will not reach), and
argument checks that allow a rank to hold zero rows."""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.distributed as dist

from . import _validation as V
from .ops.collectives import DistributedError, Group, exchange

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
