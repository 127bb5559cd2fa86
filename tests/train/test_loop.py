"""The shared training loop: a user's own encoder (by import path from the CLI, or passed from
Python) through train, eval, embed and resume in both recipes; gradient caching
(``train.chunk_size``) against the plain step in float64; SimCLR's supcon and decoupled losses;
what siamese gained from the loop (the non-finite-weights check, DDP under torchrun with every
rank stopping together)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive.cli import main
from contrastive.train.checkpoint import load_checkpoint, load_weights
from contrastive.train.config import apply_overrides

from .conftest import TINY
from .test_siamese import TINY as SIAMESE_TINY

MODULE = "loop_user_encoders"  # written by the fixture below into a temporary folder on sys.path
SOURCE = '''
"""Encoders a user might write: factories called with (sample_shape, embed_dim)."""
import math

from torch import nn

CALLS = []


def make(shape, dim):
    CALLS.append((tuple(shape), dim))
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 24), nn.BatchNorm1d(24), nn.ReLU(),
                         nn.Linear(24, dim))


def plain(shape, dim):  # no BatchNorm, no dropout: chunked and whole-batch forwards compute the same function
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.Tanh(), nn.Linear(16, dim))


def wrong_size(shape, dim):
    return nn.Flatten()


def not_a_module(shape, dim):
    return "a string"
'''


@pytest.fixture
def user_module(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.getbasetemp() / "user_code"
    folder.mkdir(exist_ok=True)
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    module = importlib.import_module(MODULE)
    module.CALLS.clear()
    return module


def _args(tmp_path, base, **more):
    items = {**base, "run.root": str(tmp_path / "runs"), **more}
    return [f"--{k}={v}" for k, v in items.items()]


def _weights_equal(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_simclr_with_an_encoder_by_import_path(user_module, tmp_path, capsys):
    spec = f"python:{MODULE}:make"
    common = {
        "model.encoder": spec,
        "model.embed_dim": 12,
        "eval.every": 0,
        "optim.schedule": "constant",
        "optim.warmup_epochs": 0,
        "data.test_limit": 40,
        "eval.map": "none",
    }
    assert main(["train", "simclr", *_args(tmp_path, TINY, **common, **{"run.name": "own"})]) == 0
    assert user_module.CALLS[0] == ((1, 8, 8), 12)  # called with the sample shape and the embedding size
    out = capsys.readouterr().out
    assert "encoder Sequential" in out and "trained encoder (epoch 1)" in out
    run = tmp_path / "runs" / "own"
    assert f'encoder = "{spec}"' in (run / "config.toml").read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["encoder"] == spec and info["encoder_file"] == user_module.__file__
    summary = json.loads((run / "summary.json").read_text())

    assert main(["eval", str(run)]) == 0  # rebuilt from the recorded import path
    rows = json.loads((run / "eval.json").read_text())["rows"]
    assert rows["trained encoder (last.pt, epoch 1)"]["knn_accuracy"] == summary["trained"]["knn_accuracy"]
    assert main(["embed", str(run), "--data", "test", "--out", str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (40, 12) and np.isfinite(emb).all()

    # resume: one epoch, then one more, equals two epochs straight
    assert main(["train", "simclr", "--resume", str(run), "--train.epochs=2"]) == 0
    assert (
        main(["train", "simclr", *_args(tmp_path, TINY, **common, **{"train.epochs": 2, "run.name": "two"})])
        == 0
    )
    assert _weights_equal(run, tmp_path / "runs" / "two")


def test_siamese_with_an_encoder_by_import_path(user_module, tmp_path):
    spec = f"python:{MODULE}:make"
    args = _args(tmp_path, SIAMESE_TINY, **{"model.encoder": spec, "model.embed_dim": 3, "run.name": "own"})
    assert main(["train", "siamese", *args]) == 0
    assert user_module.CALLS[0] == ((1, 8, 8), 3)
    run = tmp_path / "runs" / "own"
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert not any(
        k.startswith("head.") for k in state
    )  # the factory's module is the whole map, no extra head
    assert main(["embed", str(run), "--data", "test", "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (120, 3)
    assert main(["eval", str(run)]) == 0


def test_encoder_passed_from_python(user_module, tmp_path, capsys):
    from contrastive.train.recipes import simclr

    overrides = {
        **TINY,
        "run.root": str(tmp_path / "runs"),
        "data.test_limit": 40,
        "eval.every": 0,
        "eval.map": "none",
        "model.embed_dim": 6,
    }
    cfg = apply_overrides(simclr.SimCLRConfig(), {**overrides, "run.name": "factory"})
    summary = simclr.train(cfg, encoder=user_module.make)  # an importable factory: recorded by its path
    assert f'encoder = "python:{MODULE}:make"' in (Path(summary["run_dir"]) / "config.toml").read_text()
    encoder, _ = simclr.load_encoder(summary["run_dir"])
    assert encoder(torch.rand(3, 1, 8, 8)).shape == (3, 6)

    torch.manual_seed(0)
    module = user_module.make((1, 8, 8), 6)
    cfg = apply_overrides(simclr.SimCLRConfig(), {**overrides, "run.name": "module"})
    run = simclr.train(cfg, encoder=module)["run_dir"]
    assert (
        'encoder = "object:torch.nn.modules.container.Sequential"' in (Path(run) / "config.toml").read_text()
    )
    with pytest.raises(ValueError, match="passed from Python as a module; pass it again"):
        simclr.evaluate_run(run)
    assert main(["eval", run]) == 2 and "pass it again" in capsys.readouterr().err
    same = user_module.make((1, 8, 8), 6)  # same architecture, other weights: the checkpoint replaces them
    result = simclr.evaluate_run(run, encoder=same)
    assert 0 <= result["rows"]["trained encoder (last.pt, epoch 1)"]["knn_accuracy"] <= 1
    encoder, _ = simclr.load_encoder(run, encoder=user_module.make((1, 8, 8), 6))
    trained = load_weights(Path(run) / "model.safetensors")
    assert torch.equal(encoder.backbone[1].weight, trained["encoder.backbone.1.weight"])


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("python:no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
        ("python:no_colon", "must look like python:package.module:factory"),
        (f"python:{MODULE}:missing", "has no attribute 'missing'"),
        (f"python:{MODULE}:wrong_size", "it must return one (N, 128) tensor"),
        (f"python:{MODULE}:not_a_module", "the factory must return an nn.Module, got str"),
        ("vgg", "must be one of ('auto', 'mlp', 'cnn', 'resnet18') or python:package.module:factory"),
    ],
)
def test_encoder_errors_exit_2(user_module, spec, fragment, tmp_path, capsys):
    assert main(["train", "simclr", *_args(tmp_path, TINY, **{"model.encoder": spec})]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_chunked_simclr_step_equals_the_plain_step_in_float64(user_module, monkeypatch):
    """Gradient caching through the loop: one SGD step on 2 x 10 views, whole batch or in chunks
    of 3 and 4 rows (chunks that do not divide the batch), gives the same parameters to 1e-10."""
    from torch import nn

    from contrastive import gradcache
    from contrastive.train import loop
    from contrastive.train.dist import seed_everything
    from contrastive.train.recipes.simclr import SimCLRConfig, SimCLRTask

    cfg = apply_overrides(
        SimCLRConfig(),
        {
            "data.train_limit": 40,
            "data.test_limit": 20,
            "run.device": "cpu",
            "model.encoder": f"python:{MODULE}:plain",
            "model.embed_dim": 6,
        },
    )
    task = SimCLRTask(cfg)
    task.prepare()
    seed_everything(0)
    task.build(torch.device("cpu"))
    batch = task.batch(torch.arange(10), torch.device("cpu"))
    batch.inputs = tuple(x.double() for x in batch.inputs)  # (10, 1, 8, 8) each
    cached = {"n": 0}
    real = gradcache.GradCache._cached_step

    def spy(self, *args, **kwargs):
        cached["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(gradcache.GradCache, "_cached_step", spy)

    def one_step(chunk_size):
        seed_everything(1)
        model = task.build(torch.device("cpu"))
        model.head = nn.Sequential(
            nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)
        )  # the default head has BatchNorm
        model.double()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        opt.zero_grad()
        value = loop._step(task, model, batch, chunk_size, None, None, lambda v: None)
        opt.step()
        return value, init, model.state_dict()

    loss0, init, plain = one_step(0)
    assert cached["n"] == 0
    assert max(float((plain[k] - init[k]).abs().max()) for k in plain) > 1e-3  # the step moved the weights
    for chunk_size in (3, 4):
        loss, _, chunked = one_step(chunk_size)
        assert abs(loss - loss0) < 1e-12
        assert max(float((chunked[k] - plain[k]).abs().max()) for k in plain) < 1e-10
    assert cached["n"] == 2


def test_chunk_size_supcon_and_decoupled_runs(tmp_path, monkeypatch, capsys):
    import contrastive.train.recipes.simclr as simclr

    base = {**TINY, "data.test_limit": 40, "eval.every": 0, "eval.map": "none"}
    assert main(["train", "simclr", *_args(tmp_path, base, **{"train.chunk_size": 12, "run.name": "c"})]) == 0
    assert "gradient caching: batch 32 embedded in chunks of 12 rows per input" in capsys.readouterr().out

    seen = []
    real = simclr.supcon_loss

    def spy(z, labels, *args, **kwargs):
        seen.append(labels.clone())
        return real(z, labels, *args, **kwargs)

    monkeypatch.setattr(simclr, "supcon_loss", spy)
    assert main(["train", "simclr", *_args(tmp_path, base, **{"loss.name": "supcon", "run.name": "s"})]) == 0
    assert "loss supcon" in capsys.readouterr().out
    assert len(seen) == 5 and all(len(y) == 64 and torch.equal(y[:32], y[32:]) for y in seen)  # 2 views x 32
    assert len(torch.cat(seen).unique()) > 1  # class labels, not sample ids

    assert (
        main(["train", "simclr", *_args(tmp_path, base, **{"loss.decoupled": "true", "run.name": "d"})]) == 0
    )
    assert "loss info_nce (decoupled)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "d" / "summary.json").read_text())
    assert np.isfinite(summary["trained"]["knn_accuracy"])


@pytest.mark.parametrize(
    "more, fragment",
    [
        (
            {"loss.name": "supcon", "loss.decoupled": "true"},
            "loss.decoupled applies to loss.name=info_nce only",
        ),
        ({"loss.name": "triplet"}, "loss.name must be one of ('info_nce', 'supcon')"),
        ({"train.chunk_size": -1}, "train.chunk_size must be >= 0"),
    ],
)
def test_loss_and_chunk_errors(more, fragment, tmp_path, capsys):
    assert main(["train", "simclr", *_args(tmp_path, TINY, **more)]) == 2
    assert fragment in capsys.readouterr().err


def test_supcon_needs_labels(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
    args = [
        f"--run.root={tmp_path}",
        "--run.progress=false",
        "--data.name=npy",
        f"--data.path={tmp_path / 'x.npy'}",
        "--loss.name=supcon",
    ]
    assert main(["train", "simclr", *args]) == 2
    assert "loss.name=supcon needs class labels" in capsys.readouterr().err


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient: the loss stays finite, the weights do not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_siamese_non_finite_weights_are_not_checkpointed(tmp_path, monkeypatch, capsys):
    import contrastive.train.recipes.siamese as siamese

    calls = {"n": 0}
    real = siamese.contrastive_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return _NanGrad.apply(loss) if calls["n"] == 2 else loss  # epoch 2 of one step each

    monkeypatch.setattr(siamese, "contrastive_loss", poisoned)
    args = _args(
        tmp_path,
        SIAMESE_TINY,
        **{"train.epochs": 3, "train.batch_size": 4096, "run.name": "w", "eval.every": 0},
    )
    assert main(["train", "siamese", *args]) == 1
    assert "weights became NaN/Inf during epoch 2" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "runs" / "w" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in state["model"].values())


# ----------------------------------------------------------------------------- siamese under torchrun
ENTRY = """
import os, sys
import contrastive.train.recipes.siamese as siamese
from contrastive.cli import main

