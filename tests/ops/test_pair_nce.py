"""ops/pair_nce.py, pytorch-metric-learning's NT-Xent with class labels on the engine: against the
dense autograd oracle at every tile boundary, both shift paths, every reduction, a learnable
temperature, the edge cases (no positive pair, one class, singletons, rows without a
negative) and half precision. The comparison with pytorch-metric-learning itself is in
tests/integrations/test_pytorch_metric_learning.py."""

import itertools

import pytest
import torch

from contrastive.ops.engine import run
from contrastive.ops.pair_nce import pair_nce_objective

from .. import oracles
from .engine_check import assert_matches


def pair_nce(z, y, t, reduction="mean", bs=512, normalize=True):
    return run(pair_nce_objective(y, min(bs, z.shape[0])), [z], t, normalize=normalize, reduction=reduction)


def labels_for(N, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max(1, N // 3), (N,), generator=g)


@pytest.mark.parametrize("N, bs", list(itertools.product([2, 5, 9, 34], [1, 3, 4, 512])))
@pytest.mark.parametrize("temperature", [0.002, 0.01, 0.1, 10.0])
def test_engine_equals_naive_float64(N, bs, temperature):
    g = torch.Generator().manual_seed(N * 100 + bs)
    z = torch.randn(N, 4, generator=g, dtype=torch.float64)
    y = labels_for(N, N + bs)
    t = torch.tensor(temperature, dtype=torch.float64)
    assert_matches(
        lambda z_, t_, r: pair_nce(z_, y, t_, r, bs),
        lambda z_, t_, r: oracles.pair_nce(z_, y, t_, r),
        [z],
        [t],
    )


@pytest.mark.parametrize(
    "labels",
    [
        [0, 0, 0, 0, 0],  # one class: every row has positives and no negative
        [0, 1, 2, 3, 4],  # no positive pair
        [0, 0, 1, 2, 3, 4, 5],  # one pair, singletons
        [0, 0, 0, 1, 1, 2],  # mixed, a singleton
        [7, 3, 7, 7, 3, 3, 3, 9, 9, 9, 9],
    ],
)
@pytest.mark.parametrize("normalize", [True, False])
def test_edge_labels(labels, normalize):
    y = torch.tensor(labels)
    z = torch.randn(len(labels), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(len(labels)))
    t = torch.tensor(0.2, dtype=torch.float64)
    assert_matches(
        lambda z_, t_, r: pair_nce(z_, y, t_, r, 2, normalize),
        lambda z_, t_, r: oracles.pair_nce(z_, y, t_, r, normalize=normalize),
        [z],
        [t],
    )


def test_no_positive_pair_and_one_class_give_zero_and_zero_grad():
    for y in (torch.arange(6), torch.zeros(6, dtype=torch.long)):
        z = torch.randn(6, 3, requires_grad=True)
        t = torch.tensor(0.1, requires_grad=True)
        loss = pair_nce(z, y, t, bs=4)
        loss.backward()
        assert loss.item() == 0.0 and torch.all(z.grad == 0) and t.grad.item() == 0.0


def test_the_oracle_is_the_formula():
    """The oracle against the sum over pairs written out with Python loops."""
    g = torch.Generator().manual_seed(5)
    z = torch.nn.functional.normalize(torch.randn(7, 3, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 1, 0, 0, 1, 2, 3])
    S = z @ z.T / 0.3
    terms = []
    for a in range(7):
        for p in range(7):
            if p != a and y[p] == y[a]:
                den = torch.exp(S[a, p]) + sum(torch.exp(S[a, n]) for n in range(7) if y[n] != y[a])
                terms.append(-torch.log(torch.exp(S[a, p]) / den))
    want = torch.stack(terms).mean()
    torch.testing.assert_close(oracles.pair_nce(z, y, 0.3), want, rtol=1e-12, atol=0)


def test_gradcheck_with_learnable_temperature():
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 2, 2, 3])
    for r in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda a, tt, r=r: pair_nce(a, y, tt, r, 3), (z, t))


@pytest.mark.parametrize(
    "dtype, temperature", [(torch.float32, 0.1), (torch.float32, 0.01), (torch.bfloat16, 0.1)]
)
def test_low_precision_inputs(dtype, temperature):
    """float32 at tau = 0.1 (fixed shift) and 0.01 (online max: exp(-2c) underflows float32)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = labels_for(40, 2)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    zl = z.to(dtype).requires_grad_()
    out = pair_nce(zl, y, temperature, bs=16)
    out.backward()
    zr = z.to(dtype).double().requires_grad_()
    want = oracles.pair_nce(zr, y, temperature)
    want.backward()
    assert out.dtype == dtype and zl.grad.dtype == dtype
    torch.testing.assert_close(out.double(), want, **tol)
    # relative to the largest entry: at tau = 0.01 the float32 logits themselves carry errors of
    # |S| * 6e-8 ~ 6e-6, so a small entry of the gradient has no 1e-5 relative accuracy anywhere
    scale = max(1.0, float(zr.grad.abs().max()))
    torch.testing.assert_close(zl.grad.double(), zr.grad, rtol=tol["rtol"], atol=tol["rtol"] * scale)
