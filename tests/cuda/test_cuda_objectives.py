"""The general engine's objectives on the GPU (issue 11): supcon_loss, retrieval_loss,
siglip_loss and info_nce(decoupled=True), on the torch engine (they have no Triton kernel).

Tier (1): float64 on the device equals the naive float64 autograd oracles of tests/oracles.py (run on
the CPU) to 1e-10, every reduction with a non-uniform upstream gradient, learnable temperature
(and SigLIP's bias), one tile and several. Tier (2): float32, bfloat16 and float16 inputs
against the float64 engine on the same rounded inputs at N = 16384.
"""

import functools

import pytest
import torch

import contrastive as C

from .. import oracles
from ._util import REDUCTIONS, TOL, compare, pick, randn, run

pytestmark = pytest.mark.cuda

D = pick(128, 16)


def problem(name, B, dtype, device, seed, block_size=None, rounded=None):
    """(fast fn, naive fn, inputs, params) for one objective with B pairs (N = 2B rows); inputs
    in ``dtype``, first rounded to ``rounded`` (the float64 reference of a half-precision run)."""
    x = lambda *shape, s=0: randn(shape, rounded or dtype, device, seed + s).to(dtype)  # noqa: E731
    t = torch.tensor(0.1, dtype=torch.float64, device=device)
    kw = dict(block_size=block_size)
    if name == "supcon":
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, max(1, B // 2), (2 * B,), generator=g)  # ~4 rows per class
        fast = lambda z, t_, r: C.supcon_loss(z, y.to(z.device), t_, reduction=r, **kw)  # noqa: E731
        naive = lambda z, t_, r: oracles.supcon_loss(z, y, t_, r)  # noqa: E731
        return fast, naive, [x(2 * B, D)], [t]
    if name == "decoupled":
        fast = lambda a, b, t_, r: C.info_nce(a, b, t_, reduction=r, decoupled=True, **kw)  # noqa: E731
        return fast, functools.partial(oracles.info_nce, decoupled=True), [x(B, D), x(B, D, s=1)], [t]
    if name == "siglip":
        bias = torch.tensor(-10.0, dtype=torch.float64, device=device)
        fast = lambda a, b, t_, b_, r: C.siglip_loss(a, b, t_, b_, reduction=r, **kw)  # noqa: E731
        return fast, oracles.siglip_loss, [x(B, D), x(B, D, s=1)], [t, bias]
    # retrieval variants: hard negatives (B, 1, d) and symmetric; a shared queue without grad;
    # duplicate positives marked by ids
    ids = None
    if name == "retrieval-hard-symmetric":
        neg, symmetric = x(B, 1, D, s=2), True
    elif name == "retrieval-queue":
        neg, symmetric = x(max(1, B // 2), D, s=2), False
    else:
        neg, symmetric = None, False
        ids = (torch.arange(B) // 2).to(device)  # pairs of duplicates

    def fast(a, p, n, t_, r):
        return C.retrieval_loss(
            a,
            p,
            n,
            t_,
            **(
                dict(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
                if symmetric
                else {}
            ),
            positive_ids=ids,
            reduction=r,
            **kw,
        )

    def naive(a, p, n, t_, r):
        return oracles.retrieval_loss(
            a, p, n, t_, r, symmetric=symmetric, ids=None if ids is None else ids.cpu()
        )

    if name == "retrieval-queue":
        neg = neg.detach()
        fast_q = lambda a, p, t_, r: fast(a, p, neg, t_, r)  # noqa: E731
        naive_q = lambda a, p, t_, r: naive(a, p, neg.cpu(), t_, r)  # noqa: E731
        return fast_q, naive_q, [x(B, D), x(B, D, s=1)], [t]
    return fast, naive, [x(B, D), x(B, D, s=1), neg], [t]


NAMES = ["supcon", "decoupled", "siglip", "retrieval-hard-symmetric", "retrieval-queue", "retrieval-ids"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("block_size", [None, pick(512, 4)], ids=["one-tile", "tiles"])
def test_float64_on_device_equals_naive(device, name, block_size):
    B = pick(1500, 9)
    fast, naive, xs, ps = problem(name, B, torch.float64, device, seed=3, block_size=block_size)
    for reduction in REDUCTIONS:
        ref = run(naive, [None if x is None else x.cpu() for x in xs], [p.cpu() for p in ps], reduction)
        compare(run(fast, xs, ps, reduction), ref, TOL[torch.float64], f"{name} float64 {reduction}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_against_float64_engine(device, name, dtype):
    B = pick(8192, 16)
    fast, _, xs, ps = problem(name, B, dtype, device, seed=4)
    fast64, _, _, _ = problem(name, B, torch.float64, device, seed=4, rounded=dtype)
    for reduction in REDUCTIONS:
        ref = run(
            fast64, [None if x is None else x.double() for x in xs], [p.double() for p in ps], reduction
        )
        got = run(fast, xs, [p.float() for p in ps], reduction)
        assert got[0].dtype == dtype
        compare(got, ref, TOL[dtype], f"{name} {dtype} {reduction}")


@pytest.mark.parametrize("name", ["supcon", "siglip"])
def test_auto_backend_runs_on_the_device(device, name):
    fast, _, xs, ps = problem(name, pick(256, 8), torch.bfloat16, device, seed=6)
    out = run(fast, xs, [p.float() for p in ps], "mean")  # backend='auto'

    assert out[0].device.type == device.type and torch.isfinite(out[0]).all()
