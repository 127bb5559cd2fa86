"""info_nce / clip_loss on the GPU: the Triton kernels and the torch engine against float64.

Tiers, each checking the next: (1) the torch engine in float64 on the device equals a naive
float64 autograd on the CPU (1e-10), every reduction, learnable temperature, one tile and
several; (2) both back-ends in float32, bfloat16 and float16 against the float64 engine on the
same rounded inputs, N up to 65536, every reduction with a non-uniform upstream gradient, a
learnable temperature; (3) the forward at N = 2^20 rows against float64 dense rows computed
for a sample of rows against all 2^20 columns. Explicit Triton block sizes outside the
autotuned cases keep compilation inside the check's time budget; bfloat16 (what the
benchmark times) and float32 take the autotuned launch.
"""

import pytest
import torch

import contrastive as C

from .. import oracles
from ._util import REDUCTIONS, TOL, compare, pick, run, unit_rows

pytestmark = pytest.mark.cuda

D = pick(128, 16)
TAU = 0.07


def single(backend, **kw):
    return lambda z, t, r: C.nt_xent(z, t, reduction=r, backend=backend, **kw)


def clip(backend, **kw):
    return lambda a, b, t, r: C.clip_loss(a, b, t, reduction=r, backend=backend, **kw)


def inputs(form, N, dtype, device, seed):
    """Raw (not unit) rows: the API's normalisation and its chain rule are part of the check."""
    n = 1 if form == "single" else 2
    return [unit_rows(N, D, torch.float64, device, seed + k).mul(1.5).to(dtype) for k in range(n)]


@pytest.mark.parametrize("form", ["single", "clip"])
@pytest.mark.parametrize("block_size", [None, pick(512, 8)], ids=["one-tile", "tiles"])
def test_float64_engine_on_device_equals_dense(device, form, block_size):
    N = pick(3000, 34)
    xs = inputs(form, N, torch.float64, device, seed=1)
    t = torch.tensor(TAU, dtype=torch.float64, device=device)
    if form == "single":
        fast = single("torch", block_size=block_size)
        naive = oracles.nt_xent
    else:
        fast = clip("torch", block_size=block_size)
        naive = oracles.clip_loss
    for reduction in REDUCTIONS:
        ref = run(naive, [x.cpu() for x in xs], [t.cpu()], reduction)
        compare(run(fast, xs, [t], reduction), ref, TOL[torch.float64], f"{form} float64 {reduction}")


# (backend, dtype, N, block_size): N = 1000 is not a multiple of any tile nor of 16
CASES = [
    ("triton", torch.bfloat16, pick(65536, 32), None),
    ("triton", torch.float32, pick(65536, 32), None),
    ("triton", torch.float16, pick(1000, 18), pick(64, 16)),
    ("torch", torch.bfloat16, pick(65536, 32), None),
    ("torch", torch.float16, pick(65536, 32), None),
    ("torch", torch.float32, pick(65536, 32), None),
    ("torch", torch.bfloat16, pick(1000, 18), pick(256, 16)),
]


@pytest.mark.parametrize("form", ["single", "clip"])
@pytest.mark.parametrize(
    "backend, dtype, N, block_size", CASES, ids=[f"{b}-{str(t)[6:]}-{n}" for b, t, n, _ in CASES]
)
def test_backend_against_float64_engine(device, form, backend, dtype, N, block_size):
    xs = inputs(form, N, dtype, device, seed=N)
    t32 = torch.tensor(TAU, dtype=torch.float32, device=device)  # learnable temperature
    t64 = t32.double()
    make = single if form == "single" else clip
    fast, ref_fn = make(backend, block_size=block_size), make("torch")
    for reduction in REDUCTIONS:
        ref = run(ref_fn, [x.double() for x in xs], [t64], reduction)  # the same rounded inputs
        got = run(fast, xs, [t32], reduction)
        assert got[0].dtype == dtype
        compare(got, ref, TOL[dtype], f"{backend} {form} {dtype} N={N} {reduction}")


def test_triton_keeps_self_in_the_denominator(device):
    N = pick(65536, 32)
    xs = inputs("single", N, torch.bfloat16, device, seed=5)
    t = torch.tensor(0.2, device=device)
    got = run(single("triton", exclude_self=False), xs, [t], "mean")
    ref = run(single("torch", exclude_self=False), [xs[0].double()], [t.double()], "mean")
    compare(got, ref, TOL[torch.bfloat16], "triton exclude_self=False")


def _dense_rows(form, x, y, idx, temperature, chunk):
    """float64 per-row losses of the rows ``idx`` against every column, ``chunk`` rows at a
    time (no N x N matrix): the row-sliced oracles."""
    if form == "single":
        return torch.cat([oracles.nt_xent_rows(x, i, temperature) for i in idx.split(chunk)])
    return torch.cat([oracles.clip_loss_rows(x, y, i, temperature) for i in idx.split(chunk)])


@pytest.mark.parametrize("form", ["single", "clip"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_forward_at_two_to_the_twenty_rows(device, backend, form):
    N = pick(1 << 20, 32)
    xs = [unit_rows(N, D, torch.bfloat16, device, seed=20 + k) for k in range(1 if form == "single" else 2)]
    with torch.no_grad():
        fn = single(backend, normalize=False) if form == "single" else clip(backend, normalize=False)
        out = fn(*xs, TAU, "none")  # (N,) per-row losses
        assert out.shape == (N,) and out.dtype == torch.bfloat16
        assert torch.isfinite(out).all()
        g = torch.Generator().manual_seed(0)
        k = pick(512, 4)
        idx = torch.cat([torch.arange(k), torch.arange(N - k, N), torch.randperm(N, generator=g)[: 2 * k]])
        idx = idx.to(device)
        x64 = xs[0].double()
        y64 = xs[-1].double()
        ref = _dense_rows(form, x64, y64, idx, TAU, chunk=pick(512, 8))
    err = (out[idx].double() - ref).abs() / ref.abs()
    assert err.max().item() <= TOL[torch.bfloat16], f"max per-row relative error {err.max().item():.3g}"
