"""Run folders that never break (issue 14): resume checked before anything is written, settings
that change on resume, the last good checkpoint, the lock, leftovers of killed writes, and one
line with a distinct exit code for every user or environment error; and the run folder's
files: created, config.toml and run.json written, read back and checked."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive import __version__
from contrastive.cli import main
from contrastive.train import checkpoint
from contrastive.train import rundir as R
from contrastive.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from contrastive.train.config import apply_overrides
from contrastive.train.evaluate import linear_probe
from contrastive.train.recipes.simclr import SimCLRConfig

from .conftest import TINY

FAST = {**TINY, "eval.map": "none", "eval.baselines": "false", "eval.probe": "false"}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _args(root, **more):
    return [f"--{k}={v}" for k, v in {**FAST, "run.root": str(root), **more}.items()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch SimCLR run (width 4), copied by each test that changes it."""
    root = tmp_path_factory.mktemp("finished")
    assert (
        main(
            [
                "train",
                "simclr",
                *_args(root, **{"run.name": "base", "optim.schedule": "constant", "optim.warmup_epochs": 0}),
            ]
        )
        == 0
    )
    return root / "base"


@pytest.fixture
def run(finished, tmp_path):
    dst = tmp_path / "runs" / "base"
    shutil.copytree(finished, dst)
    return dst


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- findings 1, 3, 4
def test_resume_with_another_architecture_is_refused_and_changes_nothing(run, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", "simclr", "--resume", str(run), "--model.width=64"]) == 2
    err = capsys.readouterr().err
    assert "cannot change on --resume: model.width (4 -> 64)" in err and "new run" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["eval", str(run)]) == 0  # the run still works
    assert main(["train", "simclr", "--resume", str(run), "--train.epochs=2"]) == 0


def test_resume_with_other_data_is_refused(run, capsys):
    config = (run / "config.toml").read_text()
    assert main(["train", "simclr", "--resume", str(run), "--data.train_limit=100"]) == 2
    assert "data.train_limit (160 -> 100)" in capsys.readouterr().err
    assert (run / "config.toml").read_text() == config


def test_learning_rate_and_epochs_take_effect_on_resume(run, capsys):
    assert _records(run)[-1]["lr"] == pytest.approx(3e-3)
    assert main(["train", "simclr", "--resume", str(run), "--optim.lr=0.0005", "--train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "changed: optim.lr 0.003 -> 0.0005, train.epochs 1 -> 2" in out
    assert _records(run)[-1]["epoch"] == 2 and _records(run)[-1]["lr"] == pytest.approx(5e-4)
    assert "lr = 0.0005" in (run / "config.toml").read_text()


def test_unchanged_resume_restores_the_optimiser_exactly():
    """_restore_schedule with the same settings is the saved state bit for bit."""
    from contrastive.train.loop import _restore_schedule
    from contrastive.train.optim import WarmupCosine

    def make():
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
        return p, opt, WarmupCosine(opt, 2, 10)

    p, opt, sched = make()
    for _ in range(4):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    saved = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    q, opt2, sched2 = make()
    _restore_schedule(opt2, sched2, saved)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] and sched2.last_epoch == sched.last_epoch
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# ----------------------------------------------------------------------------- finding 2
def test_non_finite_buffers_are_not_checkpointed_and_a_lower_lr_resumes(tmp_path, monkeypatch, capsys):
    real = checkpoint.all_finite_state
    calls = {"n": 0}

    def corrupt_at_epoch_2(model, opt=None):
        calls["n"] += 1
        if calls["n"] == 2:  # what a diverging step does to BatchNorm: running_var inf
            bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return real(model, opt)

    monkeypatch.setattr(checkpoint, "all_finite_state", corrupt_at_epoch_2)
    code = main(["train", "simclr", *_args(tmp_path, **{"run.name": "bn", "train.epochs": 3})])
    err = capsys.readouterr().err
    assert code == 1 and "running_var" in err and "(epoch 1), was kept" in err
    run = tmp_path / "bn"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    monkeypatch.setattr(checkpoint, "all_finite_state", real)
    assert main(["train", "simclr", "--resume", str(run), "--optim.lr=0.0003"]) == 0
    assert _records(run)[-1]["epoch"] == 3 and np.isfinite(_records(run)[-1]["loss"])


# ----------------------------------------------------------------------------- finding 6 (and SIGKILL)
def _spawn_training(root, name, epochs=200):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    args = _args(root, **{"run.name": name, "train.epochs": epochs, "eval.every": 0})
    return subprocess.Popen(
        [sys.executable, "-m", "contrastive", "train", "simclr", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.2)


def test_second_process_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    proc = _spawn_training(tmp_path, "busy")
    run = tmp_path / "busy"
    try:
        _wait_for(run / "checkpoints" / "last.pt", proc)
        assert main(["train", "simclr", "--resume", str(run)]) == 4
        assert f"in use by process {proc.pid}" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run / ".lock").exists()  # a SIGKILL leaves its lock behind
    epoch = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
    assert main(["train", "simclr", "--resume", str(run), f"--train.epochs={epoch + 1}"]) == 0
    epochs = [r["epoch"] for r in _records(run) if "loss" in r or r["epoch"] == 0]
    assert epochs == list(range(epoch + 2))  # no duplicated epochs
    assert not (run / ".lock").exists()


def test_lock_refuses_a_live_pid_and_takes_over_a_dead_one(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(R.RunFolderError, match=f"in use by process {sleeper.pid}"):
            R.acquire_lock(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = R.acquire_lock(tmp_path)  # its process is gone: stale
    assert lock.read_text().split()[0] == str(os.getpid())
    R.release_lock(lock)
    assert not lock.exists()


# ----------------------------------------------------------------------------- findings 8, 9
def test_leftover_tmp_files_are_removed_at_the_next_start(run):
    leftovers = [run / "checkpoints" / ".last.pt.x1y2.tmp", run / ".metrics.csv.abc.tmp"]
    for f in leftovers:
        f.write_bytes(b"half a checkpoint")  # what a kill during a write leaves
    assert main(["train", "simclr", "--resume", str(run), "--train.epochs=2"]) == 0
    assert not any(f.exists() for f in leftovers)


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    code = main(
        [
            "train",
            "simclr",
            *_args(
                tmp_path, **{"run.name": "bad", "data.name": "folder", "data.path": str(tmp_path / "nowhere")}
            ),
        ]
    )
    assert code == 3 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_run_killed_before_its_first_checkpoint_says_to_start_again(run, capsys):
    shutil.rmtree(run / "checkpoints")  # as a kill before the first save leaves it
    assert main(["train", "simclr", "--resume", str(run)]) == 3
    err = capsys.readouterr().err
    assert "stopped before its first one" in err and "--run.overwrite=true" in err


def test_same_run_name_is_refused_not_renamed(run, capsys):
    root = run.parent
    assert main(["train", "simclr", *_args(root, **{"run.name": "base"})]) == 4
    assert "already holds a run" in capsys.readouterr().err
    assert not (root / "base-2").exists()


# ----------------------------------------------------------------------------- finding 7, 11
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_settings_are_refused_before_a_run_folder_exists(tmp_path, capsys, value):
    assert main(["train", "simclr", *_args(tmp_path, **{"run.name": "t", "loss.temperature": value})]) == 2
    assert "loss.temperature must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def _no_traceback(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_damaged_checkpoints_and_run_files(run, capsys):
    last = run / "checkpoints" / "last.pt"
    save_checkpoint(last, {"epoch": 1})  # no model entry
    assert main(["eval", str(run)]) == 3
    assert "holds no model weights" in _no_traceback(capsys)
    last.write_bytes(b"\x00garbage")  # corrupt
    assert main(["eval", str(run)]) == 3
    assert "not a readable checkpoint" in _no_traceback(capsys)
    shutil.copy(run / "checkpoints" / "best.pt", last)
    (run / "config.toml").write_text((run / "config.toml").read_text().replace("width = 4", "width = 8"))
    assert main(["eval", str(run)]) == 3  # a checkpoint of another architecture
    assert "does not fit this model" in _no_traceback(capsys)
    assert main(["embed", str(run), "--data", "test", "--out", str(run / "e.npy")]) == 3
    _no_traceback(capsys)
    (run / "run.json").write_text("{not json")
    assert main(["eval", str(run)]) == 3
    assert str(run / "run.json") in _no_traceback(capsys)


def test_corrupt_image_in_embed(run, tmp_path, capsys):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(imgs / "a.png")
    (imgs / "b.png").write_bytes(b"not a png")
    assert main(["embed", str(run), "--data", str(imgs), "--out", str(tmp_path / "e.npy")]) == 3
    err = _no_traceback(capsys)
    assert "cannot read the image" in err and "b.png" in err


def test_one_class_linear_probe_says_what_to_do():
    f = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least two classes.*--eval.probe=false"):
        linear_probe(f, torch.zeros(10, dtype=torch.long), f, torch.zeros(10, dtype=torch.long))


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    from contrastive.train import loop

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Progress, "update", interrupt)  # Ctrl-C during the first step
    assert main(["train", "simclr", *_args(tmp_path, **{"run.name": "c"})]) == 130
    assert "interrupted (Ctrl-C)" in _no_traceback(capsys)


# ----------------------------------------------------------------------------- full disk, read-only
def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )
    return ok


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_disk_full_is_one_line(tmp_path, capsys):
    disk = tmp_path / "small"
    if not _mount_tmpfs(disk, "48k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount): no way to fill a disk safely")
    try:
        code = main(["train", "simclr", *_args(disk, **{"run.name": "full"})])
        err = _no_traceback(capsys)
        assert code == 5 and "no space left" in err
        assert not (disk / "full").exists()  # the failed start was cleaned up
    finally:
        _umount(disk)


def test_read_only_run_folder_is_one_line(finished, tmp_path, capsys):
    disk = tmp_path / "ro"
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount); as root chmod does not deny writes")
    try:
        shutil.copytree(finished, disk / "base")
        if subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode:
            pytest.skip("cannot remount the tmpfs read-only here")
        assert main(["eval", str(disk / "base")]) == 5
        assert "read-only" in capsys.readouterr().err.splitlines()[-1]
        assert main(["train", "simclr", "--resume", str(disk / "base"), "--train.epochs=2"]) == 5
        assert "read-only" in _no_traceback(capsys)
        assert main(["embed", str(disk / "base"), "--data", "test", "--out", str(disk / "e.npy")]) == 5
        assert "read-only" in _no_traceback(capsys)
    finally:
        _umount(disk)


