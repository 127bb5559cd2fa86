"""The training process: its device, threads and random seeds (:func:`resolve_device`,
:func:`num_threads`, :func:`limit_threads`, :func:`seed_everything`), and what a recipe needs
to run under ``torchrun``.

``torchrun --nproc_per_node=W -m contrastive train simclr ...`` starts ``W`` processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. A recipe
calls :func:`init` once: with ``WORLD_SIZE > 1`` it initialises the default process group
(``nccl`` on CUDA, ``gloo`` on the CPU, with ``dist.timeout_s``), binds the rank to its GPU
and returns a :class:`Context`; without it (a plain ``contrastive train``) it returns the
inactive context and nothing about the run changes.

The split of work, under an active context:

- every rank builds the same model (same seed), DDP broadcasts rank 0's weights anyway;
  :func:`wrap` converts BatchNorm to SyncBatchNorm when ``dist.sync_batchnorm`` (CUDA
  only) and wraps the model in ``DistributedDataParallel``;
- :func:`sampler` shards each epoch's permutation (seeded by ``run.seed`` and the epoch,
  the same on every rank) with ``DistributedSampler``; ``train.batch_size`` is the
  *per-rank* batch and the global batch is ``world_size x train.batch_size``;
- the loss is :func:`contrastive.distributed.info_nce` (or ``supcon_loss``,
  ``retrieval_loss``, ``siglip_loss``, by recipe): negatives are the global batch and,
  after DDP averages the gradients, every parameter gradient is the full-batch one;
- each rank draws its own augmentations (:func:`seed_rank`); the random generators of all
  ranks are saved in rank 0's checkpoints (:func:`gather_rng`) and restored per rank on
  ``--resume`` (:func:`restore_rank_rng`) when the world size is unchanged;
- rank 0 alone creates the run directory (:func:`broadcast`), evaluates, logs, draws the
  progress bar and writes checkpoints, metrics and plots; the other ranks stay quiet;
- a non-finite loss is seen by every rank at the same step (the loss is global), so all
  stop together; a rank that fails otherwise ends its process, and the others' next
  collective fails (at once for a closed connection, after ``dist.timeout_s`` for a stalled
  peer) or torchrun stops them: no rank hangs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import random
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from .._optional import needs
from .config import ConfigError, require

__all__ = [
    "resolve_device",
    "num_threads",
    "limit_threads",
    "seed_everything",
    "DistConfig",
    "Context",
    "init",
    "wrap",
    "sampler",
    "seed_rank",
    "gather_rng",
    "restore_rank_rng",
    "broadcast",
    "shutdown",
    "launched",
]

BACKENDS = ("auto", "gloo", "nccl")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; a CUDA request without CUDA is an error.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(name).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but CUDA is not available here; use run.device=cpu or auto")
    return torch.device(name)


@contextlib.contextmanager
def num_threads(n: int):
    """Run the block with ``n`` torch CPU threads (0 leaves the setting alone), then restore it.

    Examples:
        >>> before = torch.get_num_threads()
        >>> with num_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0 (0 keeps torch's setting), got {n!r}")
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def limit_threads(n: int):
    """Cap every native thread pool (OpenBLAS, OpenMP, torch's included) at ``n`` threads in
    the block (0: no cap). Evaluation is many small BLAS calls (the linear probe's L-BFGS,
    t-SNE) that run faster on one thread, and far faster when other jobs share the cores.

    Examples:
        >>> with limit_threads(1):
        ...     pass
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0 (0: no cap), got {n!r}")
    if n == 0:
        yield
        return
    with needs("train", "run.threads / eval.threads"):
        from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclasses.dataclass
class DistConfig:
    """Multi-process training under torchrun (ignored in a single process)."""

    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    timeout_s: float = 1800.0  # a collective waiting longer than this fails (covers rank 0's evaluation)
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (CUDA only)

    def __post_init__(self):
        require(self.backend in BACKENDS, "dist.backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        require(self.timeout_s > 0, "dist.timeout_s", f"must be > 0 seconds, got {self.timeout_s}")


@dataclasses.dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (``active`` when > 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when torchrun (or an equivalent launcher) asked for more than one process (a
    ``WORLD_SIZE`` that is not a number counts: :func:`init` then says what is wrong)."""
    world = os.environ.get("WORLD_SIZE", "1").strip()
    return world not in ("", "0", "1")


# what a user who left RANK / WORLD_SIZE in the environment by accident, or started one
# process of a job by hand, needs to read
_HINT = (
    "run under torchrun (torchrun --nproc_per_node=N -m contrastive train ...), or unset RANK and "
    "WORLD_SIZE to train in one process"
)


class LaunchError(ConfigError):
    """The launcher's variables are missing or wrong, or the other processes never came: this
    process's own problem, so every rank reports it (exit 2)."""


def _environment() -> tuple[int, int, int, str, int]:
    """``(rank, world, local_rank, master_addr, master_port)`` from the launcher's variables,
    or a :class:`ConfigError` naming the one that is missing or wrong."""
    env = os.environ

    def bad(what: str) -> ConfigError:
        return LaunchError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is set but {what}; {_HINT}")

    values = {}
    for name, default in (("WORLD_SIZE", None), ("RANK", None), ("LOCAL_RANK", "0"), ("MASTER_PORT", None)):
        raw = env.get(name, default)
        if raw is None:
            raise bad(f"{name} is not")
        try:
            values[name] = int(raw)
        except ValueError:
            raise bad(f"{name}={raw!r} is not a whole number") from None
    rank, world, port = values["RANK"], values["WORLD_SIZE"], values["MASTER_PORT"]
    if not 0 <= rank < world:
        raise bad(f"RANK={rank} is not in [0, {world})")
    if not env.get("MASTER_ADDR"):
        raise bad("MASTER_ADDR is not")
    if not 0 < port < 2**16:
        raise bad(f"MASTER_PORT={port} is not a port (1 to 65535)")
    return rank, world, values["LOCAL_RANK"], env["MASTER_ADDR"], port


_JOINS = [0]  # process groups this process has started: a fresh join key for each


def _join(rank: int, world: int, addr: str, port: int, timeout_s: float):
    """The rendezvous store, once all ``world`` processes reached it. Says on stderr within
    seconds what it waits for, and gives up after ``timeout_s`` with a :class:`ConfigError`
    (exit 2): a lone process (variables left in the environment) never waits in silence."""
    import socket
    import time

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun hosts the store
    limit = datetime.timedelta(seconds=timeout_s)
    where = f"{addr}:{port}"
    t0, said = time.monotonic(), False
    while (
        rank != 0 or agent
    ):  # a client: wait here for the store, in Python (torch's own wait logs C++ traces)
        try:
            socket.create_connection((addr, port), timeout=1.0).close()
            break
        except OSError:
            waited = time.monotonic() - t0
            if not said and waited > min(3.0, timeout_s / 2):
                print(
                    f"contrastive train: waiting for rank 0's store at {where} (RANK={rank}, WORLD_SIZE={world}): "
                    f"{_HINT}",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            if waited > timeout_s:
                raise LaunchError(
                    f"gave up after {timeout_s:g} s (dist.timeout_s) waiting for rank 0's store at {where} "
                    f"(RANK={rank}, WORLD_SIZE={world}); {_HINT}"
                ) from None
            time.sleep(0.2)
    try:
        store = tdist.TCPStore(
            addr,
            port,
            world,
            is_master=rank == 0 and not agent,
            timeout=limit,
            wait_for_workers=False,
            multi_tenant=not agent,
        )
    except (RuntimeError, OSError) as err:  # DistNetworkError, DistStoreError: nobody at MASTER_ADDR
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LaunchError(
            f"process {rank} of {world} could not reach rank 0's store at {where} within {timeout_s:g} s "
            f"({first}); {_HINT}"
        ) from None
    _JOINS[0] += 1
    key = f"contrastive/joined/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_JOINS[0]}"
    joined = store.add(key, 1)
    t0, said = time.monotonic(), False  # the join's own clock
    while joined < world:
        waited = time.monotonic() - t0
        missing = world - joined
        what = f"waiting for {missing} more process{'es' if missing > 1 else ''} (RANK={rank}, WORLD_SIZE={world}, {where})"
        if not said and waited > min(3.0, timeout_s / 2):
            print(f"contrastive train: {what}: {_HINT}", file=sys.stderr, flush=True)
            said = True
        if waited > timeout_s:
            raise LaunchError(f"gave up after {timeout_s:g} s (dist.timeout_s) {what}; {_HINT}")
        time.sleep(0.1)
        joined = store.add(key, 0)
    return store


def init(cfg: DistConfig, device: torch.device) -> Context:
    """Initialise the default process group from the torchrun environment (when launched with
    ``WORLD_SIZE > 1`` and not initialised yet). On CUDA it also makes ``cuda:LOCAL_RANK`` the
    current device, so a plain ``cuda`` means this rank's GPU (see :func:`device_for`).

    Raises:
        ConfigError: ``nccl`` or ``sync_batchnorm`` asked for without CUDA; ``RANK``,
            ``WORLD_SIZE``, ``MASTER_ADDR`` or ``MASTER_PORT`` missing or wrong; the other
            processes not there within ``dist.timeout_s`` (the message says so within
            seconds, and how to run under torchrun or without the variables).

    Examples:
        >>> ctx = init(DistConfig(), torch.device("cpu"))  # no torchrun here: a single process
        >>> ctx.active, ctx.is_main, ctx.world_size
        (False, True, 1)
    """
    if not launched():
        return Context()
    if not tdist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("dist.backend=nccl needs CUDA devices; use dist.backend=gloo (or auto) on the CPU")
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ConfigError(
            "dist.sync_batchnorm=true needs CUDA (torch's SyncBatchNorm does not run on the CPU); "
            "drop it on the CPU"
        )
    rank, world, local, addr, port = _environment()  # after the settings: those errors come first
    if device.type == "cuda" and device.index is None:
        torch.cuda.set_device(
            local % torch.cuda.device_count()
        )  # before the model is built: cuda = this rank's GPU
    owns = False
    if not tdist.is_initialized():
        kwargs = {"device_id": torch.device("cuda", torch.cuda.current_device())} if backend == "nccl" else {}
        store = _join(rank, world, addr, port, cfg.timeout_s)
        tdist.init_process_group(
            backend,
            store=store,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=cfg.timeout_s),
            **kwargs,
        )
        owns = True
    ctx = Context(tdist.get_rank(), tdist.get_world_size(), local, owns)
    if ctx.rank != rank or ctx.world_size != world:
        raise RuntimeError(
            f"the process group (rank {ctx.rank} of {ctx.world_size}) disagrees with the "
            f"environment (RANK={rank}, WORLD_SIZE={world})"
        )
    return ctx


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a plain ``cuda`` request."""
    if ctx.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def wrap(model: nn.Module, ctx: Context, cfg: DistConfig, device: torch.device) -> nn.Module:
    """``model`` for the training forward pass: DDP-wrapped (after SyncBatchNorm conversion
    when asked) under an active context, ``model`` itself otherwise. Conversion replaces the
    BatchNorm modules *inside* ``model``, so checkpoints keep their keys."""
    if not ctx.active:
        return model
    if cfg.sync_batchnorm:
        for name, child in list(model.named_children()):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sampler(n: int, ctx: Context, seed: int, drop_last: bool):
    """A ``DistributedSampler`` over ``range(n)``: each epoch (``set_epoch``) a permutation
    seeded by ``seed + epoch``, rank ``r`` taking every ``world_size``-th index from ``r``."""
    from torch.utils.data import DistributedSampler

    if n < 2 * ctx.world_size:
        raise ConfigError(
            f"the training split has {n} samples, too few for {ctx.world_size} processes "
            f"(each needs at least 2)"
        )
    return DistributedSampler(
        range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=drop_last
    )


def seed_rank(ctx: Context, seed: int) -> None:
    """Give every rank its own augmentation stream (called after the model is built, so the
    initial weights stay the same everywhere); a single process is left alone."""
    if ctx.active:
        seed_everything((seed * 1_000_003 + 7919 * ctx.rank) % 2**63)


def gather_rng(ctx: Context) -> list[Any] | None:
    """Every rank's generator states, in rank order, on rank 0 (``None`` elsewhere and in a
    single process). Collective: all ranks call it."""
    if not ctx.active:
        return None
    from .checkpoint import capture_rng

    out = [None] * ctx.world_size if ctx.is_main else None
    tdist.gather_object(capture_rng(), out, dst=0)
    return out


def restore_rank_rng(ctx: Context, state: dict, seed: int, epoch: int) -> None:
    """After a checkpoint is loaded: restore this rank's generators from ``state['rng_ranks']``
    when it was saved by as many ranks; otherwise (another world size, or a single-process
    checkpoint) seed them afresh from ``(seed, epoch, rank)``, which is reproducible but not
    the stream an uninterrupted run would have drawn."""
    from .checkpoint import restore_rng

    ranks = state.get("rng_ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        restore_rng(ranks[ctx.rank])
        return
    seed_rank(ctx, seed + 104_729 * epoch)
    if ctx.is_main:
        was = len(ranks) if ranks is not None else 1
        print(
            f"note: the checkpoint was written by {was} process(es), this run has {ctx.world_size}; "
            f"the random generators were reseeded per rank",
            file=sys.stderr,
            flush=True,
        )


def broadcast(value: Any, ctx: Context) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if not ctx.active:
        return value
    box = [value if ctx.is_main else None]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(ctx: Context) -> None:
    """Destroy the process group this module created (no-op otherwise), after every rank has
    arrived: the other ranks wait for rank 0's final evaluation and files, so no rank tears
    gloo down while a peer still holds its connections."""
    if ctx.owns_group and tdist.is_initialized():
        if ctx.active:
            try:
                tdist.barrier()
            except Exception:  # noqa: BLE001 - a peer that already failed: its error is the one reported
                pass
        tdist.destroy_process_group()


class NullLog:
    """What the ranks other than 0 get instead of a :class:`~contrastive.train.runlog.MetricsLog`."""

    records: list[Any] = []

    def log(self, record) -> None:
        pass

    def truncate(self, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass
