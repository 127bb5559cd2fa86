"""The siamese (DrLIM) recipe end to end through the command line: a one-epoch run with its
plots and checkpoints, eval and embed, resume equality, both pair sources, a class subset,
a non-finite loss and configuration errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contrastive.cli import main
from contrastive.train import checkpoint
from contrastive.train.checkpoint import load_checkpoint, load_weights
from contrastive.train.config import ConfigError, apply_overrides
from contrastive.train.recipes.siamese import SiameseConfig

TINY = {
    "data.train_limit": 200,
    "data.test_limit": 120,
    "model.mlp_hidden": 16,
    "train.epochs": 1,
    "train.batch_size": 64,
    "pairs.k": 3,
    "pairs.neg_per_sample": 3,
    "pairs.pairs_per_sample": 4,
    "eval.every": 1,
    "eval.pairs_per_sample": 4,
    "run.progress": False,
    "run.threads": 1,
}


def _args(tmp_path, **more):
    items = {**TINY, "run.root": str(tmp_path / "runs"), **more}
    return [f"--{k}={v}" for k, v in items.items()]


def _weights_equal(a, b) -> bool:
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_one_epoch_smoke_eval_and_embed(tmp_path, capsys):
    assert main(["train", "siamese", *_args(tmp_path, **{"run.name": "smoke"})]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "smoke"
    assert "raw pixels" in out and "random network" in out and "trained embedding (epoch 1)" in out
    assert "ROC-AUC %" in out and "EER %" in out
    for name in (
        "config.toml",
        "run.json",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "model.safetensors",
        "loss.png",
        "map_all.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss", "lr", "pairs_per_s", "roc_auc", "eer", "accuracy", "threshold"):
        assert key in last, key
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["trained"]["roc_auc"] <= 1.0 and 0.0 <= summary["trained"]["eer"] <= 1.0
    assert summary["baselines"]["raw pixels"]["roc_auc"] > 0.7  # digits pixels already separate classes

    assert main(["eval", str(run)]) == 0
    assert "trained embedding (last.pt, epoch 1)" in capsys.readouterr().out
    rows = json.loads((run / "eval.json").read_text())["rows"]
    assert rows["trained embedding (last.pt, epoch 1)"]["roc_auc"] == pytest.approx(
        summary["trained"]["roc_auc"]
    )
    assert main(["embed", str(run), "--data", "test", "--out", str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (120, 2) and np.isfinite(emb).all()


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    common = {"train.epochs": 2, "eval.every": 0}
    assert main(["train", "siamese", *_args(tmp_path, **common, **{"run.name": "straight"})]) == 0
    real_save = checkpoint.save_checkpoint

    def crash_after_epoch_1(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_checkpoint", crash_after_epoch_1)
    assert main(["train", "siamese", *_args(tmp_path, **common, **{"run.name": "resumed"})]) == 130  # Ctrl-C
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    resumed = tmp_path / "runs" / "resumed"
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["epoch"] == 1
    assert main(["train", "siamese", "--resume", str(resumed)]) == 0
    assert _weights_equal(tmp_path / "runs" / "straight", resumed)
    epochs = [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
    assert main(["train", "simclr", "--resume", str(resumed)]) == 2  # another recipe's run


@pytest.mark.parametrize(
    "more",
    [
        {"pairs.source": "labels"},
        {"pairs.source": "neighbours", "pairs.soft": "true"},
        {"data.classes": "4,9", "model.encoder": "cnn", "model.width": 4, "model.embed_dim": 3},
    ],
)
def test_pair_sources_and_subsets(tmp_path, capsys, more):
    assert main(["train", "siamese", *_args(tmp_path, **more, **{"run.name": "r"})]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert np.isfinite(summary["trained"]["roc_auc"])
    if "data.classes" in more:
        assert "classes 4,9" in out and (tmp_path / "runs" / "r" / "map_49.png").is_file()
    source = more["pairs.source"] if "pairs.source" in more else "neighbours"
    assert f"{source} pairs" in out


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch, capsys):
    import contrastive.train.recipes.siamese as siamese

    calls = {"n": 0}
    real = siamese.contrastive_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(siamese, "contrastive_loss", flaky)
    code = main(
        [
            "train",
            "siamese",
            *_args(
                tmp_path, **{"train.epochs": 3, "train.batch_size": 512, "run.name": "nan", "eval.every": 0}
            ),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "the loss became nan at epoch 2, step 1" in err and "last good checkpoint" in err
    # the first loss of epoch 2 is epoch 1's weights' own loss, so no learning rate could resume
    # from epoch 1: the checkpoint before it (epoch 0) is the last good one
    assert load_checkpoint(tmp_path / "runs" / "nan" / "checkpoints" / "last.pt")["epoch"] == 0
    assert "(epoch 0), was kept" in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--pairs.source=random"], "pairs.source must be one of ('neighbours', 'labels')"),
        (["--loss.margin=0"], "loss.margin must be > 0"),
        (["--loss.temperature=0.1"], "unknown config key 'loss.temperature'"),
        (["--model.embed_dim=0"], "model.embed_dim must be >= 1"),
        (["--data.classes=four"], "data.classes must be comma-separated integer labels"),
        (["--data.classes=4,11"], "label(s) [11] not in the data"),
        (["--data.classes=4"], "at least two classes"),
    ],
)
def test_config_errors_exit_2(args, fragment, tmp_path, capsys):
    assert main(["train", "siamese", f"--run.root={tmp_path}", "--run.progress=false", *args]) == 2
    assert fragment in capsys.readouterr().err


def test_config_defaults_are_drlim():
    cfg = SiameseConfig()
    assert (cfg.pairs.source, cfg.model.embed_dim, cfg.loss.margin) == ("neighbours", 2, 1.0)
    with pytest.raises(ConfigError, match="pairs.k must be >= 1"):
        apply_overrides(cfg, {"pairs.k": 0})
