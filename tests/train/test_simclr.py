"""The SimCLR recipe (train/recipes/simclr.py) end to end through the command line: a one-epoch
run, eval, embed, resume equality, a non-finite loss or weights, configuration errors, the
colour path, unlabelled vectors and the optional dependencies."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from contrastive.cli import main
from contrastive.train import checkpoint
from contrastive.train.checkpoint import load_checkpoint, load_weights


def _weights_equal(a, b) -> bool:
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_one_epoch_smoke_eval_and_embed(tiny_args, tmp_path, capsys):
    assert main(["train", "simclr", *tiny_args(**{"run.name": "smoke"})]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "smoke"
    assert "raw pixels" in out and "random encoder" in out and "trained encoder (epoch 1)" in out
    for name in (
        "config.toml",
        "run.json",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "model.safetensors",
        "loss.png",
        "accuracy.png",
        "map_tsne.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 0 and records[-1]["epoch"] == 1
    for key in (
        "loss",
        "lr",
        "samples_per_s",
        "knn_accuracy",
        "linear_accuracy",
        "alignment",
        "uniformity",
        "precision_at_1",
        "mean_average_precision_at_r",
    ):
        assert key in records[-1], key
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["trained"]["knn_accuracy"] <= 1.0 and "raw pixels" in summary["baselines"]
    assert "[train]\nepochs = 1\n" in (run / "config.toml").read_text()

    assert main(["eval", str(run)]) == 0
    assert "trained encoder (last.pt, epoch 1)" in capsys.readouterr().out
    evaluated = json.loads((run / "eval.json").read_text())["rows"]
    assert (
        evaluated["trained encoder (last.pt, epoch 1)"]["knn_accuracy"] == summary["trained"]["knn_accuracy"]
    )

    assert main(["embed", str(run), "--data", "test", "--out", str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (80, 16) and np.isfinite(emb).all()
    np.save(tmp_path / "imgs.npy", (np.random.default_rng(0).random((3, 8, 8)) * 255).astype(np.uint8))
    assert (
        main(["embed", str(run), "--data", str(tmp_path / "imgs.npy"), "--out", str(tmp_path / "f.npy")]) == 0
    )
    assert np.load(tmp_path / "f.npy").shape == (3, 16)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5, 5), dtype=np.uint8))
    assert (
        main(["embed", str(run), "--data", str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "g.npy")])
        == 2
    )
    assert "trained on (1, 8, 8)" in capsys.readouterr().err
    assert main(["eval", str(run), "--allow-changed-data"]) == 2  # the flag is for text runs
    assert "--allow-changed-data applies to text runs" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 3  # not a run folder: a file class error
    assert "not a run directory" in capsys.readouterr().err


def test_resume_equals_uninterrupted(tiny_args, tmp_path, monkeypatch):
    common = {
        "train.epochs": 2,
        "eval.every": 1,
        "data.train_limit": 96,
        "data.test_limit": 40,
    }  # eval is RNG-neutral
    assert main(["train", "simclr", *tiny_args(**common, **{"run.name": "straight"})]) == 0

    real_save = checkpoint.save_checkpoint

    def crash_after_epoch_1(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt  # as if the machine went down right after the checkpoint

    monkeypatch.setattr(checkpoint, "save_checkpoint", crash_after_epoch_1)
    # Ctrl-C: one line and exit status 130 (it used to propagate as a traceback)
    assert main(["train", "simclr", *tiny_args(**common, **{"run.name": "resumed"})]) == 130
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    resumed = tmp_path / "runs" / "resumed"
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["epoch"] == 1
    assert main(["train", "simclr", "--resume", str(resumed)]) == 0
    assert _weights_equal(tmp_path / "runs" / "straight", resumed)
    epochs = [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


def test_resume_extends_a_finished_run(tiny_args, tmp_path):
    common = {"eval.every": 0, "optim.schedule": "constant", "optim.warmup_epochs": 0, "data.test_limit": 40}
    assert main(["train", "simclr", *tiny_args(**common, **{"train.epochs": 2, "run.name": "two"})]) == 0
    assert main(["train", "simclr", *tiny_args(**common, **{"train.epochs": 1, "run.name": "one"})]) == 0
    one = tmp_path / "runs" / "one"
    assert main(["train", "simclr", "--resume", str(one), "--train.epochs=2"]) == 0
    assert _weights_equal(tmp_path / "runs" / "two", one)


@pytest.mark.parametrize("where", ["loss", "inputs"])
def test_non_finite_loss_stops_and_keeps_checkpoint(where, tiny_args, tmp_path, monkeypatch, capsys):
    import contrastive.train.recipes.simclr as simclr

    calls = {"n": 0}
    target = (simclr, "info_nce") if where == "loss" else (simclr.A, "two_views")
    real = getattr(*target)

    def flaky(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        # epoch 2 (5 steps per epoch), step 2; the views are also drawn once for the random encoder's alignment
        if calls["n"] != (7 if where == "loss" else 8):
            return out
        return out * float("nan") if where == "loss" else (out[0] * float("nan"), out[1])

    monkeypatch.setattr(*target, flaky)
    code = main(["train", "simclr", *tiny_args(**{"train.epochs": 3, "run.name": "nan", "eval.every": 0})])
    err = capsys.readouterr().err
    assert code == 1
    assert "the loss became nan at epoch 2, step 2" in err and "last good checkpoint" in err
    run = tmp_path / "runs" / "nan"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "non-finite" in last["event"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?); valid keys are"),
        (["--train.epochs=two"], "train.epochs expects an int, got 'two'"),
        (["--train.epochs", "0"], "train.epochs must be >= 1"),
        (["stray"], "unexpected argument 'stray'"),
        (["--data.name=mnist"], "--data.path"),
        (["--config", "/nonexistent/run.toml"], "config file"),
    ],
)
def test_config_errors_exit_2(args, fragment, tmp_path, capsys):
    assert main(["train", "simclr", f"--run.root={tmp_path}", *args]) == 2
    assert fragment in capsys.readouterr().err


def test_config_file_and_help(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[train]\nepochs = 'many'\n")
    assert main(["train", "simclr", "--config", str(tmp_path / "bad.toml")]) == 2
    assert "train.epochs expects an int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "simclr", "--help"])
    assert "loss.temperature" in capsys.readouterr().out


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient: the loss stays finite, the weights do not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_non_finite_weights_are_not_checkpointed(tiny_args, tmp_path, monkeypatch, capsys):
    import contrastive.train.recipes.simclr as simclr

    calls = {"n": 0}
    real = simclr.info_nce

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return _NanGrad.apply(loss) if calls["n"] == 10 else loss  # last step of epoch 2

    monkeypatch.setattr(simclr, "info_nce", poisoned)
    assert main(["train", "simclr", *tiny_args(**{"train.epochs": 3, "run.name": "w", "eval.every": 0})]) == 1
    assert "weights became NaN/Inf during epoch 2" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "runs" / "w" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_cifar_resnet_lars_from_toml(tmp_path, capsys):
    """The colour path: CIFAR pickles, SimCLR's colour augmentations, ResNet-18, LARS, clipping."""
    from .test_data import write_cifar

    write_cifar(tmp_path / "cifar-10-batches-py", 10, n=8)
    (tmp_path / "run.toml").write_text(
        f'[run]\nroot = "{tmp_path}"\nname = "c10"\nprogress = false\nthreads = 1\n'
        f'[data]\nname = "cifar10"\npath = "{tmp_path}"\n'
        '[model]\nencoder = "resnet18"\nwidth = 2\nproj_dim = 4\n'
        '[optim]\nname = "lars"\nlr = 0.3\n[train]\nepochs = 1\nbatch_size = 16\ngrad_clip = 1.0\n'
        '[eval]\nknn_k = 3\nprobe_max_iter = 20\nmap = "pca"\n'
    )
    assert main(["train", "simclr", "--config", str(tmp_path / "run.toml")]) == 0
    out = capsys.readouterr().out
    assert "ResNet" in out and "trained encoder (epoch 1)" in out
    assert (tmp_path / "c10" / "map_pca.png").is_file()


