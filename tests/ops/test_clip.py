"""ops/clip.py: the two-tower (CLIP) loss on the engine against the dense path, at every tile
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


def test_shift_bound_is_the_largest_possible_logit():
    """c = inv_t max|x| max|y| over every tensor of each side (None and empty ones skipped):
    every |S_ij| <= c, with equality for parallel rows of the largest norms."""
    from contrastive.ops.clip import shift_bound

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64)
    p, n = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 3, generator=g, dtype=torch.float64),
    )
    c = shift_bound(2.0, [a], [p, None, n, p[:0]])
    rho_a, rho_y = a.norm(dim=1).max(), torch.cat([p, n]).norm(dim=1).max()
    assert c == pytest.approx(2.0 * float(rho_a * rho_y), rel=1e-14)
    assert (2.0 * a @ torch.cat([p, n]).T).abs().max() <= c
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert shift_bound(0.5, [x], [2 * x]) == pytest.approx(0.5 * 2.0 * float((x * x).sum()), rel=1e-14)
