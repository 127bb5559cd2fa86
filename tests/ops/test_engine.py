"""The engine contract (ops/engine.py, ops/common.py): exact normalisation over the whole
finite range, and decoupled InfoNCE (DCL) against naive autograd at every tile boundary."""

import itertools

import numpy as np
import pytest
import torch

import contrastive as C
from contrastive.ops.clip import clip_objective
from contrastive.ops.common import chain_normalize, normalize_rows, row_norms
from contrastive.ops.engine import run
from contrastive.ops.info_nce import info_nce_objective
from contrastive.reference import info_nce as ref

from .. import oracles
from .engine_check import assert_matches

SCALES = (1e-30, 1e-20, 1e20, 1e30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_normalize_rows_is_exact_at_any_scale(dtype, scale):
    x = torch.randn(6, 5, dtype=torch.float64)
    z0, _ = normalize_rows(x)
    z, n = normalize_rows((x * scale).to(dtype))
    torch.testing.assert_close(z.double(), z0, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
    torch.testing.assert_close(
        row_norms(n).double(),
        torch.linalg.vector_norm(x, dim=1, keepdim=True) * scale,
        rtol=1e-6 if dtype == torch.float32 else 1e-14,
        atol=0,
    )


def test_chain_normalize_two_factor_norms_equal_plain_norms():
    x = torch.randn(7, 4, dtype=torch.float64)
    g = torch.randn(7, 4, dtype=torch.float64)
    z, n = normalize_rows(x)
    torch.testing.assert_close(
        chain_normalize(g, z, n), chain_normalize(g, z, row_norms(n)), rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_info_nce_and_clip_of_scaled_rows_equal_unit_rows(dtype, scale):
    """The engine (validation bypassed: the zero-norm check is not this module's) at 1e+-30."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, dtype=torch.float64, generator=g)
    y = torch.randn(8, 4, dtype=torch.float64, generator=g)
    # float64: the project's 1e-10 (scaling by a non-power of two rounds every entry)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=0)
    for build, ins in ((info_nce_objective(True, False, 3), [x]), (clip_objective(3), [x, y])):
        u0 = [v.to(dtype).detach().clone().requires_grad_(True) for v in ins]
        base = run(build, u0, 0.1)
        base.backward()
        us = [(v * scale).to(dtype).detach().requires_grad_(True) for v in ins]
        out = run(build, us, 0.1)
        out.backward()
        torch.testing.assert_close(out.double(), base.double(), **tol)
        for a, b in zip(us, u0):  # grad_u scales as 1 / |u|
            torch.testing.assert_close(a.grad.double() * scale, b.grad.double(), **tol)


@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_public_info_nce_of_huge_rows(scale):
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(
        C.info_nce(z1 * scale, z2 * scale, 0.2), C.info_nce(z1, z2, 0.2), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        C.clip_loss(z1 * scale, z2, 0.2), C.clip_loss(z1, z2, 0.2), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("B, bs", list(itertools.product([2, 3, 17], [1, 3, 512])))
@pytest.mark.parametrize("temperature", [0.002, 0.01, 0.5, 10.0])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_decoupled_equals_naive_float64(B, bs, temperature, exclude_self):
    g = torch.Generator().manual_seed(B * 10 + bs)
    z1 = torch.randn(B, 4, generator=g, dtype=torch.float64)
    z2 = torch.randn(B, 4, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64)

    def fast(a, b, t_, r):
        return C.info_nce(a, b, t_, reduction=r, block_size=bs, decoupled=True, exclude_self=exclude_self)

    def naive(a, b, t_, r):
        return oracles.info_nce(a, b, t_, r, decoupled=True, exclude_self=exclude_self)

    assert_matches(fast, naive, [z1, z2], [t])


def test_decoupled_matches_reference_and_module():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(10, 3))
    zt = torch.tensor(z, requires_grad=True)
    loss = C.nt_xent(zt, 0.3, decoupled=True, block_size=4)
    loss.backward()
    g, _ = ref.grad(z, 0.3, decoupled=True)
    np.testing.assert_allclose(loss.item(), ref.forward(z, 0.3, decoupled=True).mean(), rtol=1e-12)
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-10, atol=1e-12)
    crit = C.InfoNCELoss(0.3, decoupled=True)
    torch.testing.assert_close(crit(zt[:5], zt[5:]), loss)


def test_decoupled_bad_input():
    z = torch.randn(1, 3)
    with pytest.raises(ValueError, match="N >= 4"):
        C.info_nce(z, z, decoupled=True)
    with pytest.raises(ValueError, match="torch engine only"):
        C.info_nce(torch.randn(3, 3), torch.randn(3, 3), decoupled=True, backend="dense")
    C.info_nce(z, z, decoupled=True, exclude_self=False)  # N = 2 keeps self as the candidate


def test_clip_module_learns_temperature():
    crit = C.ClipLoss()
    assert crit.temperature.item() == pytest.approx(0.07)
    a, b = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4)
    out = crit(a, b)
    out.backward()
    assert crit.logit_scale.grad is not None and a.grad is not None
    torch.testing.assert_close(out.detach(), C.clip_loss(a.detach(), b, 0.07))


def test_auto_takes_the_torch_engine_for_objectives_without_a_kernel(monkeypatch):
    """Simulate CUDA tensors with Triton installed: 'auto' would resolve to 'triton'. Objectives
    without a kernel (DCL, SupCon, retrieval, SigLIP) must still run the torch engine."""
    import contrastive.kernels.dispatch as dispatch

    monkeypatch.setattr(
        dispatch, "choose_backend", lambda backend, *t: "triton" if backend == "auto" else backend
    )
    z1, z2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    want = oracles.info_nce(z1, z2, 0.5, decoupled=True)
    torch.testing.assert_close(C.info_nce(z1, z2, decoupled=True), want, rtol=1e-12, atol=0)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert torch.isfinite(C.supcon_loss(torch.cat([z1, z2]), y))
    assert torch.isfinite(C.retrieval_loss(z1, z2, None))
    assert torch.isfinite(C.siglip_loss(z1, z2))


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("name", ["info_nce", "decoupled", "clip", "supcon", "retrieval", "siglip"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_n_by_n_tensor_is_ever_made(name, reduction):
    """N = 256 rows, tiles of 16: every tensor stays O(N d + tile^2), far below N^2."""
    N, d, bs = 256, 4, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(N, 2, d, generator=g, dtype=torch.float64, requires_grad=True)
    calls = {
        "info_nce": lambda: C.info_nce(x, y, 0.1, reduction=reduction, block_size=bs),
        "decoupled": lambda: C.info_nce(x, y, 0.1, reduction=reduction, block_size=bs, decoupled=True),
        "clip": lambda: C.clip_loss(x, y, 0.1, reduction=reduction, block_size=bs),
        "supcon": lambda: C.supcon_loss(
            torch.cat([x, y]), torch.arange(2 * N) % 50, reduction=reduction, block_size=bs
        ),
        "retrieval": lambda: C.retrieval_loss(
            x,
            y,
            n,
            0.1,
            symmetric=True,
            positive_ids=torch.arange(N) % 100,
            reduction=reduction,
            block_size=bs,
        ),
        "siglip": lambda: C.siglip_loss(x, y, reduction=reduction, block_size=bs),
    }
    with _LargestTensor() as mode:
        out = calls[name]()
        (out.sum() if reduction == "none" else out).backward()
    assert mode.largest <= 4 * N * d, f"{name}: a tensor of {mode.largest} elements (N^2 = {N * N})"


def test_largest_tensor_probe_sees_the_dense_path():
    """The probe above can fail: the dense reference path holds the N x N logits."""
    N = 256
    x = torch.randn(N, 4, dtype=torch.float64, requires_grad=True)
    with _LargestTensor() as mode:
        C.info_nce(x, x.flip(0), 0.1, backend="dense").backward()
    assert mode.largest >= (2 * N) ** 2