def test_overwrite_does_not_clear_a_live_run(run, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{sleeper.pid}\n")
        code = main(["train", "simclr", *_args(run.parent, **{"run.name": "base", "run.overwrite": "true"})])
        assert code == 4 and f"in use by process {sleeper.pid}" in capsys.readouterr().err
        assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.toml").is_file()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_eval_refuses_a_non_finite_checkpoint(run, capsys):
    """A checkpoint with an inf BatchNorm running_var used to evaluate at chance, exit 0."""
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    key = next(k for k in state["model"] if k.endswith("running_var"))
    state["model"][key].fill_(float("inf"))
    save_checkpoint(last, state)
    assert main(["eval", str(run)]) == 3
    err = _no_traceback(capsys)
    assert "holds NaN/Inf" in err and "running_var" in err and "--checkpoint best" in err


# ----------------------------------------------------------------------------- the run folder's files
def test_new_run_dir_suffix_and_overwrite(tmp_path):
    first = R.new_run_dir(tmp_path, "demo")
    (first / "metrics.jsonl").write_text('{"epoch": 5}\n')
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "best.pt").write_bytes(b"old")
    (first / "notes.txt").write_text("mine")
    assert R.new_run_dir(tmp_path, "demo").name == "demo-2"
    again = R.new_run_dir(tmp_path, "demo", overwrite=True)
    assert again == first and sorted(p.name for p in again.iterdir()) == ["notes.txt"]  # only run files go


def test_write_read_and_load_a_run(tmp_path):
    cfg = apply_overrides(SimCLRConfig(), {"train.epochs": "3", "model.width": "4"})
    R.write_run(tmp_path, cfg, "simclr", sample_shape=[1, 8, 8])
    info = R.read_run(tmp_path)
    assert info == {"recipe": "simclr", "version": __version__, "sample_shape": [1, 8, 8]}
    loaded = R.load_run_config(tmp_path, SimCLRConfig)
    assert loaded == cfg
    saved, for_eval = R.eval_config(tmp_path, "best", "simclr", SimCLRConfig)
    assert saved == cfg and for_eval.run.device == "auto"
    assert dataclasses.replace(for_eval, run=cfg.run) == cfg


def test_eval_config_checks_the_checkpoint_name_and_the_recipe(tmp_path):
    R.write_run(tmp_path, SimCLRConfig(), "simclr")
    with pytest.raises(ValueError, match="checkpoint must be 'last' or 'best'"):
        R.eval_config(tmp_path, "final", "simclr", SimCLRConfig)
    with pytest.raises(ValueError, match="is not a siamese run"):
        R.eval_config(tmp_path, "last", "siamese", SimCLRConfig)


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
        R.read_run(tmp_path)
