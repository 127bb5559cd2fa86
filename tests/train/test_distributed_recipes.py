"""``contrastive train retrieval`` and ``simclr --loss.name=supcon`` under torchrun: 2 gloo
processes on the CPU, spawned through ``python -m torch.distributed.run``.

Checked: a retrieval run (BM25 hard negatives, or SigLIP) completes on 2 ranks and writes its
summary from rank 0; one step on 2 ranks of half the batch each gives the loss and the weights
(towers and learnable temperature) of one step of one process on the whole batch, since the
loss is :func:`contrastive.distributed.retrieval_loss` with DDP's gradient averaging; a
supervised-contrastive SimCLR run completes on 2 ranks, and ``loss.decoupled=true`` is still
refused under torchrun with a one-line message, as are the retrieval loss features the
distributed retrieval loss does not take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive.cli import main
from contrastive.train.checkpoint import load_weights

from .conftest import TINY as SIMCLR_TINY
from .test_retrieval import TINY as RETRIEVAL_TINY
from .test_retrieval import _pairs, _write_jsonl

ENTRY = Path(__file__).with_name("_ddp_entry.py")


def _torchrun(tmp_path, recipe: str, opts: dict, timeout: int = 120):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ENTRY),
        "none",
        "train",
        recipe,
        *[f"--{k}={v}" for k, v in opts.items()],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )


def _retrieval_opts(tmp_path, jsonl, **more):
    return {
        **RETRIEVAL_TINY,
        "data.name": "jsonl",
        "data.path": str(jsonl),
        "run.device": "cpu",
        "run.root": str(tmp_path / "runs"),
        "eval.baselines": "false",
        **more,
    }


@pytest.mark.parametrize(
    "loss",
    [
        {
            "pairs.hard_negatives": 2,
            "loss.directions": "query_to_doc,doc_to_query",
            "loss.partition_mode": "per_direction",
        },
        {"loss.name": "siglip"},
        {  # issue 25's features: contrastive.distributed.retrieval_loss takes them all
            "pairs.hard_negatives": 1,
            "loss.directions": "query_to_doc,query_to_query,doc_to_query,doc_to_doc",
            "loss.hardness_mode": "all_negatives",
            "loss.hardness_strength": 1.0,
            "loss.matryoshka_dims": "16,8",
        },
        {"pairs.hard_negatives": 1, "loss.hcl_beta": 0.5, "loss.hcl_tau_plus": 0.1},
    ],
    ids=["hard-negatives", "siglip", "gte-hardness-matryoshka", "hcl"],
)
def test_retrieval_under_torchrun(tmp_path, loss):
    jsonl = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(160))
    proc = _torchrun(tmp_path, "retrieval", _retrieval_opts(tmp_path, jsonl, **{"run.name": "r", **loss}))
    _ok(proc)
    assert proc.stdout.count("retrieval: training (2 processes, global batch 2 x 16)") == 1
    run = tmp_path / "runs" / "r"
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["trained"]["mrr_at_10"] <= 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and torch.isfinite(torch.tensor(records[1]["loss"]))


def test_retrieval_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    """One SGD step over the same 100 training pairs: 2 ranks x 50 (DistributedSampler) or
    1 process x 100 (the loss does not depend on the order of the batch). The hard negatives
    are deterministic here; most queries' top BM25 document is a positive held by some rank,
    which no rank may pass as a negative (nor two ranks the same document)."""
    jsonl = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(160))
    common = {
        "data.train_limit": 100,
        "train.batch_size": 1000,  # capped at the items per rank: one step per epoch
        "pairs.hard_negatives": 1,  # each query's top mined document, so no random draw: the given
        "pairs.mine_depth": 1,  # negative, or else another pair's positive (then not a negative)
        "model.token_dropout": 0.0,
        "loss.directions": "query_to_doc,doc_to_query",
        "loss.partition_mode": "per_direction",
        "loss.learn_temperature": "true",
        "loss.temperature": 0.1,
        "optim.name": "sgd",
        "optim.lr": 0.5,
        "optim.momentum": 0.0,
        "optim.weight_decay": 0.0,
        "optim.warmup_epochs": 0,
        "optim.schedule": "constant",
    }
    _ok(_torchrun(tmp_path, "retrieval", _retrieval_opts(tmp_path, jsonl, **common, **{"run.name": "two"})))
    one = _retrieval_opts(tmp_path, jsonl, **common, **{"run.name": "one"})
    assert main(["train", "retrieval", *[f"--{k}={v}" for k, v in one.items()]]) == 0
    runs = tmp_path / "runs"
    loss = {
        name: [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()][1][
            "loss"
        ]
        for name in ("one", "two")
    }
    assert loss["two"] == pytest.approx(loss["one"], rel=1e-5)
    a, b = load_weights(runs / "one" / "model.safetensors"), load_weights(runs / "two" / "model.safetensors")
    assert a.keys() == b.keys() and any("logit_scale" in k for k in a)
    for k in a:  # DDP averages W x dL/dz_r gradients: the full-batch step, temperature included
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


def test_supcon_under_torchrun_and_decoupled_refused(tmp_path):
    opts = {
        **SIMCLR_TINY,
        "train.batch_size": 16,
        "eval.every": 0,
        "run.device": "cpu",
        "run.root": str(tmp_path / "runs"),
        "loss.name": "supcon",
        "run.name": "sup",
    }
    proc = _torchrun(tmp_path, "simclr", opts)
    _ok(proc)
    assert proc.stdout.count("simclr: training (2 processes, global batch 2 x 16)") == 1
    assert "loss supcon" in proc.stdout
    assert (tmp_path / "runs" / "sup" / "summary.json").is_file()

    opts.update({"loss.name": "info_nce", "loss.decoupled": "true", "run.name": "dcl"})
    proc = _torchrun(tmp_path, "simclr", opts, timeout=60)
    assert proc.returncode != 0, proc.stderr  # the first rank to refuse ends the job
    assert "contrastive train: error: loss.decoupled=true (DCL) has no global-batch" in proc.stderr, (
        proc.stderr[-3000:]
    )
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
