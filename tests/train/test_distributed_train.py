"""``contrastive train simclr`` under torchrun: 2 gloo processes on the CPU, spawned through
``python -m torch.distributed.run`` (each run a few seconds; every subprocess has a timeout).

Checked: a smoke run writes exactly one run directory, from rank 0; a run stopped after
epoch 1 and resumed distributed ends with the same weights as an uninterrupted 2-epoch run
(every rank's random generators are in rank 0's checkpoint); a NaN on one rank stops every
rank with the non-finite-loss error; an exception on one rank ends the job, no rank hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrastive.train.checkpoint import load_checkpoint, load_weights

from .conftest import TINY

ENTRY = Path(__file__).with_name("_ddp_entry.py")
TIMEOUT = 90  # seconds per launch; a healthy one takes ~8 s on 2 shared cores


def torchrun(tmp_path, *args, fault="none", timeout=TIMEOUT, **overrides):
    """Run ``contrastive train simclr`` on 2 gloo ranks; ``CompletedProcess`` with output."""
    opts = {
        **TINY,
        "train.batch_size": 16,
        "run.device": "cpu",
        "run.root": str(tmp_path / "runs"),
        **overrides,
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ENTRY),
        fault,
        "train",
        "simclr",
        *args,
        *[f"--{k}={v}" for k, v in opts.items()],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )


def test_two_process_smoke_and_resume(tmp_path):
    common = {"eval.every": 0, "optim.schedule": "constant", "optim.warmup_epochs": 0}
    one = torchrun(tmp_path, **common, **{"train.epochs": 1, "run.name": "one"})
    _ok(one)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["one"]  # rank 0 chose the folder, the other rank used it
    run = tmp_path / "runs" / "one"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert (run / "model.safetensors").is_file() and (run / "summary.json").is_file()
    assert not list(run.rglob("*.tmp"))
    assert one.stdout.count("simclr: training (2 processes, global batch 2 x 16)") == 1  # rank 0 speaks alone
    assert one.stdout.count("wall time:") == 1 and "[rank1]" not in one.stdout + one.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 5  # 160 samples / (2 ranks x 16)
    assert len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])

    _ok(torchrun(tmp_path, "--resume", str(run), **common, **{"train.epochs": 2, "run.name": "one"}))
    _ok(torchrun(tmp_path, **common, **{"train.epochs": 2, "run.name": "two"}))
    a, b = (
        load_weights(run / "model.safetensors"),
        load_weights(tmp_path / "runs" / "two" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [
        0,
        1,
        2,
    ]


@pytest.mark.parametrize(
    "fault, code, message",
    [
        ("nan", 1, "the loss became nan at epoch 1, step 2"),
        ("raise", None, "injected failure on rank 1"),
    ],
)
def test_a_failing_rank_stops_every_rank(tmp_path, fault, code, message):
    t0 = time.monotonic()
    proc = torchrun(tmp_path, fault=fault, timeout=60, **{"train.epochs": 2, "run.name": "f"})
    assert time.monotonic() - t0 < 60
    assert proc.returncode != 0
    assert message in proc.stderr
    ckpt = load_checkpoint(tmp_path / "runs" / "f" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0  # the last good checkpoint is kept
    if code is not None:  # every rank stopped with the same clear error; rank 0 alone reported it
        assert proc.stderr.count("contrastive train: error: the loss became nan") == 1
        assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
