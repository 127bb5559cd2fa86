"""The two-tower (CLIP) loss on the engine (ops/retrieval.py's clip_objective: symmetric
retrieval without negatives) against the dense path, at every tile
boundary, every reduction, a learnable temperature, float32, and its bad inputs."""

import pytest
import torch

import contrastive as C


def run_clip(a, b, t, backend, reduction, w=None, **kw):
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    out = C.clip_loss(a, b, t, reduction=reduction, backend=backend, **kw)
    (out * w).sum().backward() if w is not None else (2 * out).backward()
    return out.detach(), a.grad, b.grad, t.grad


@pytest.mark.parametrize("N, bs", [(1, 1), (2, 1), (5, 2), (9, 4), (16, 16), (33, 512)])
@pytest.mark.parametrize("temperature", [0.002, 0.01, 0.07, 10.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_clip_engine_equals_dense_float64(N, bs, temperature, normalize):
    g = torch.Generator().manual_seed(N)
    a = torch.randn(N, 6, generator=g, dtype=torch.float64)
    b = torch.randn(N, 6, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64)
    for reduction in ["mean", "sum", "none"]:
        w = torch.rand(N, generator=g, dtype=torch.float64) if reduction == "none" else None
        x = run_clip(a, b, t, "torch", reduction, w, block_size=bs, normalize=normalize)
        y = run_clip(a, b, t, "dense", reduction, w, normalize=normalize)
        for p, q in zip(x, y):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-10)


def test_clip_gradcheck_and_float32():
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, y, s: C.clip_loss(x, y, s, reduction="none", block_size=2), (a, b, t)
    )
    x = run_clip(a.detach().float(), b.detach().float(), t.detach().float(), "torch", "mean", block_size=2)
    y = run_clip(a.detach(), b.detach(), t.detach(), "dense", "mean")
    for p, q in zip(x, y):
        torch.testing.assert_close(p.double(), q, rtol=1e-5, atol=1e-5)


def test_clip_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        C.clip_loss(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        C.clip_loss(torch.randn(3, 2), torch.randn(3, 2), -1.0)
