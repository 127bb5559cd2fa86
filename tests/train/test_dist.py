"""train/dist.py in one process: the configuration's errors, the inactive context of a plain
run (every helper then leaves the run alone), init's refusals before any process group is
made, the per-rank sampler and seeds, and the reseeding note on a world-size change. The device, thread and seed
helpers every run uses are tested first. The multi-process behaviour (torchrun, DDP, faults) is tested in test_distributed_train.py and
test_distributed_recipes.py."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from contrastive.train import dist
from contrastive.train.checkpoint import capture_rng
from contrastive.train.config import ConfigError
from contrastive.train.dist import limit_threads, num_threads, resolve_device, seed_everything

CPU = torch.device("cpu")


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


@pytest.mark.parametrize(
    "kw, fragment", [(dict(backend="mpi"), "dist.backend"), (dict(timeout_s=0.0), "dist.timeout_s")]
)
def test_bad_config_names_the_key(kw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        dist.DistConfig(**kw)


def test_launched_reads_world_size(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not dist.launched()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist.launched()


def test_a_plain_run_gets_the_inactive_context_and_nothing_changes(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = dist.init(dist.DistConfig(), CPU)
    assert (ctx.active, ctx.is_main, ctx.owns_group) == (False, True, False)
    model = nn.Linear(2, 2)
    assert dist.wrap(model, ctx, dist.DistConfig(), CPU) is model
    assert dist.broadcast({"a": 1}, ctx) == {"a": 1}
    assert dist.gather_rng(ctx) is None
    assert dist.device_for(ctx, CPU) == CPU
    torch.manual_seed(3)
    dist.seed_rank(ctx, 99)  # a single process keeps its stream
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(3)))
    dist.shutdown(ctx)  # no group of its own: nothing to destroy


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (dist.DistConfig(backend="nccl"), "dist.backend=nccl needs CUDA"),
        (dist.DistConfig(sync_batchnorm=True), "dist.sync_batchnorm=true needs CUDA"),
    ],
)
def test_init_refuses_cuda_only_settings_on_the_cpu(monkeypatch, cfg, fragment):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=fragment):
        dist.init(cfg, CPU)
    assert not torch.distributed.is_initialized()


def test_sampler_shards_each_epoch_between_the_ranks():
    ranks = [dist.sampler(10, dist.Context(rank=r, world_size=2), seed=7, drop_last=False) for r in range(2)]
    for epoch in (0, 1):
        parts = []
        for s in ranks:
            s.set_epoch(epoch)
            parts.append(list(s))
        assert len(parts[0]) == len(parts[1]) == 5
        assert sorted(parts[0] + parts[1]) == list(range(10))
    s = ranks[0]
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first  # a new permutation every epoch
    with pytest.raises(ConfigError, match="too few for 3 processes"):
        dist.sampler(5, dist.Context(rank=0, world_size=3), seed=0, drop_last=False)


def test_every_rank_gets_its_own_reproducible_stream():
    def stream(rank):
        dist.seed_rank(dist.Context(rank=rank, world_size=2), seed=11)
        return torch.rand(4)

    assert torch.equal(stream(0), stream(0))
    assert not torch.equal(stream(0), stream(1))


def test_restore_rank_rng_restores_or_reseeds_with_a_note(capsys):
    ctx = dist.Context(rank=1, world_size=2)
    torch.manual_seed(0)
    saved = [capture_rng(), capture_rng()]
    want = torch.rand(3)
    torch.manual_seed(123)
    dist.restore_rank_rng(ctx, {"rng_ranks": saved}, seed=1, epoch=2)  # same world size: rank 1's state
    assert torch.equal(torch.rand(3), want)
    assert capsys.readouterr().err == ""
    main = dist.Context(rank=0, world_size=2)
    dist.restore_rank_rng(main, {}, seed=1, epoch=2)  # a single-process checkpoint
    a = torch.rand(3)
    dist.restore_rank_rng(main, {"rng_ranks": saved[:1]}, seed=1, epoch=2)
    assert torch.equal(torch.rand(3), a)  # reseeded from (seed, epoch, rank): reproducible
    err = capsys.readouterr().err
    assert "written by 1 process(es), this run has 2" in err and "reseeded per rank" in err


def test_null_log_takes_every_call():
    log = dist.NullLog()
    log.log({"epoch": 1})
    log.truncate(0)
    log.close()
    assert log.records == []
