"""The run folder ``runs/<name>/``: created (:func:`new_run_dir`), locked while a process
trains in it, cleaned of what a killed process left, its identity (``run.json``) and resolved
configuration (``config.toml``) written and read back, a ``--resume`` checked before anything
is written, and a checkpoint restored into a model after checking it belongs to the run.

A run folder holds ``config.toml``, ``run.json`` (the recipe, the package version, the run id
and what the recipe records, e.g. the sample shape), ``metrics.jsonl`` and ``metrics.csv``
(written by :mod:`.runlog`), ``checkpoints/`` (``last.pt``, ``best.pt``, written by
:mod:`.checkpoint`), ``model.safetensors``, the plots, ``summary.json`` and, while a process
trains in it, ``.lock``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, all_finite_state, atomic_write, load_checkpoint, load_model_state
from .config import ConfigError, dump_toml, load_toml

__all__ = [
    "RUN_FILES",
    "RunFolderError",
    "acquire_lock",
    "check_resume",
    "check_run_id",
    "check_unlocked",
    "clean_tmp",
    "eval_config",
    "load_run_config",
    "new_run_dir",
    "read_run",
    "release_lock",
    "restore",
    "write_run",
]

LOCK = ".lock"

# settings that define the model and the data a checkpoint was trained on, and the data order
FROZEN_SECTIONS = ("model", "data")
FROZEN_KEYS = ("train.batch_size", "train.drop_last", "run.seed", "optim.name")


class RunFolderError(ValueError):
    """The run folder is in use by another process, or already holds a run."""

    exit_code = 4


def new_run_dir(root, name: str, overwrite: bool = False, unique: bool = True) -> Path:
    """``root/name``, created. When it exists and is not empty: with ``overwrite`` the files of
    the earlier run are removed and the folder reused; else with ``unique`` (a default name)
    ``root/name-2``, ``-3``, ... is used; else (a name the user chose) it is refused.

    Raises:
        RunFolderError: ``root/name`` holds a run and neither ``overwrite`` nor ``unique``.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> a = new_run_dir(root, "x"); (a / "f").write_text("")
        0
        >>> new_run_dir(root, "x").name
        'x-2'
    """
    if not name:
        raise ValueError("name must be a non-empty folder name")
    root = Path(root)
    path, k = root / name, 1
    for where, key in ((root, "run.root"), (path, "run.name")):
        if where.exists() and not where.is_dir():
            raise ValueError(
                f"{key}: {where} is a file, not a folder; pass a folder for the runs (or another name)"
            )
    if not overwrite and not unique and path.exists() and any(path.iterdir()):
        raise RunFolderError(
            f"{path} already holds a run; continue it with --resume {path}, replace it with "
            f"--run.overwrite=true, or choose another --run.name"
        )
    while not overwrite and path.exists() and any(path.iterdir()):
        k += 1
        path = root / f"{name}-{k}"
    path.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _clear_run_files(path)
    return path


RUN_FILES = (
    "config.toml",
    "run.json",
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    "eval.json",
    "model.safetensors",
    "loss.png",
    "accuracy.png",
    "map_pca.png",
    "map_tsne.png",
)


def _clear_run_files(path: Path) -> None:
    """Remove what an earlier run left in ``path`` (only the files a run writes)."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for name in ("checkpoints", "tensorboard"):  # (a live run's .lock stays: it is checked first)
        shutil.rmtree(path / name, ignore_errors=True)


def _read_lock(path: Path):
    try:
        pid, host = (path.read_text().split() + ["", ""])[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def acquire_lock(run_dir) -> Path:
    """Create ``run_dir/.lock`` holding this process's pid, or refuse with the holder's pid.

    A lock whose process no longer exists (killed) is stale and taken over. A lock written on
    another host is honoured (its pid cannot be checked from here).

    Raises:
        RunFolderError: another live process holds the lock.
    """
    path = Path(run_dir) / LOCK
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _read_lock(path)
            same_host = host in ("", socket.gethostname())
            if pid is not None and (not same_host or (pid != os.getpid() and _alive(pid))):
                raise RunFolderError(
                    f"{run_dir} is in use by process {pid}{'' if same_host else ' on ' + host} (lock file "
                    f"{path}); wait for it to finish, or stop it (kill {pid}) and resume this run again"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        return path
    raise RunFolderError(f"could not take the lock {path}; another process keeps taking it: try again")


def check_unlocked(run_dir) -> None:
    """Raise :class:`RunFolderError` when a live process holds ``run_dir``'s lock."""
    release_lock(acquire_lock(run_dir))


def release_lock(path: Path | None) -> None:
    """Remove the lock if this process holds it."""
    if path is not None and _read_lock(path)[0] == os.getpid():
        path.unlink(missing_ok=True)


def clean_tmp(run_dir) -> list[Path]:
    """Delete the temporary files (``.*.tmp``) an interrupted atomic write left in the run
    folder and its ``checkpoints/``; call it holding the lock. Returns what was removed."""
    gone = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir():
            for f in folder.glob(".*.tmp"):
                f.unlink(missing_ok=True)
                gone.append(f)
    return gone


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


def _flat(cfg) -> dict[str, Any]:
    return {
        f"{s.name}.{k.name}": getattr(getattr(cfg, s.name), k.name)
        for s in dataclasses.fields(cfg)
        for k in dataclasses.fields(getattr(cfg, s.name))
    }


def check_resume(run_dir, cfg, recipe: str, config_cls=None) -> list[str]:
    """Check that ``cfg`` may continue the run in ``run_dir``; nothing is written.

    Returns:
        ``["optim.lr 0.003 -> 0.001", ...]``: the settings that change (they take effect).

    Raises:
        FileNotFoundError: not a run folder.
        CheckpointError: the run has no checkpoint yet (stopped before its first one).
        ConfigError: a setting that cannot change on resume (model, data, batch, seed) does.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.get("recipe") != recipe:
        raise ValueError(
            f"{run_dir} is not a {recipe} run; resume it with its own recipe "
            f"(contrastive train {info.get('recipe')} --resume {run_dir})"
        )
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise CheckpointError(
            f"{run_dir} has no checkpoint (checkpoints/last.pt): the run stopped before its first one, so "
            f"there is nothing to resume; start it again: contrastive train {recipe} --run.name {run_dir.name} "
            f"--run.root {run_dir.parent} --run.overwrite=true"
        )
    old = _flat(load_run_config(run_dir, config_cls or type(cfg)))
    new = _flat(cfg)
    changed = [k for k in new if k in old and new[k] != old[k] and k != "run.overwrite"]
    frozen = [k for k in changed if k.split(".")[0] in FROZEN_SECTIONS or k in FROZEN_KEYS]
    if frozen:
        shown = ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in frozen)
        raise ConfigError(
            f"cannot change on --resume: {shown}; the checkpoint was trained with the old value"
            f"{'s' if len(frozen) > 1 else ''}. Resume without {'them' if len(frozen) > 1 else 'it'}, or start "
            f"a new run (drop --resume and pick a new --run.name)"
        )
    return [f"{k} {old[k]!r} -> {new[k]!r}" for k in changed if k not in ("run.name", "run.root")]


def eval_config(run_dir, checkpoint: str, recipe: str, config_cls):
    """The configuration of ``recipe``'s run in ``run_dir``, to rebuild it for evaluation on
    the best available device; checks the checkpoint name and the recipe first."""
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
