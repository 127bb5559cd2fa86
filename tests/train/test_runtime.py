"""train/runtime.py, the helpers every recipe shares: device choice, thread limits, seeding,
data statistics, and a run folder's config.toml / run.json written, read back and checked,
with errors that name the problem and the fix. Restoring checkpoints is tested with the run
folder in test_rundir.py."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from contrastive import __version__
from contrastive.train.config import apply_overrides
from contrastive.train.recipes.simclr import SimCLRConfig
from contrastive.train.rundir import CheckpointError
from contrastive.train.runtime import (
    channel_stats,
    eval_config,
    limit_threads,
    load_run_config,
    num_threads,
    read_run,
    resolve_device,
    seed_everything,
    write_run,
)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="run.device='cuda' but CUDA is not available.*run.device=cpu"):
            resolve_device("cuda")


def test_num_threads_restores_the_setting_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), num_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with num_threads(0):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("cm", [num_threads, limit_threads])
@pytest.mark.parametrize("bad", [-1, 1.5])
def test_thread_limits_reject_bad_counts(cm, bad):
    with pytest.raises(ValueError, match="n must be an int >= 0"), cm(bad):
        pass


def test_seed_everything_seeds_python_numpy_and_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(5)
    a = draw()
    seed_everything(5)
    assert draw() == a
    seed_everything(6)
    assert draw() != a
    seed_everything(2**40)  # NumPy's seed is taken modulo 2^32
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(-1)


@pytest.mark.parametrize("chunk", [3, 4096])
def test_channel_stats_of_images_and_vectors(chunk):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 4, 4, generator=g, dtype=torch.float64)
    mean, std = channel_stats(x, chunk=chunk)
    np.testing.assert_allclose(mean, x.mean((0, 2, 3)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, x.std((0, 2, 3), unbiased=False).numpy(), rtol=1e-10)
    u8 = (x * 255).round().to(torch.uint8)
    np.testing.assert_allclose(
        channel_stats(u8, chunk=chunk)[0], (u8.double() / 255).mean((0, 2, 3)).numpy(), rtol=1e-12
    )
    v = torch.rand(7, 5, generator=g)
    np.testing.assert_allclose(channel_stats(v, chunk=chunk)[0], v.double().mean(0).numpy(), rtol=1e-6)
    assert channel_stats(torch.ones(4, 2))[1] == [1e-3, 1e-3]  # a constant channel: std clamped


@pytest.mark.parametrize("bad", [torch.zeros(0, 3), torch.zeros(3), torch.zeros(2, 3, 4), [[0.0]]])
def test_channel_stats_bad_input(bad):
    with pytest.raises(ValueError, match=r"x must be a non-empty tensor of shape \(N, C, H, W\) or \(N, D\)"):
        channel_stats(bad)


def test_write_read_and_load_a_run(tmp_path):
    cfg = apply_overrides(SimCLRConfig(), {"train.epochs": "3", "model.width": "4"})
    write_run(tmp_path, cfg, "simclr", sample_shape=[1, 8, 8])
    info = read_run(tmp_path)
    assert info == {"recipe": "simclr", "version": __version__, "sample_shape": [1, 8, 8]}
    loaded = load_run_config(tmp_path, SimCLRConfig)
    assert loaded == cfg
    saved, for_eval = eval_config(tmp_path, "best", "simclr", SimCLRConfig)
    assert saved == cfg and for_eval.run.device == "auto"
    assert dataclasses.replace(for_eval, run=cfg.run) == cfg


def test_eval_config_checks_the_checkpoint_name_and_the_recipe(tmp_path):
    write_run(tmp_path, SimCLRConfig(), "simclr")
    with pytest.raises(ValueError, match="checkpoint must be 'last' or 'best'"):
        eval_config(tmp_path, "final", "simclr", SimCLRConfig)
    with pytest.raises(ValueError, match="is not a siamese run"):
        eval_config(tmp_path, "last", "siamese", SimCLRConfig)


@pytest.mark.parametrize(
    "content, error, fragment",
    [
        (
            None,
            FileNotFoundError,
            "is not a run directory \\(no run.json\\); pass a folder made by `contrastive train`",
        ),
        ("{not json", CheckpointError, "is not valid JSON .*restore run.json"),
        (json.dumps({"version": "0.1.0"}), CheckpointError, "does not name a recipe"),
        (json.dumps(["simclr"]), CheckpointError, "does not name a recipe"),
    ],
)
def test_read_run_names_a_damaged_or_missing_run_json(tmp_path, content, error, fragment):
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(error, match=fragment):
        read_run(tmp_path)
