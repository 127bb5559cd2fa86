"""retrieval_loss: the blockwise engine against naive autograd at every tile boundary, with
hard, shared and gradient-free negatives, duplicate ids, both directions (the former symmetric form), every reduction,
a learnable temperature, half precision, and its bad inputs."""

import numpy as np
import pytest
import torch

import contrastive as C
from contrastive.reference import retrieval_loss as ref

from .. import oracles
from .engine_check import assert_matches

TWO = dict(
    directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
)  # formerly symmetric=True


def sym(symmetric):
    return TWO if symmetric else {}


def data(B, neg, seed, d=4):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, d, generator=g, dtype=torch.float64)
    p = torch.randn(B, d, generator=g, dtype=torch.float64)
    n = None
    if neg == "hard":
        n = torch.randn(B, 2, d, generator=g, dtype=torch.float64)
    elif neg == "shared":
        n = torch.randn(7, d, generator=g, dtype=torch.float64)
    return a, p, n


@pytest.mark.parametrize("B, bs", [(1, 1), (2, 1), (2, 512), (5, 3), (17, 4), (17, 512)])
@pytest.mark.parametrize("neg", [None, "hard", "shared"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("temperature", [0.002, 0.05, 10.0])
def test_engine_equals_naive_float64(B, bs, neg, symmetric, temperature):
    a, p, n = data(B, neg, B * 10 + bs)
    t = torch.tensor(temperature, dtype=torch.float64)
    ids = torch.randint(0, max(1, B // 2), (B,), generator=torch.Generator().manual_seed(B))
    for pid in (None, ids):

        def fast(a_, p_, n_, t_, r, pid=pid):
            return C.retrieval_loss(
                a_, p_, n_, t_, **sym(symmetric), positive_ids=pid, reduction=r, block_size=bs
            )

        def naive(a_, p_, n_, t_, r, pid=pid):
            return oracles.retrieval_loss(a_, p_, n_, t_, r, symmetric=symmetric, ids=pid)

        assert_matches(fast, naive, [a, p, n], [t])


def test_queue_without_grad_gets_none_and_same_anchor_grads():
    a, p, n = data(9, "shared", 1)
    queue = n.detach()
    a1 = a.clone().requires_grad_(True)
    C.retrieval_loss(a1, p, queue, 0.1, block_size=4).backward()
    a2 = a.clone().requires_grad_(True)
    oracles.retrieval_loss(a2, p, queue, 0.1).backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-10, atol=1e-12)


def test_symmetric_without_negatives_is_clip_loss():
    a, p, _ = data(11, None, 2)
    torch.testing.assert_close(
        C.retrieval_loss(a, p, None, 0.07, **TWO), C.clip_loss(a, p, 0.07), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_engine_matches_reference(symmetric):
    rng = np.random.default_rng(4)
    a, p, n = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.normal(size=(6, 2, 3))
    ids = np.array([0, 1, 0, 2, 3, 1])
    ts = [torch.tensor(x, requires_grad=True) for x in (a, p, n)]
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = C.retrieval_loss(*ts, t, **sym(symmetric), positive_ids=torch.tensor(ids), block_size=4)
    loss.backward()
    want = ref.grad(a, p, n, 0.3, symmetric, ids)
    np.testing.assert_allclose(loss.item(), ref.forward(a, p, n, 0.3, symmetric, ids).mean(), rtol=1e-12)
    for x, g in zip(ts, want[:3]):
        np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-10, atol=1e-12)
    assert t.grad.item() == pytest.approx(want[3], rel=1e-10)


def test_gradcheck_with_learnable_temperature():
    a, p, n = (x.requires_grad_(True) for x in data(4, "hard", 3, d=3))
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1, 0, 2])
    for r in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda *x, r=r: C.retrieval_loss(*x, **TWO, positive_ids=ids, reduction=r, block_size=3),
            (a, p, n, t),
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    a, p, n = (x.to(dtype) for x in data(20, "hard", 5, d=8))
    ins = [x.clone().requires_grad_(True) for x in (a, p, n)]
    out = C.retrieval_loss(*ins, 0.1, block_size=7)
    out.backward()
    ref_in = [x.double().requires_grad_(True) for x in (a, p, n)]
    want = oracles.retrieval_loss(*ref_in, 0.1)
    want.backward()
    assert out.dtype == dtype and all(x.grad.dtype == dtype for x in ins)
    torch.testing.assert_close(out.double(), want.detach(), rtol=2e-2, atol=2e-2)
    for x, y in zip(ins, ref_in):
        torch.testing.assert_close(x.grad.double(), y.grad, rtol=2e-2, atol=2e-2 * y.grad.abs().max().item())


def test_scaled_rows_give_the_unit_rows_loss():
    a, p, n = data(6, "hard", 6)
    base = C.retrieval_loss(a, p, n, 0.1)
    for s in (1e-15, 1e20, 1e30):
        torch.testing.assert_close(C.retrieval_loss(a * s, p / s, n * s, 0.1), base, rtol=1e-12, atol=0)
        torch.testing.assert_close(
            C.retrieval_loss((a * s).float(), p.float(), (n * s).float(), 0.1),
            base.float(),
            rtol=1e-5,
            atol=1e-6,
        )


A, P = torch.randn(4, 3), torch.randn(4, 3)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(negatives=torch.randn(4, 0, 3)), ValueError, "K = 0"),
        (dict(negatives=torch.randn(5, 2, 3)), ValueError, r"must be \(4, K, 3\)"),
        (dict(negatives=torch.randn(4, 2, 2)), ValueError, r"must be \(4, K, 3\)"),
        (dict(negatives=torch.randn(6, 2)), ValueError, "d = 3"),
        (dict(negatives=torch.randn(2, 2, 2, 3)), ValueError, r"\(B, K, d\) or \(M, d\)"),
        (dict(negatives=torch.randn(0, 3)), ValueError, "empty"),
        (dict(negatives=torch.randn(6, 3).double()), TypeError, "cast both"),
        (dict(negatives=[[0.0, 1.0, 2.0]]), TypeError, "negatives must be a torch.Tensor"),
        (
            dict(positive_ids=torch.zeros(3, dtype=torch.long)),
            ValueError,
            r"positive_ids must have shape \(4,\)",
        ),
        (dict(positive_ids=torch.zeros(4)), TypeError, "positive_ids must hold integer"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(directions="query_to_doc"), TypeError, "directions must be a tuple"),
        (dict(backend="dense"), ValueError, "backend"),
        (dict(reduction="avg"), ValueError, "reduction"),
    ],
)
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        C.retrieval_loss(A, P, **kwargs)


def test_bad_pairs():
    with pytest.raises(ValueError, match="same shape"):
        C.retrieval_loss(A, P[:3])
    with pytest.raises(TypeError, match="cast both"):
        C.retrieval_loss(A, P.double())


def test_module():
    crit = C.RetrievalLoss(learn_temperature=True, **TWO)
    a = torch.randn(4, 8, requires_grad=True)
    crit(a, torch.randn(4, 8), torch.randn(4, 2, 8), torch.tensor([0, 1, 2, 0])).backward()
    assert crit.log_temperature.grad is not None and a.grad is not None
