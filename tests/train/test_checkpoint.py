"""Checkpoints: atomic writes, safe loading, random-state round trips, safetensors export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from contrastive.train import checkpoint


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"epoch": 1})

    def boom(tmp):
        open(tmp, "wb").write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, boom)
    assert checkpoint.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoints/last.pt"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")


def test_rng_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    checkpoint.save_checkpoint(tmp_path / "s.pt", {"rng": checkpoint.capture_rng()})
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    checkpoint.restore_rng(checkpoint.load_checkpoint(tmp_path / "s.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_safetensors_weights(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    checkpoint.save_weights(tmp_path / "w.safetensors", net)
    other = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    other.load_state_dict(checkpoint.load_weights(tmp_path / "w.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))


def test_all_finite_state_names_the_tensor():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    assert checkpoint.all_finite_state(net, opt) is None
    net[0](torch.ones(1, 2)).sum().backward()
    opt.step()
    next(iter(opt.state.values()))["momentum_buffer"].fill_(float("nan"))
    assert checkpoint.all_finite_state(net, opt).startswith("optimiser state momentum_buffer")
    net[1].running_var[0] = float("inf")
    assert checkpoint.all_finite_state(net, opt) == "buffer 1.running_var"
