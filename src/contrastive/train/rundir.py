"""The run folder's safety: a lock while a process trains in it, cleaning what a killed
process left, checking a ``--resume`` before anything is written, and the errors the CLI
turns into one line and an exit code (:class:`CheckpointError` and the checks of a loaded
state live in :mod:`.checkpoint`, which imports nothing of the run folder, and are
re-exported here).

Exit codes of ``contrastive train | eval | embed | search`` (the README and docs/cli.md have
the table with examples):

====  =========================================================================
0     success
1     training stopped: the loss or the weights became NaN/Inf; under torchrun,
      a process stopped because another one failed
2     a bad setting, argument or input (configuration, command line, a JSONL
      line, the torchrun variables, a missing optional package)
3     a file that cannot be used: missing, corrupt, not UTF-8, changed since
      training (a hash differs from the run's record), or from another model
4     the run folder is busy (another process trains in it) or already exists
5     the machine refused: disk full, no permission, read-only file system
130   interrupted (Ctrl-C)
====  =========================================================================
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, all_finite_state, load_model_state
from .config import ConfigError
from .runtime import load_run_config, read_run

__all__ = [
    "CheckpointError",
    "RunFolderError",
    "acquire_lock",
    "all_finite_state",
    "check_resume",
    "check_unlocked",
    "clean_tmp",
    "describe_os_error",
    "load_model_state",
    "release_lock",
]

LOCK = ".lock"

# settings that define the model and the data a checkpoint was trained on, and the data order
FROZEN_SECTIONS = ("model", "data")
FROZEN_KEYS = ("train.batch_size", "train.drop_last", "run.seed", "optim.name")


class RunFolderError(ValueError):
    """The run folder is in use by another process, or already holds a run."""

    exit_code = 4


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


def describe_os_error(err: OSError) -> str:
    """One line for an error the machine raised while reading or writing a file."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device{where}; free some space (or pick another run.root) and run again "
            f"(--resume RUN_DIR continues from the last checkpoint)"
        )
    if err.errno == errno.EROFS:
        return f"the file system is read-only{where}; write the run elsewhere (run.root, or --out for embed)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; make the folder writable or write elsewhere (run.root, --out)"
    return f"{err.strerror or err}{where}"
