"""Typed run configuration: dataclass sections, ``--section.key=value`` overrides, TOML files.

A recipe's configuration is a dataclass whose fields are *sections* (themselves dataclasses
of scalars: ``int``, ``float``, ``bool``, ``str``). Values come, in order, from the defaults,
a TOML file (``--config run.toml``, one ``[section]`` table per section) and command-line
overrides (``--optim.lr=0.1``). Every value is type-checked; an unknown key is an error that
lists the valid ones. The resolved configuration is written to the run directory as
``config.toml`` so that ``contrastive eval RUN_DIR`` and ``--resume`` can read it back.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .registry import AUGMENTATIONS, DATASETS, OPTIMIZERS, SCHEDULES, check_encoder_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "choice",
    "config_keys",
    "config_to_dict",
    "dump_toml",
    "from_dict",
    "load_toml",
    "parse_override_args",
    "require",
]

SCALARS = (bool, int, float, str)


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says how to fix it."""


def _check_config(cfg) -> None:
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"cfg must be a dataclass instance (e.g. SimCLRConfig()), got {type(cfg).__name__}")


def _field_types(section) -> dict[str, type]:
    hints = {f.name: f.type for f in dataclasses.fields(section)}
    names = {"bool": bool, "int": int, "float": float, "str": str}
    return {k: names.get(v, v) if isinstance(v, str) else v for k, v in hints.items()}


def config_keys(cfg) -> dict[str, tuple[type, Any]]:
    """Every ``section.key`` of a configuration with its type and current value.

    Examples:
        >>> from contrastive.train.recipes.simclr import SimCLRConfig
        >>> keys = config_keys(SimCLRConfig())
        >>> keys["optim.lr"][0].__name__, "loss.temperature" in keys
        ('float', True)
    """
    _check_config(cfg)
    out = {}
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        for key, typ in _field_types(section).items():
            out[f"{sec.name}.{key}"] = (typ, getattr(section, key))
    return out


def _unknown(key: str, valid: Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; valid keys are: {', '.join(valid)}")


def coerce(key: str, typ: type, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a TOML value) to ``typ``.

    Examples:
        >>> coerce("optim.lr", float, "3e-4"), coerce("train.amp", bool, "false")
        (0.0003, False)
        >>> coerce("train.epochs", int, "2.5")
        Traceback (most recent call last):
        ...
        contrastive.train.config.ConfigError: train.epochs expects an int, got '2.5'
    """
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        if typ is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{key} expects a bool (true or false), got {value!r}")
        try:
            value = typ(text)
        except ValueError:
            article = "an" if typ is int else "a"
            raise ConfigError(f"{key} expects {article} {typ.__name__}, got {value!r}") from None
        return _finite(key, value) if typ is float else value
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects a bool (true or false), got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects an int, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(key, float(value))
        raise ConfigError(f"{key} expects a float, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} expects a string, got {value!r}")
    raise ConfigError(f"{key} has an unsupported type {typ!r}")


def _finite(key: str, value: float) -> float:
    """No setting is meaningful at NaN or +-inf (``--loss.temperature=inf`` used to pass)."""
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    return value


def apply_overrides(cfg, overrides: Mapping[str, Any]):
    """Return a copy of ``cfg`` with ``{"section.key": value}`` applied, each value type-checked.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones) or a value of the
            wrong type.

    Examples:
        >>> from contrastive.train.recipes.simclr import SimCLRConfig
        >>> apply_overrides(SimCLRConfig(), {"train.epochs": "3"}).train.epochs
        3
        >>> apply_overrides(SimCLRConfig(), {"train.epoch": 3})   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        contrastive.train.config.ConfigError: unknown config key 'train.epoch' (did you mean 'train.epochs'?)...
    """
    _check_config(cfg)
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"overrides must be a mapping of 'section.key' to value, got {type(overrides).__name__}"
        )
    keys = config_keys(cfg)
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    changes: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if key not in keys:
            sec, _, name = key.partition(".")
            removed = getattr(sections.get(sec), "REMOVED", {}).get(name)  # {key: (old default, fix)}
            if removed is None:
                raise _unknown(key, keys)
            if coerce(key, type(removed[0]), value) != removed[0]:
                raise ConfigError(f"{key} was removed; {removed[1]}")
            continue  # an older run's config.toml holding the removed key at its old default
        sec, name = key.split(".", 1)
        changes.setdefault(sec, {})[name] = coerce(key, keys[key][0], value)
    new = {sec: dataclasses.replace(obj, **changes.get(sec, {})) for sec, obj in sections.items()}
    return dataclasses.replace(cfg, **new)


def _flatten(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat = {}
    for sec, table in tree.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{source}: top-level key {sec!r} must be a [section] table, e.g. [{sec}] then key = value"
            )
        for key, value in table.items():
            flat[f"{sec}.{key}"] = value
    return flat


def from_dict(cfg, tree: Mapping[str, Any], source: str = "config"):
    """Apply a nested ``{section: {key: value}}`` mapping (as read from TOML) to ``cfg``."""
    return apply_overrides(cfg, _flatten(tree, source))


def load_toml(cfg, path) -> Any:
    """Apply the TOML file at ``path`` to ``cfg`` (see :func:`apply_overrides`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} not found; pass an existing TOML file to --config"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 (byte 0x{raw[err.start]:02x}); save it as UTF-8"
        ) from None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    return from_dict(cfg, tree, str(path))


