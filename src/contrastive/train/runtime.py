"""Helpers every recipe shares: device choice, seeding, data statistics, and reading and
writing a run directory's configuration (``config.toml``) and identity (``run.json``)."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._optional import needs
from .checkpoint import CheckpointError, all_finite_state, atomic_write, load_checkpoint, load_model_state
from .config import dump_toml, load_toml

__all__ = [
    "channel_stats",
    "check_run_id",
    "limit_threads",
    "load_run_config",
    "num_threads",
    "read_run",
    "resolve_device",
    "seed_everything",
    "write_run",
]


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


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel (images ``(N, C, H, W)``) or per-feature (``(N, D)``) mean and std of data in
    [0, 1] (uint8 is scaled), std clamped to >= 1e-3.

    Examples:
        >>> channel_stats(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        ([1.0, 1.0], [1.0, 0.001])
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 4) or len(x) == 0:
        raise ValueError("x must be a non-empty tensor of shape (N, C, H, W) or (N, D)")
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].double()
        if x.dtype == torch.uint8:
            b = b / 255.0
        total += b.sum(dims)
        total_sq += (b * b).sum(dims)
        count += b.numel() // x.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def write_run(run_dir, cfg, recipe: str, **info: Any) -> None:
    """Write ``config.toml`` (the resolved configuration) and ``run.json`` (the recipe's name,
    the package version and ``info``, e.g. the sample shape)."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / "config.toml", lambda tmp: Path(tmp).write_text(dump_toml(cfg)))
    info = {"recipe": recipe, "version": _version(), **info}
    atomic_write(run_dir / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))


def read_run(run_dir) -> dict[str, Any]:
    """``run.json`` of a run directory (raises a clear error when it is not one)."""
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(run_dir)!r} is not a run directory (no run.json); pass a folder made by `contrastive train`, "
            f"e.g. runs/simclr-digits"
        )
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); the run folder is damaged: restore run.json "
            f'(it names the recipe, e.g. {{"recipe": "simclr"}}) or start the run again'
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("recipe"), str):
        raise CheckpointError(
            f'{path} does not name a recipe (expected {{"recipe": ...}}); the run folder is '
            f"damaged: restore run.json or start the run again"
        )
    return info


def load_run_config(run_dir, config_cls):
    """The configuration saved in ``run_dir/config.toml`` on top of ``config_cls()``'s defaults.

    Raises:
        FileNotFoundError: no ``config.toml`` (exit 3).
        CheckpointError: a ``config.toml`` that is not valid TOML or holds keys or values this
            version refuses: the run folder is damaged (exit 3, not a bad argument's 2).
    """
    from .config import ConfigError

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; the run folder is damaged: restore config.toml from a copy of the run"
        )
    try:
        return load_toml(config_cls(), path)
    except (ConfigError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} cannot be used ({err}); the run folder is damaged: restore config.toml from a "
            f"copy of the run"
        ) from None


def eval_config(run_dir, checkpoint: str, recipe: str, config_cls):
    """The configuration of ``recipe``'s run in ``run_dir``, to rebuild it for evaluation on
    the best available device; checks the checkpoint name and the recipe first."""
    import dataclasses

    if checkpoint not in ("last", "best"):
        raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    if read_run(run_dir)["recipe"] != recipe:
        raise ValueError(f"{run_dir} is not a {recipe} run")
    cfg = load_run_config(run_dir, config_cls)
    return cfg, dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device="auto"))


def restore(model: torch.nn.Module, run_dir, checkpoint: str, device):
    """Load ``checkpoints/<checkpoint>.pt`` into ``model``; returns (the model's state before
    loading, i.e. its initialisation, and the checkpoint dict)."""
    init = {k: v.clone() for k, v in model.state_dict().items()}
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(path, map_location=device)
    check_run_id(state, run_dir, path)
    load_model_state(model, state, path)
    bad = all_finite_state(model)
    if bad is not None:  # evaluating it would report chance accuracy as if it were a result
        raise CheckpointError(
            f"{path} holds NaN/Inf (its {bad}): it was saved by a diverged run; evaluate "
            f"the other checkpoint (--checkpoint {'last' if checkpoint == 'best' else 'best'}) "
            f"or resume the run with a lower optim.lr"
        )
    return init, state


def check_run_id(state: dict[str, Any], run_dir, path) -> None:
    """Refuse a checkpoint written by another run (copied in): its ``run_id`` must be the one
    ``run.json`` records (runs and checkpoints from before run ids carry none: not checked)."""
    want, got = read_run(run_dir).get("run_id"), state.get("run_id") if isinstance(state, dict) else None
    if want is not None and got is not None and want != got:
        raise CheckpointError(
            f"{path} belongs to another run (run id {got}; {Path(run_dir) / 'run.json'} records {want}); "
            f"restore this run's own checkpoint (a copy of another run's weights would answer for it)"
        )


def _version() -> str:
    from .. import __version__

    return __version__