real, calls = siamese.contrastive_loss, {"n": 0}


def loss(*args, **kwargs):  # rank 1 alone gets a NaN loss at its second step
    calls["n"] += 1
    out = real(*args, **kwargs)
    return out * float("nan") if calls["n"] == 2 and os.environ.get("RANK") == "1" else out


if sys.argv[1] == "nan":
    siamese.contrastive_loss = loss
sys.exit(main(sys.argv[2:]))
"""


def _torchrun_siamese(tmp_path, fault, **overrides):
    (tmp_path / "entry.py").write_text(ENTRY)
    opts = {**SIAMESE_TINY, "run.device": "cpu", "run.root": str(tmp_path / "runs"), **overrides}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(tmp_path / "entry.py"),
        fault,
        "train",
        "siamese",
        *[f"--{k}={v}" for k, v in opts.items()],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)


def test_siamese_under_torchrun(tmp_path):
    proc = _torchrun_siamese(tmp_path, "none", **{"run.name": "ddp", "train.batch_size": 32})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("siamese: training (2 processes, global batch 2 x 32)") == 1
    run = tmp_path / "runs" / "ddp"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert len(state["rng_ranks"]) == 2 and (run / "summary.json").is_file()

    proc = _torchrun_siamese(
        tmp_path, "nan", **{"run.name": "nan", "train.batch_size": 32, "train.epochs": 2}
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.count(
            "contrastive train: error: the loss became NaN/Inf on another process at epoch 1, step 2"
        )
        == 1
    )  # rank 0's own loss was finite; rank 1 stopped it
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
    assert load_checkpoint(tmp_path / "runs" / "nan" / "checkpoints" / "last.pt")["epoch"] == 0
