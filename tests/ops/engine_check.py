"""Shared check for the engine's objectives: the blockwise op against a naive autograd
implementation (the oracles of tests/oracles.py) for values, input gradients and parameter gradients,
with a non-uniform upstream gradient for every reduction."""

import torch

REDUCTIONS = ("mean", "sum", "none")


def run(fn, inputs, params, reduction, seed=0):
    """fn(*inputs, *params, reduction) -> loss; returns (value, [grads of inputs], [grads of params])."""
    ins = [None if x is None else x.detach().clone().requires_grad_(True) for x in inputs]
    ps = [p.detach().clone().requires_grad_(True) if isinstance(p, torch.Tensor) else p for p in params]
    out = fn(*ins, *ps, reduction)
    if reduction == "none":
        w = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
        (out * w.to(out.dtype)).sum().backward()  # non-uniform upstream gradient
    else:
        (2.5 * out).backward()  # grad_output != 1
    grads = [None if x is None else x.grad for x in ins]
    pgrads = [p.grad if isinstance(p, torch.Tensor) else None for p in ps]
    return out.detach(), grads, pgrads


def assert_matches(fast, naive, inputs, params, rtol=1e-10, atol=1e-10, reductions=REDUCTIONS):
    for reduction in reductions:
        a = run(fast, inputs, params, reduction)
        b = run(naive, inputs, params, reduction)
        torch.testing.assert_close(a[0].double(), b[0].double(), rtol=rtol, atol=atol)
        for ga, gb in zip(a[1] + a[2], b[1] + b[2]):
            if gb is None:
                assert ga is None
                continue
            assert ga is not None
            scale = max(gb.abs().max().item(), 1.0)
            torch.testing.assert_close(ga.double(), gb.double(), rtol=rtol, atol=atol * scale)
