"""contrastive.integrations.pytorch_metric_learning against pytorch-metric-learning 2.9's own
NTXentLoss and SupConLoss: the same loss and embedding gradient (float64 to 1e-10, float32 to
1e-5) for random labels with singletons, one label for all, no positive pair, several
temperatures and the supported distances and reducers; and the refusals."""

from __future__ import annotations

import inspect

import pytest
import torch

from contrastive.integrations import pytorch_metric_learning as ours
from tests import oracles

pml = pytest.importorskip("pytorch_metric_learning.losses", reason="pytorch-metric-learning is not installed")
from pytorch_metric_learning import distances, reducers  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}

LABELS = {
    "random": lambda n, g: torch.randint(0, max(1, n // 3), (n,), generator=g),
    "singletons": lambda n, g: torch.cat(
        [torch.randint(0, 3, (n // 2,), generator=g), 100 + torch.arange(n - n // 2)]
    ),
    "one_label": lambda n, g: torch.zeros(n, dtype=torch.long),
    "no_positive": lambda n, g: torch.randperm(n, generator=g),
    "two_views": lambda n, g: torch.arange(n) % ((n + 1) // 2),  # SimCLR: sample i and i + n/2
}


def _run(loss, e, y, w=2.5):
    x = e.clone().requires_grad_()
    out = loss(x, y)
    (w * out).backward()
    return out.detach(), x.grad


def _assert_same(got, want, tol):
    (a, ga), (b, gb) = got, want
    assert a.dtype == b.dtype and a.shape == b.shape == ()
    assert abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b))), (float(a), float(b))
    scale = max(1.0, float(gb.abs().max()))
    assert float((ga - gb).abs().max()) <= tol * scale, float((ga - gb).abs().max())


# pytorch-metric-learning's NT-Xent holds a (positive pairs x negative pairs) matrix: keep N small
CASES = [(name, n) for name in LABELS for n in (2, 7, 40, 90)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("labels, n", CASES)
@pytest.mark.parametrize("cls", ["NTXentLoss", "SupConLoss"])
def test_matches_pytorch_metric_learning(cls, labels, n, temperature, dtype):
    g = torch.Generator().manual_seed(n)
    e = torch.randn(n, 8, generator=g, dtype=torch.float64).to(dtype)
    y = LABELS[labels](n, g)
    want = _run(getattr(pml, cls)(temperature=temperature), e, y)
    got = _run(getattr(ours, cls)(temperature=temperature), e, y)
    _assert_same(got, want, TOL[dtype])


@pytest.mark.parametrize("cls", ["NTXentLoss", "SupConLoss"])
def test_defaults_and_signature_match(cls):
    theirs, mine = getattr(pml, cls), getattr(ours, cls)
    assert inspect.signature(theirs.__init__).parameters["temperature"].default == (
        inspect.signature(mine.__init__).parameters["temperature"].default
    )
    assert [p.name for p in inspect.signature(theirs.forward).parameters.values()] == [
        p.name for p in inspect.signature(mine.forward).parameters.values()
    ]
    g = torch.Generator().manual_seed(0)
    e, y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randint(0, 6, (30,), generator=g)
    _assert_same(_run(mine(), e, y), _run(theirs(), e, y), 1e-10)


@pytest.mark.parametrize("cls", ["NTXentLoss", "SupConLoss"])
def test_supported_distances(cls):
    g = torch.Generator().manual_seed(1)
    e, y = 0.3 * torch.randn(25, 6, generator=g, dtype=torch.float64), torch.randint(0, 5, (25,), generator=g)
    for make in (
        distances.CosineSimilarity,
        distances.DotProductSimilarity,
        lambda: distances.DotProductSimilarity(normalize_embeddings=False),
    ):
        want = _run(getattr(pml, cls)(temperature=0.2, distance=make()), e, y)
        got = _run(getattr(ours, cls)(temperature=0.2, distance=make()), e, y)
        _assert_same(got, want, 1e-10)


def test_supcon_with_mean_reducer():
    g = torch.Generator().manual_seed(2)
    e, y = torch.randn(20, 4, generator=g, dtype=torch.float64), torch.randint(0, 8, (20,), generator=g)
    want = _run(pml.SupConLoss(reducer=reducers.MeanReducer()), e, y)
    got = _run(ours.SupConLoss(reducer=reducers.MeanReducer()), e, y)
    _assert_same(got, want, 1e-10)
    got = _run(ours.SupConLoss(reducer=reducers.AvgNonZeroReducer()), e, y)
    _assert_same(got, _run(pml.SupConLoss(), e, y), 1e-10)


def test_pair_nce_oracle_is_pml_ntxent():
    """The engine's oracle (tests/oracles.py) is pytorch-metric-learning's NT-Xent."""
    g = torch.Generator().manual_seed(3)
    e, y = torch.randn(31, 4, generator=g, dtype=torch.float64), torch.randint(0, 7, (31,), generator=g)
    want = _run(pml.NTXentLoss(temperature=0.3), e, y)
    got = _run(lambda x, yy: oracles.pair_nce(x, yy, 0.3), e, y)
    _assert_same(got, want, 1e-10)


def test_learnable_temperature_gets_its_gradient():
    g = torch.Generator().manual_seed(4)
    e, y = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    ours.NTXentLoss(temperature=t)(e, y).backward()
    t2 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    oracles.pair_nce(e, y, t2).backward()
    assert abs(float(t.grad - t2.grad)) <= 1e-10 * max(1.0, abs(float(t2.grad)))


def test_refusals():
    e, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    for cls in (ours.NTXentLoss, ours.SupConLoss):
        with pytest.raises(ValueError, match="indices_tuple"):
            cls()(e, y, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
        with pytest.raises(ValueError, match="ref_emb"):
            cls()(e, y, ref_emb=e)
        with pytest.raises(ValueError, match="labels are required"):
            cls()(e)
        with pytest.raises(ValueError, match="distance=LpDistance"):
            cls(distance=distances.LpDistance())
        with pytest.raises(ValueError, match="reducer=ThresholdReducer"):
            cls(reducer=reducers.ThresholdReducer(low=0.1))
        with pytest.raises(ValueError, match="embedding_regularizer"):
            cls(embedding_regularizer=object())
        with pytest.raises(TypeError, match="unexpected keyword"):
            cls(margin=0.1)
        with pytest.raises(ValueError, match="temperature must be positive"):
            cls(temperature=0.0)
        with pytest.raises(TypeError, match="integer"):
            cls()(e, y.float())
        with pytest.raises(ValueError, match="zero-norm"):
            cls()(torch.zeros(6, 3), y)
    with pytest.raises(ValueError, match="reducer=AvgNonZeroReducer"):
        ours.NTXentLoss(reducer=reducers.AvgNonZeroReducer())


def test_importing_the_drop_ins_imports_no_pytorch_metric_learning():
    import subprocess
    import sys

    code = (
        "import sys, contrastive.integrations.pytorch_metric_learning as m; m.NTXentLoss(); "
        "print(sorted(k for k in sys.modules if k.startswith('pytorch_metric_learning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
