"""ops/matryoshka.py: Matryoshka losses (every prefix in one walk over the tiles) against the
dense float64 oracles (tests/oracles.py: the sum over prefixes of each objective's oracle on the
prefixes normalised on their own) and against sentence-transformers' MatryoshkaLoss round
MultipleNegativesRankingLoss; the argument checks."""

import pytest
import torch

import contrastive as C
from contrastive.ops.matryoshka import Prefixes

from .. import oracles
from .engine_check import assert_matches

D = 11
DIMS = (7, 3, 11, 3, 5)  # unsorted, 3 repeated, chunks of 3, 2, 2, 4 columns
WEIGHTS = (1.0, 0.5, 2.0, 0.25, -0.75)
MRL = dict(matryoshka_dims=DIMS, matryoshka_weights=WEIGHTS)
TWO_WAY = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _temps(learn):
    return torch.tensor(0.3, dtype=torch.float64) if learn else 0.3


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("bs", [3, 4, 64])
def test_info_nce_and_dcl(learn, bs):
    z1, z2 = _rand(9, D), _rand(9, D, seed=1)
    naive = oracles.matryoshka(oracles.info_nce, 2, DIMS, WEIGHTS)
    for decoupled in (False, True):
        for exclude_self in (True, False):
            kw = dict(decoupled=decoupled, exclude_self=exclude_self)

            def fast(a, b, t, r, kw=kw):
                return C.info_nce(a, b, t, reduction=r, block_size=bs, **kw, **MRL)

            assert_matches(fast, lambda a, b, t, r, kw=kw: naive(a, b, t, r, **kw), [z1, z2], [_temps(learn)])


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("bs", [4, 64])
def test_clip(learn, bs):
    a, b = _rand(10, D), _rand(10, D, seed=1)
    fast = lambda a, b, t, r: C.clip_loss(a, b, t, reduction=r, block_size=bs, **MRL)  # noqa: E731
    assert_matches(fast, oracles.matryoshka(oracles.clip_loss, 2, DIMS, WEIGHTS), [a, b], [_temps(learn)])


