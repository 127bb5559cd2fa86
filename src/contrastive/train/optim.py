"""Optimisers and the learning-rate schedule: SGD with momentum, LARS, AdamW; warm-up + cosine.

Weight decay skips biases and BatchNorm parameters (every parameter with fewer than two
dimensions); LARS also leaves them out of its layer-wise adaptation, as SimCLR does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .config import OptimConfig
from .registry import OPTIMIZERS, SCHEDULES

__all__ = ["LARS", "OPTIMIZERS", "SCHEDULES", "WarmupCosine", "build_optimizer", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, LARS-adapted) and biases/BN parameters (neither).

    Examples:
        >>> groups = param_groups(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), 1e-4)
        >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
        ([1, 3], [0.0001, 0.0])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else plain).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    r"""LARS (You, Gitman, Ginsburg 2017) as used by SimCLR: SGD with momentum whose step for each
    weight tensor is scaled by the trust ratio

    .. math::  g \leftarrow g + \lambda w, \qquad
               g \leftarrow \eta \frac{\lVert w \rVert}{\lVert g \rVert} g, \qquad
               v \leftarrow \mu v + g, \qquad w \leftarrow w - \mathrm{lr}\, v

    Groups with ``lars_exclude=True`` (biases, BatchNorm) skip the decay and the ratio.

    Args:
        params: parameters or groups (see :func:`param_groups`).
        lr: learning rate.
        momentum: mu.
        weight_decay: lambda.
        eta: trust coefficient.

    Examples:
        >>> w = nn.Parameter(torch.ones(2, 2))
        >>> opt = LARS([w], lr=0.1, momentum=0.0, eta=0.5)
        >>> w.grad = torch.full((2, 2), 10.0); opt.step()
        >>> w.data[0, 0].item()   # step 0.1 * 0.5 * (|w| / |g|) * g = 0.05
        0.95
    """

    def __init__(
        self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 1e-3
    ):
        if lr <= 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs lr > 0, momentum >= 0, weight_decay >= 0, eta > 0; got "
                f"{lr}, {momentum}, {weight_decay}, {eta}"
            )
        super().__init__(
            params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    g = g * ratio
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser an ``OptimConfig`` names (``sgd``, ``lars`` or ``adamw``)."""
    if not isinstance(cfg, OptimConfig):
        raise TypeError(f"cfg must be an OptimConfig, got {type(cfg).__name__}")
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    if cfg.name == "adamw":
        # a config with fused=True (the retrieval recipe's) takes the fused kernel: one pass over
        # a large embedding table instead of a dozen, several times faster on the CPU
        fused = True if getattr(cfg, "fused", False) else None
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), fused=fused)
    raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {cfg.name!r}")


class WarmupCosine(LRScheduler):
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` x the base rate
    at ``total_steps`` (or a constant rate with ``schedule='constant'``). Step it every batch.

    Examples:
        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = WarmupCosine(opt, warmup_steps=2, total_steps=6)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
        >>> lrs
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """

    def __init__(
        self,
        optimizer,
        warmup_steps: int,
        total_steps: int,
        min_ratio: float = 0.0,
        schedule: str = "cosine",
        last_epoch: int = -1,
    ):
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(
                f"warmup_steps must be >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}"
            )
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.min_ratio, self.schedule = float(min_ratio), schedule
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base rate at (0-based) ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def state_dict(self) -> dict:
        """The step count and base rates; the schedule's shape comes from the constructor, so a
        resumed run may extend ``total_steps``."""
        keep = ("warmup_steps", "total_steps", "min_ratio", "schedule")
        return {k: v for k, v in super().state_dict().items() if k not in keep}

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
