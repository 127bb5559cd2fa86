"""Configuration: overrides, TOML files, type checks and the errors users see."""

from __future__ import annotations

import pytest

from contrastive.train.config import (
    ConfigError,
    apply_overrides,
    config_keys,
    dump_toml,
    load_toml,
    parse_override_args,
)
from contrastive.train.recipes.simclr import SimCLRConfig


def test_overrides_are_typed():
    cfg = apply_overrides(
        SimCLRConfig(),
        {
            "optim.lr": "0.5",
            "train.epochs": "7",
            "train.amp": "false",
            "optim.name": "lars",
            "loss.temperature": 1,
        },
    )
    assert cfg.optim.lr == 0.5 and cfg.train.epochs == 7 and cfg.train.amp is False
    assert cfg.optim.name == "lars" and isinstance(cfg.loss.temperature, float)
    assert SimCLRConfig().optim.lr != 0.5  # the default is untouched


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        apply_overrides(SimCLRConfig(), {"optim.lrr": "0.1"})
    msg = str(err.value)
    assert "unknown config key 'optim.lrr'" in msg and "did you mean 'optim.lr'" in msg
    assert all(k in msg for k in ("train.epochs", "loss.temperature", "data.path"))


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("train.epochs", "two", "expects an int"),
        ("train.epochs", "1.5", "expects an int"),
        ("optim.lr", "fast", "expects a float"),
        ("train.amp", "maybe", "expects a bool"),
        ("train.epochs", "0", "train.epochs must be >= 1"),
        ("optim.name", "adam", "optim.name must be one of"),
        ("loss.temperature", "-1", "loss.temperature must be > 0"),
        ("augment.flip_p", "2", "probability"),
        ("data.name", "imagenet", "data.name must be one of"),
    ],
)
def test_bad_values(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(SimCLRConfig(), {key: value})


def test_toml_round_trip_and_errors(tmp_path):
    cfg = apply_overrides(SimCLRConfig(), {"run.name": 'a "quoted" name', "optim.lr": "0.25"})
    path = tmp_path / "run.toml"
    path.write_text(dump_toml(cfg))
    assert load_toml(SimCLRConfig(), path) == cfg

    path.write_text("[optim]\nlr = 0.1\n[train]\nepochs = 3\n")
    loaded = load_toml(SimCLRConfig(), path)
    assert loaded.optim.lr == 0.1 and loaded.train.epochs == 3

    path.write_text("[train]\nepochs = 2.5\n")
    with pytest.raises(ConfigError, match="train.epochs expects an int"):
        load_toml(SimCLRConfig(), path)
    path.write_text("[train]\nepochz = 2\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.epochz'"):
        load_toml(SimCLRConfig(), path)
    path.write_text("epochs = 2\n")
    with pytest.raises(ConfigError, match=r"must be a \[section\] table"):
        load_toml(SimCLRConfig(), path)
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(SimCLRConfig(), path)
    with pytest.raises(FileNotFoundError, match="--config"):
        load_toml(SimCLRConfig(), tmp_path / "missing.toml")


def test_parse_override_args():
    assert parse_override_args(["--a.b=1", "--c.d", "x=y"]) == {"a.b": "1", "c.d": "x=y"}
    with pytest.raises(ConfigError, match="--section.key=value"):
        parse_override_args(["epochs=3"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_override_args(["--train.epochs"])


def test_keys_and_type_errors():
    keys = config_keys(SimCLRConfig())
    assert keys["train.batch_size"] == (int, 256)
    with pytest.raises(TypeError, match="dataclass instance"):
        config_keys(SimCLRConfig)
    with pytest.raises(TypeError, match="mapping"):
        apply_overrides(SimCLRConfig(), ["train.epochs=3"])