@pytest.mark.parametrize("learn", [False, True])
def test_supcon(learn):
    z = _rand(13, D)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 2, 1, 4, 0, 1])  # class 3 and 4: one row, no positive
    fast = lambda z, t, r: C.supcon_loss(z, y, t, reduction=r, block_size=4, **MRL)  # noqa: E731
    naive = oracles.matryoshka(oracles.supcon_loss, 1, DIMS, WEIGHTS)
    assert_matches(fast, lambda z, t, r: naive(z, y, t, r), [z], [_temps(learn)])


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("negatives", ["none", "hard", "shared"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_retrieval(learn, negatives, symmetric):
    B = 7
    a, p = _rand(B, D), _rand(B, D, seed=1)
    n = {"none": None, "hard": _rand(B, 2, D, seed=2), "shared": _rand(5, D, seed=3)}[negatives]
    ids = torch.tensor([0, 1, 0, 2, 3, 1, 4])  # duplicates: masked false negatives
    naive = oracles.matryoshka(oracles.retrieval_loss, 3, DIMS, WEIGHTS)
    for pid in (None, ids):

        def fast(a, p, n, t, r, pid=pid):
            return C.retrieval_loss(
                a,
                p,
                n,
                t,
                **(TWO_WAY if symmetric else {}),
                positive_ids=pid,
                reduction=r,
                block_size=3,
                **MRL,
            )

        assert_matches(
            fast,
            lambda a, p, n, t, r, pid=pid: naive(a, p, n, t, r, symmetric=symmetric, ids=pid),
            [a, p, n],
            [_temps(learn)],
        )


def test_retrieval_with_a_queue_and_positives_without_gradient():
    """A shared (M, d) queue and positives that carry no gradient: only the anchors get one."""
    a, p, q = _rand(7, D), _rand(7, D, seed=1), _rand(5, D, seed=2)
    naive = oracles.matryoshka(oracles.retrieval_loss, 3, DIMS, WEIGHTS)
    for reduction in ("mean", "none"):
        ua, ub = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
        got = C.retrieval_loss(ua, p, q, 0.3, reduction=reduction, block_size=3, **MRL)
        want = naive(ub, p, q, 0.3, reduction)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        w = torch.linspace(0.5, 2.0, 7, dtype=torch.float64) if reduction == "none" else torch.tensor(1.5)
        (got * w).sum().backward()
        (want * w).sum().backward()
        torch.testing.assert_close(ua.grad, ub.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("bs", [4, 64])
def test_siglip(learn, bs):
    a, b = _rand(10, D), _rand(10, D, seed=1)
    t = torch.tensor(0.3, dtype=torch.float64) if learn else 0.3
    bias = torch.tensor(-1.5, dtype=torch.float64) if learn else -1.5
    fast = lambda a, b, t, c, r: C.siglip_loss(a, b, t, c, reduction=r, block_size=bs, **MRL)  # noqa: E731
    assert_matches(fast, oracles.matryoshka(oracles.siglip_loss, 2, DIMS, WEIGHTS), [a, b], [t, bias])


def test_online_max_path():
    """tau = 0.002 in float64 puts exp(-2 / tau) below the normal range: the online maximum runs."""
    z1, z2 = _rand(9, D), _rand(9, D, seed=1)
    t = torch.tensor(0.002, dtype=torch.float64)
    for fast, naive, ins in (
        (
            lambda a, b, t, r: C.info_nce(a, b, t, reduction=r, block_size=4, **MRL),
            oracles.matryoshka(oracles.info_nce, 2, DIMS, WEIGHTS),
            [z1, z2],
        ),
        (
            lambda a, b, t, r: C.clip_loss(a, b, t, reduction=r, block_size=4, **MRL),
            oracles.matryoshka(oracles.clip_loss, 2, DIMS, WEIGHTS),
            [z1, z2],
        ),
        (
            lambda a, p, t, r: C.retrieval_loss(a, p, None, t, **TWO_WAY, reduction=r, block_size=4, **MRL),
            lambda a, p, t, r: oracles.matryoshka(oracles.retrieval_loss, 3, DIMS, WEIGHTS)(
                a, p, None, t, r, symmetric=True
            ),
            [z1, z2],
        ),
    ):
        assert_matches(fast, naive, ins, [t], rtol=1e-9, atol=1e-9)


def test_one_full_width_dim_is_the_plain_loss():
    a, b = _rand(8, D), _rand(8, D, seed=1)
    for f in (C.clip_loss, C.siglip_loss, C.info_nce):
        torch.testing.assert_close(f(a, b, matryoshka_dims=[D]), f(a, b), rtol=1e-13, atol=0)
    torch.testing.assert_close(
        C.retrieval_loss(a, b, matryoshka_dims=[D, D], matryoshka_weights=[0.5, 0.5]),
        C.retrieval_loss(a, b),
        rtol=1e-13,
        atol=0,
    )


def test_float32_matches_float64():
    a, b = _rand(40, 24), _rand(40, 24, seed=1)
    kw = dict(matryoshka_dims=(24, 16, 8, 4), block_size=16)
    for f in (C.clip_loss, C.info_nce, C.siglip_loss, C.retrieval_loss):
        ins64 = [a.clone().requires_grad_(True), b.clone().requires_grad_(True)]
        ins32 = [x.detach().float().requires_grad_(True) for x in ins64]
        f(*ins64, **kw).backward()
        f(*ins32, **kw).backward()
        for x32, x64 in zip(ins32, ins64):
            torch.testing.assert_close(
                x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-5 * x64.grad.abs().max()
            )


def test_scaled_rows_equal_unit_rows():
    """Each prefix is normalised from the unit rows: rows of norm 1e30 or 1e-30 in float32 give
    the same loss and (times the scale) the same gradient."""
    a, b = _rand(8, D).float(), _rand(8, D, seed=1).float()
    base = C.clip_loss(a, b, 0.1, **MRL)
    for scale in (1e-30, 1e30):
        u = (a * scale).requires_grad_(True)
        out = C.clip_loss(u, b, 0.1, **MRL)
        out.backward()
        u0 = a.clone().requires_grad_(True)
        C.clip_loss(u0, b, 0.1, **MRL).backward()
        torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(u.grad * scale, u0.grad, rtol=1e-4, atol=1e-6)


def test_prefixes_sort_and_merge_like_sentence_transformers():
    p = Prefixes((64, 768, 256, 64), (1.0, 2.0, 3.0, 0.5))
    assert p.dims == (64, 256, 768) and p.weights == (1.5, 3.0, 2.0)
    assert p.bounds == [(0, 64), (64, 256), (256, 768)]


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(matryoshka_dims=(4, 0)), ValueError, "1..11"),
        (dict(matryoshka_dims=(4, 12)), ValueError, "1..11"),
        (dict(matryoshka_dims=()), ValueError, "empty"),
        (dict(matryoshka_dims=8), TypeError, "list or tuple"),
        (dict(matryoshka_dims=(4.0,)), TypeError, "ints"),
        (dict(matryoshka_dims=(4, 8), matryoshka_weights=(1.0,)), ValueError, "one weight per dim"),
        (dict(matryoshka_dims=(4,), matryoshka_weights=(float("nan"),)), ValueError, "finite"),
        (dict(matryoshka_weights=(1.0,)), ValueError, "without matryoshka_dims"),
        (dict(matryoshka_dims=(4,), normalize=False), ValueError, "normalize=False"),
    ],
)
def test_bad_arguments_are_refused(kw, err, match):
    a, b = _rand(4, D), _rand(4, D, seed=1)
    for call in (
        lambda: C.clip_loss(a, b, **kw),
        lambda: C.info_nce(a, b, **kw),
        lambda: C.retrieval_loss(a, b, **kw),
        lambda: C.siglip_loss(a, b, **kw),
        lambda: C.supcon_loss(a, torch.arange(4) % 2, **kw),
    ):
        with pytest.raises(err, match=match):
            call()