def config_to_dict(cfg) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` of a configuration."""
    _check_config(cfg)
    return dataclasses.asdict(cfg)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_toml(cfg) -> str:
    """The configuration as TOML text that :func:`load_toml` reads back unchanged.

    Examples:
        >>> from contrastive.train.recipes.simclr import SimCLRConfig
        >>> cfg = SimCLRConfig()
        >>> from_dict(SimCLRConfig(), tomllib.loads(dump_toml(cfg))) == cfg
        True
    """
    lines: list[str] = []
    for sec, table in config_to_dict(cfg).items():
        lines.append(f"[{sec}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
        lines.append("")
    return "\n".join(lines)


def parse_override_args(args: list[str]) -> dict[str, str]:
    """Turn ``["--optim.lr=0.1", "--train.epochs", "5"]`` into ``{"optim.lr": "0.1", ...}``.

    Examples:
        >>> parse_override_args(["--optim.lr=0.1", "--train.epochs", "5"])
        {'optim.lr': '0.1', 'train.epochs': '5'}
    """
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise ConfigError(
                f"unexpected argument {arg!r}; configuration overrides look like --section.key=value "
                f"(e.g. --optim.lr=0.1)"
            )
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
            key, value = arg[2:], args[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


# ----------------------------------------------------------------------------- shared sections
def require(ok: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"<key> <message>"`` unless ``ok``: the one check every
    settings section (and every recipe's own sections) validates with.

    Args:
        ok: the condition the setting must satisfy.
        key: the dotted setting name the user types (``"train.batch_size"``).
        message: what is wrong and what to pass instead (``"must be >= 2, got 1"``).

    Raises:
        ConfigError: ``ok`` is false.

    Example:
        >>> require(True, "train.epochs", "must be >= 1")
        >>> require(False, "train.epochs", "must be >= 1, got 0")
        Traceback (most recent call last):
        ...
        contrastive.train.config.ConfigError: train.epochs must be >= 1, got 0
    """
    if not ok:
        raise ConfigError(f"{key} {message}")


def choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``.

    Args:
        value: the setting's value.
        key: the dotted setting name (``"optim.name"``).
        choices: the accepted values.

    Raises:
        ConfigError: ``value`` is not in ``choices``; the message lists them.

    Example:
        >>> choice("sgd", "optim.name", ("sgd", "adamw"))
        >>> choice("adam", "optim.name", ("sgd", "adamw"))
        Traceback (most recent call last):
        ...
        contrastive.train.config.ConfigError: optim.name must be one of ('sgd', 'adamw'), got 'adam'
    """
    require(value in choices, key, f"must be one of {choices}, got {value!r}")


@dataclasses.dataclass
class RunConfig:
    """Where the run lives and how it runs."""

    name: str = ""  # run directory name under root; "" -> "<recipe>-<data.name>"
    root: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = (
        0  # torch CPU threads; 0 keeps torch's default (on shared cores: 1, or OMP_WAIT_POLICY=PASSIVE)
    )
    progress: bool = True
    tensorboard: bool = False
    overwrite: bool = False  # reuse runs/<name> (else a fresh -2, -3, ... suffix is added)

    def __post_init__(self):
        require(self.threads >= 0, "run.threads", f"must be >= 0, got {self.threads}")
        require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "run.device",
            f"must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        require(
            "/" not in self.name and self.name not in (".", ".."),
            "run.name",
            f"must be a plain folder name, got {self.name!r} (use run.root for the parent folder)",
        )


@dataclasses.dataclass
class DataConfig:
    """Which data, where it is read from and how it is split (see contrastive.train.data)."""

    name: str = "digits"  # digits | mnist | fashion_mnist | cifar10 | cifar100 | folder | npy
    path: str = ""
    labels: str = ""  # labels .npy for a single-file npy dataset
    test_fraction: float = 0.25  # held-out share where the data has no test split
    split_seed: int = 0
    image_size: int = 0  # resize folder images to this side (0 keeps their size)
    channels: int = 0  # folder images: 1, 3 or 0 (auto)
    train_limit: int = 0  # use a random subset of this many training samples (0: all)
    test_limit: int = 0

    def __post_init__(self):
        choice(self.name, "data.name", DATASETS)
        require(
            0 < self.test_fraction < 1, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}"
        )
        for key in ("image_size", "train_limit", "test_limit"):
            require(getattr(self, key) >= 0, f"data.{key}", f"must be >= 0, got {getattr(self, key)}")
        require(self.channels in (0, 1, 3), "data.channels", f"must be 0 (auto), 1 or 3, got {self.channels}")


@dataclasses.dataclass
class AugmentConfig:
    """Augmentations (see contrastive.train.augment); ``kind=auto`` picks by the data."""

    kind: str = "auto"  # auto | simclr | affine | noise | none
    # affine set (small grayscale images)
    affine_p: float = 1.0
    degrees: float = 15.0
    translate: float = 0.15
    scale_min: float = 0.85
    scale_max: float = 1.15
    shear: float = 10.0
    noise_std: float = 0.1
    noise_p: float = 1.0
    erase_p: float = 0.0  # off by default: on 8 x 8 digits even small erasures cost kNN accuracy
    erase_scale_max: float = 0.1
    # simclr set (colour images)
    crop_scale_min: float = 0.08
    flip_p: float = 0.5
    jitter: float = 0.5
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    # noise set (vectors)
    feature_drop: float = 0.1

    def __post_init__(self):
        choice(self.kind, "augment.kind", AUGMENTATIONS)
        for key in (
            "affine_p",
            "noise_p",
            "erase_p",
            "flip_p",
            "jitter_p",
            "gray_p",
            "blur_p",
            "feature_drop",
        ):
            v = getattr(self, key)
            require(0.0 <= v <= 1.0, f"augment.{key}", f"is a probability and must be in [0, 1], got {v}")
        require(
            0 < self.scale_min <= self.scale_max,
            "augment.scale_min",
            f"must satisfy 0 < scale_min <= scale_max, got {self.scale_min} and {self.scale_max}",
        )
        require(
            0 < self.crop_scale_min <= 1,
            "augment.crop_scale_min",
            f"must be in (0, 1], got {self.crop_scale_min}",
        )
        require(
            0 < self.erase_scale_max < 1 and self.erase_scale_max > 0.02,
            "augment.erase_scale_max",
            f"must be in (0.02, 1), got {self.erase_scale_max}",
        )
        for key in ("degrees", "translate", "shear", "noise_std", "jitter"):
            require(getattr(self, key) >= 0, f"augment.{key}", f"must be >= 0, got {getattr(self, key)}")


@dataclasses.dataclass
class ModelConfig:
    """Encoder and projection head (see contrastive.train.models)."""

    encoder: str = "auto"  # auto | mlp | cnn | resnet18 | python:package.module:factory (your own)
    width: int = 32  # cnn: first conv width (features 4 x width); resnet18: 64 is standard
    mlp_hidden: int = 512
    mlp_depth: int = 2
    embed_dim: int = 128  # python: encoders: factory(sample_shape, embed_dim) returns (N, embed_dim) features
    proj_hidden: int = 0  # 0: the encoder's feature size
    proj_dim: int = 128

    def __post_init__(self):
        try:
            check_encoder_name(self.encoder)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in ("width", "mlp_hidden", "mlp_depth", "embed_dim", "proj_dim"):
            require(getattr(self, key) >= 1, f"model.{key}", f"must be >= 1, got {getattr(self, key)}")
        require(self.proj_hidden >= 0, "model.proj_hidden", f"must be >= 0, got {self.proj_hidden}")


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (see contrastive.train.optim)."""

    name: str = "adamw"  # sgd | lars | adamw
    lr: float = 3e-3
    momentum: float = 0.9  # SGD/LARS momentum, AdamW beta1
    weight_decay: float = 1e-4
    lars_eta: float = 1e-3
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: int = 5
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        choice(self.name, "optim.name", OPTIMIZERS)
        choice(self.schedule, "optim.schedule", SCHEDULES)
        require(self.lr > 0 and math.isfinite(self.lr), "optim.lr", f"must be positive, got {self.lr}")
        require(0 <= self.momentum < 1, "optim.momentum", f"must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.lars_eta > 0, "optim.lars_eta", f"must be > 0, got {self.lars_eta}")
        require(self.warmup_epochs >= 0, "optim.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        require(
            0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}"
        )


@dataclasses.dataclass
class TrainConfig:
    """The loop: epochs, batches, clipping, precision."""

    epochs: int = 150
    batch_size: int = 256
    drop_last: bool = True  # every step sees a full batch (same number of negatives)
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    amp: bool = True  # mixed precision (bfloat16 autocast), used on CUDA only
    chunk_size: int = (
        0  # gradient caching: the encoder embeds at most this many rows at once (0: whole batch)
    )

    def __post_init__(self):
        require(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        require(
            self.chunk_size >= 0,
            "train.chunk_size",
            f"must be >= 0 (rows per encoder chunk; 0 embeds the whole batch at once), got {self.chunk_size}",
        )
        require(
            self.batch_size >= 2,
            "train.batch_size",
            f"must be >= 2 (each sample needs negatives), got {self.batch_size}",
        )
        require(self.grad_clip >= 0, "train.grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")


@dataclasses.dataclass
class EvalConfig:
    """Evaluation on the held-out split (see contrastive.train.evaluate)."""

    every: int = 15  # evaluate every this many epochs (0: only at the end)
    knn_k: int = 20  # k = 20, temperature 0.07: DINO's kNN protocol (Caron et al. 2021)
    knn_temperature: float = 0.07
    probe: bool = True  # linear probe (logistic regression on standardised features)
    probe_C: float = 1.0
    probe_max_iter: int = 1000
    baselines: bool = True  # raw pixels and the randomly initialised encoder
    map: str = "tsne"  # 2-D map of the (L2-normalised) test embeddings: tsne | pca | none
    batch_size: int = 512
    threads: int = 1  # thread cap for evaluation and plots (0: none); see dist.limit_threads

    def __post_init__(self):
        require(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        require(self.knn_k >= 1, "eval.knn_k", f"must be >= 1, got {self.knn_k}")
        require(self.knn_temperature > 0, "eval.knn_temperature", f"must be > 0, got {self.knn_temperature}")
        require(self.probe_C > 0, "eval.probe_C", f"must be > 0, got {self.probe_C}")
        require(self.probe_max_iter >= 1, "eval.probe_max_iter", f"must be >= 1, got {self.probe_max_iter}")
        choice(self.map, "eval.map", ("pca", "tsne", "none"))
        require(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.threads >= 0, "eval.threads", f"must be >= 0 (0: no cap), got {self.threads}")
