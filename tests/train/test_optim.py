"""Optimisers and schedule: parameter groups, LARS, warm-up + cosine, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastive.train.config import OptimConfig
from contrastive.train.optim import LARS, WarmupCosine, build_optimizer, param_groups


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_groups_exclude_bias_and_bn():
    decay, plain = param_groups(_net(), 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.dim() == 1 for p in plain["params"]) and len(plain["params"]) == 4
    assert plain["weight_decay"] == 0.0 and plain["lars_exclude"] and not decay["lars_exclude"]


def test_lars_trust_ratio_and_exclusion():
    w = nn.Parameter(torch.full((2, 2), 3.0))
    b = nn.Parameter(torch.ones(2))
    opt = LARS(
        [
            {"params": [w], "lars_exclude": False, "weight_decay": 0.1},
            {"params": [b], "lars_exclude": True, "weight_decay": 0.0},
        ],
        lr=0.5,
        momentum=0.9,
        eta=0.01,
    )
    w.grad, b.grad = torch.full((2, 2), 2.0), torch.full((2,), 2.0)
    opt.step()
    g = 2.0 + 0.1 * 3.0  # gradient plus weight decay
    ratio = 0.01 * 6.0 / (2 * g)  # eta |w| / |g| with |w| = 6 and |g| = 2g for a 2 x 2 constant
    assert torch.allclose(w, torch.full((2, 2), 3.0 - 0.5 * ratio * g))
    assert torch.allclose(b, torch.full((2,), 1.0 - 0.5 * 2.0))  # plain SGD step
    b.grad = torch.full((2,), 2.0)
    w.grad = torch.zeros(2, 2)
    opt.step()
    assert torch.allclose(b, torch.full((2,), 0.0 - 0.5 * (0.9 * 2.0 + 2.0)))  # momentum


@pytest.mark.parametrize(
    "name, cls", [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)]
)
def test_build_optimizer(name, cls):
    opt = build_optimizer(OptimConfig(name=name, lr=0.1), _net())
    assert isinstance(opt, cls) and opt.param_groups[1]["weight_decay"] == 0.0


def test_schedule_and_resume():
    def make():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
        return opt, WarmupCosine(opt, warmup_steps=3, total_steps=10, min_ratio=0.1)

    opt, sched = make()
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([2 / 3, 4 / 3, 2.0]) and lrs[3] == pytest.approx(2.0)
    assert lrs[-1] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + torch.cos(torch.tensor(6 / 7 * torch.pi)).item()))
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == sched.last_epoch == 10
    const = WarmupCosine(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 0, 5, schedule="constant")
    assert const.factor(4) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        WarmupCosine(opt, 0, 5, schedule="step")