def test_zero_or_vanishing_prefix_and_other_backends_are_refused():
    a, b = _rand(4, D), _rand(4, D, seed=1)
    a0 = a.clone()
    a0[2, :3] = 0
    with pytest.raises(ValueError, match="row 2: its first 3 entries .* is all zeros"):
        C.clip_loss(a0, b, matryoshka_dims=(3, 11))
    a0 = a.float()
    a0[1, :3] = 1e-20  # a prefix 1e-20 of its row: its products underflow float32
    with pytest.raises(ValueError, match="row 1: its first 3 entries"):
        C.info_nce(a0, b.float(), matryoshka_dims=(3, 11))
    for backend in ("dense",):
        with pytest.raises(ValueError, match="torch engine only"):
            C.clip_loss(a, b, backend=backend, matryoshka_dims=(3,))
        with pytest.raises(ValueError, match="torch engine only"):
            C.info_nce(a, b, backend=backend, matryoshka_dims=(3,))


def test_module_forms_take_the_prefixes():
    a, b = _rand(6, D), _rand(6, D, seed=1)
    y = torch.arange(6) % 3
    pairs = [
        (C.InfoNCELoss(0.3, **MRL)(a, b), C.info_nce(a, b, 0.3, **MRL)),
        (C.SupConLoss(0.3, **MRL)(a, y), C.supcon_loss(a, y, 0.3, **MRL)),
        (C.RetrievalLoss(0.3, **MRL)(a, b), C.retrieval_loss(a, b, None, 0.3, **MRL)),
        (C.ClipLoss(0.3, **MRL)(a, b), C.clip_loss(a, b, 0.3, **MRL)),
        (C.SigLIPLoss(**MRL)(a, b), C.siglip_loss(a, b, 0.1, -10.0, **MRL)),
    ]
    for got, want in pairs:
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-6, atol=1e-7)
    assert "matryoshka_dims=(7, 3, 11, 3, 5)" in repr(C.RetrievalLoss(**MRL))
    with pytest.raises(ValueError, match="positive"):
        C.ClipLoss(matryoshka_dims=(64, 0))
    with pytest.raises(ValueError, match="normalize=False"):
        C.InfoNCELoss(matryoshka_dims=(64,), normalize=False)
    with pytest.raises(ValueError, match="1..11"):  # the width, known at the call
        C.SigLIPLoss(matryoshka_dims=(64,))(a, b)


st = pytest.importorskip("sentence_transformers")


class _Lookup(torch.nn.Module):
    """A SentenceTransformer module that looks the embeddings up in a table (no download)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, features):
        features["sentence_embedding"] = self.table[features["idx"]]
        return features

    def get_embedding_dimension(self):
        return self.table.shape[1]


@pytest.mark.parametrize("hard", [0, 2])
@pytest.mark.parametrize("dims, weights", [((11, 7, 3), None), (DIMS, WEIGHTS)])
def test_equals_sentence_transformers_matryoshka_of_mnrl(hard, dims, weights):
    """MatryoshkaLoss(MultipleNegativesRankingLoss) of sentence-transformers 6.3 on the same
    embeddings (a lookup table as the model): loss and the gradient of every embedding."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    B = 6
    table = _rand(B * (2 + hard), D)
    model = SentenceTransformer(modules=[_Lookup(table.clone())], device="cpu")
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), list(dims), weights)
    cols = [{"idx": torch.arange(c * B, (c + 1) * B)} for c in range(2 + hard)]
    want = loss(cols, None)
    want.backward()
    want_grad = model[0].table.grad

    u = table.clone().requires_grad_(True)
    a, p = u[:B], u[B : 2 * B]
    n = torch.stack([u[(2 + c) * B : (3 + c) * B] for c in range(hard)], 1) if hard else None  # (B, K, d)
    got = C.retrieval_loss(a, p, n, 0.05, matryoshka_dims=dims, matryoshka_weights=weights, block_size=4)
    got.backward()
    torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(u.grad, want_grad, rtol=1e-9, atol=1e-11)


ALL4 = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")


@pytest.mark.parametrize(
    "kw",
    [
        dict(directions=ALL4),
        dict(hardness_mode="all_negatives", hardness_strength=2.0),
        dict(hcl_beta=1.0, hcl_tau_plus=0.1),
        dict(guide_margin=0.05, contrast_anchors=True),
    ],
    ids=["gte4", "hardness", "hcl", "gist"],
)
def test_retrieval_features_with_matryoshka(kw):
    """The features' blocks run a walk per prefix: the sum over prefixes of the dense oracle."""
    B = 7
    a, p, n = _rand(B, D), _rand(B, D, seed=1), _rand(B, 2, D, seed=2)
    if "guide_margin" in kw:  # a guide of its own width: the same on every prefix
        kw = dict(kw, guide=(_rand(B, 5, seed=4), _rand(B, 5, seed=5), _rand(B, 2, 5, seed=6)))
    naive = oracles.matryoshka(oracles.retrieval_features, 3, DIMS, WEIGHTS)

    def fast(a, p, n, t, r):
        return C.retrieval_loss(a, p, n, t, reduction=r, block_size=3, **kw, **MRL)

    assert_matches(fast, lambda a, p, n, t, r: naive(a, p, n, t, r, **kw), [a, p, n], [_temps(True)])
