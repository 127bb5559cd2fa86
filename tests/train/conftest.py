"""Shared fixtures of the training tests: a tiny SimCLR configuration that runs in seconds."""

from __future__ import annotations

import pytest

# overrides that make a SimCLR run on digits take a few seconds on two CPU cores
TINY = {
    "data.train_limit": 160,
    "data.test_limit": 80,
    "model.width": 4,
    "model.proj_dim": 8,
    "train.epochs": 1,
    "train.batch_size": 32,
    "eval.every": 1,
    "eval.probe_max_iter": 50,
    "eval.knn_k": 5,
    "run.progress": False,
    "run.threads": 1,
}


@pytest.fixture
def tiny_args(tmp_path):
    """``tiny_args(**more)``: command-line overrides for a tiny run under ``tmp_path/runs``."""

    def make(**more):
        items = {**TINY, "run.root": str(tmp_path / "runs"), **more}
        return [f"--{k}={v}" for k, v in items.items()]

    return make