def test_unlabelled_vectors(tmp_path, capsys):
    """The vector path: one .npy file without labels, MLP encoder, noise augmentation, no kNN."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
    args = [
        f"--run.root={tmp_path}",
        "--run.name=vec",
        "--run.progress=false",
        "--data.name=npy",
        f"--data.path={tmp_path / 'x.npy'}",
        "--train.epochs=1",
        "--train.batch_size=8",
        "--model.mlp_hidden=8",
    ]
    assert main(["train", "simclr", *args]) == 0
    summary = json.loads((tmp_path / "vec" / "summary.json").read_text())
    assert "knn_accuracy" not in summary["trained"] and summary["trained"]["uniformity"] <= 0
    assert summary["baselines"] == {}


def test_tensorboard_is_optional(tiny_args, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    assert main(["train", "simclr", *tiny_args(**{"run.tensorboard": "true"})]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe, modules",
    [
        ("simclr", ("sklearn", "sklearn.datasets", "sklearn.model_selection")),
        ("retrieval", ("tokenizers",)),
    ],
)
def test_also_missing_optional_dependency_names_its_extra(
    tiny_args, tmp_path, capsys, monkeypatch, recipe, modules
):
    """Issue 24: a wheel without the train extra says which extra installs what is missing."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    args = tiny_args() if recipe == "simclr" else [f"--run.root={tmp_path / 'runs'}", "--run.progress=false"]
    if recipe == "retrieval":
        data = tmp_path / "d.jsonl"
        data.write_text(
            "".join(json.dumps({"query": f"q {i} x", "positive": f"d {i} y"}) + "\n" for i in range(40))
        )
        args += ["--data.name=jsonl", f"--data.path={data}", "--model.vocab_size=50", "--train.epochs=1"]
    assert main(["train", recipe, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "contrastive[train]"' in err and modules[0] in err and len(err.splitlines()) == 1
