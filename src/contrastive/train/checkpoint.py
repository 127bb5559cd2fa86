"""Checkpoints: written atomically, read back without running pickled code.

A training checkpoint (``*.pt``) is a dict of tensors and plain Python values (model,
optimiser and scheduler state, epoch, step, the random generators' states) saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``, which refuses anything
but tensors and builtin containers. Model weights alone are also exported as safetensors.
Every write goes to a temporary file in the same folder, is flushed to disk and then
renamed over the target, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._optional import needs

__all__ = [
    "CheckpointError",
    "all_finite_state",
    "atomic_write",
    "capture_rng",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "restore_rng",
    "save_checkpoint",
    "save_weights",
]


class CheckpointError(ValueError):
    """A checkpoint or run file that cannot be used (corrupt, missing a part, another model)."""

    exit_code = 3


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path`` (same folder, so atomic).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = atomic_write(d / "x.txt", lambda p: pathlib.Path(p).write_text("ok"))
        >>> (d / "x.txt").read_text(), sorted(q.name for q in d.iterdir())
        ('ok', ['x.txt'])
        >>> oct((d / "x.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as open() makes it
        True
    """
    path = Path(path)
    if not callable(write):
        raise TypeError("write must be a callable taking the temporary path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600 (and a writer may replace the file): the umask decides, as for open()
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def capture_rng() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pstate, pgauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(pstate), "gauss": pgauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` returned."""
    if not isinstance(state, dict) or "torch" not in state:
        raise ValueError("state must be a dict from capture_rng() with at least a 'torch' entry")
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(
            (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
        )
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, state: dict[str, Any]) -> Path:
    """Write a training state dict atomically (see the module docstring).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
        >>> _ = save_checkpoint(p, {"epoch": 3, "w": torch.ones(2)})
        >>> load_checkpoint(p)["epoch"]
        3
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    return atomic_write(path, lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict[str, Any], tmp: str) -> None:
    """``torch.save``, whose failed writes (a full disk among them) surface as a RuntimeError
    ("unexpected pos ..."): re-raised as the OSError they are."""
    try:
        torch.save(state, tmp)
    except RuntimeError as err:
        import errno
        import shutil

        free = shutil.disk_usage(os.path.dirname(tmp) or ".").free
        code = errno.ENOSPC if free < (64 << 20) else errno.EIO
        raise OSError(code, f"{os.strerror(code)} while writing a checkpoint ({err})", tmp) from None


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} not found; a run directory holds checkpoints/last.pt"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {str(err)[:200]}); "
            f"it is damaged: use checkpoints/best.pt or start the run again"
        ) from None


def save_weights(path, module: torch.nn.Module) -> Path:
    """Export ``module.state_dict()`` as safetensors, atomically."""
    with needs("train", "model.safetensors"):
        from safetensors.torch import save_file

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_weights(path) -> dict[str, torch.Tensor]:
    """Read a safetensors file written by :func:`save_weights`."""
    with needs("train", "model.safetensors"):
        from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    return load_file(str(path))


def load_model_state(model: torch.nn.Module, state: Any, path) -> None:
    """``model.load_state_dict(state["model"])`` with a :class:`CheckpointError` that names the
    file and the fix when the checkpoint has no model or holds another architecture."""
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(
            f"{path} holds no model weights (no 'model' entry): it is not a checkpoint "
            f"of `contrastive train`; use the run's checkpoints/last.pt or best.pt"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else "")
        raise CheckpointError(
            f"{path} does not fit this model ({detail}): it was saved by another architecture; check that "
            f"config.toml's [model] section is the one the run was trained with"
        ) from None


def all_finite_state(model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> str | None:
    """``None`` when every parameter, buffer (BatchNorm statistics) and optimiser state tensor
    is finite; otherwise the name of the first that is not."""
    for kind, items in (("weight", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"{kind} {name}"
    if opt is not None:
        for i, st in enumerate(opt.state.values()):
            for key, t in st.items():
                if (
                    isinstance(t, torch.Tensor)
                    and t.is_floating_point()
                    and not bool(torch.isfinite(t).all())
                ):
                    return f"optimiser state {key} of parameter {i}"
    return None
