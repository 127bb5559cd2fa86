"""retrieval_loss's issue-25 features (GTE directions, hardness, HCL, GIST guide masks) and HCL on
info_nce / clip_loss: the blockwise engine against the dense float64 oracles at many tile
boundaries, every reduction, a learnable temperature, the online-max path, float32, the
Module forms, and the bad arguments. Equality with sentence-transformers itself is in
tests/ops/test_retrieval_st.py."""

import pytest
import torch

import contrastive as C

from .. import oracles
from .engine_check import assert_matches

ALL4 = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
B, K, D, G = 7, 2, 5, 3

CASES = [
    dict(directions=("query_to_doc", "doc_to_query")),
    dict(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"),
    dict(directions=("query_to_doc", "query_to_query")),
    dict(directions=("query_to_doc", "doc_to_doc")),
    dict(directions=ALL4),
    *[
        dict(hardness_mode=m, hardness_strength=2.0)
        for m in ("in_batch_negatives", "hard_negatives", "all_negatives")
    ],
    dict(hardness_mode="all_negatives", hardness_strength=1.5, directions=ALL4),
    dict(
        hardness_mode="in_batch_negatives",
        hardness_strength=0.7,
        directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
    ),
    dict(hcl_beta=0.0),
    dict(hcl_beta=1.0),
    dict(hcl_beta=0.5, hcl_tau_plus=0.1),
    dict(guide="G"),
    dict(guide="G", guide_margin=0.1, contrast_anchors=True, contrast_positives=True),
    dict(guide="G", guide_margin=0.2, guide_margin_strategy="relative", contrast_anchors=True),
    dict(
        guide="G",
        guide_margin_strategy="relative",
        contrast_positives=True,
        hardness_mode="all_negatives",
        hardness_strength=1.0,
    ),
]


def data(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)

    a, p, ga, gp = r(B, D), r(B, D), r(B, G), r(B, G)
    p[3], gp[3] = p[1], gp[1]  # a duplicate positive: its guide similarity ties the threshold
    negs = {None: (None, None), "hard": (r(B, K, D), r(B, K, G)), "shared": (r(5, D), r(5, G))}
    return a, p, ga, gp, negs


IDS = torch.tensor([0, 1, 2, 1, 3, 4, 0])


def _guide(kw, ga, gp, gn):
    kw = dict(kw)
    if kw.get("guide") == "G":
        kw["guide"] = (ga, gp) if gn is None else (ga, gp, gn)
    return kw


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("neg", [None, "hard", "shared"])
@pytest.mark.parametrize("bs, temperature", [(3, 0.3), (2, 0.07), (512, 1.5), (3, 0.001)])
def test_engine_equals_oracle_float64(case, neg, bs, temperature):
    a, p, ga, gp, negs = data(case)
    n, gn = negs[neg]
    kw = _guide(CASES[case], ga, gp, gn)
    if "hcl_beta" in kw and temperature < 0.005:
        temperature = 0.005  # the reference formula overflows exp(1/tau) below; still the online-max path
    t = torch.tensor(temperature, dtype=torch.float64)  # learnable: its gradient is checked
    for pid in (None, IDS):

        def fast(a_, p_, n_, t_, r, pid=pid):
            return C.retrieval_loss(a_, p_, n_, t_, positive_ids=pid, reduction=r, block_size=bs, **kw)

        def naive(a_, p_, n_, t_, r, pid=pid):
            return oracles.retrieval_features(a_, p_, n_, t_, r, ids=pid, **kw)

        assert_matches(fast, naive, [a, p, n], [t])


@pytest.mark.parametrize("case", [0, 4, 7, 11, 14])
def test_float32_close_to_float64_oracle(case):
    a, p, ga, gp, negs = data(case)
    n, gn = negs["hard"]
    kw = _guide(CASES[case], ga, gp, gn)
    ins = [x.float().requires_grad_(True) for x in (a, p, n)]
    out = C.retrieval_loss(
        *ins,
        0.05,
        block_size=3,
        **{k: (tuple(g.float() for g in v) if k == "guide" else v) for k, v in kw.items()},
    )
    out.backward()
    ref_in = [x.clone().requires_grad_(True) for x in (a, p, n)]
    ref = oracles.retrieval_features(*ref_in, 0.05, **kw)
    ref.backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    for x, y in zip(ins, ref_in):
        torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-4, atol=1e-5)


def test_negatives_without_grad_get_none():
    a, p, _, _, negs = data(1)
    n = negs["hard"][0]
    a1 = a.clone().requires_grad_(True)
    C.retrieval_loss(a1, p, n, 0.1, directions=ALL4, block_size=3).backward()
    a2 = a.clone().requires_grad_(True)
    oracles.retrieval_features(a2, p, n, 0.1, directions=ALL4).backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-10, atol=1e-12)


def test_guide_ties_are_kept_and_margin_drops_them():
    """Row 1's positive has a duplicate (row 3): equal guide embeddings tie the threshold, so the
    duplicate stays a candidate at margin 0 (strict >) and is dropped at any positive margin."""
    a, p, ga, gp, _ = data(3)
    base = C.retrieval_loss(a, p, None, 0.1, reduction="none")
    tied = C.retrieval_loss(a, p, None, 0.1, guide=(ga, gp), reduction="none")
    ref = oracles.retrieval_features(a, p, None, 0.1, "none", guide=(ga, gp))
    torch.testing.assert_close(tied, ref, rtol=1e-12, atol=0)
    ids = torch.arange(B)
    ids[3] = 1
    dropped = C.retrieval_loss(a, p, None, 0.1, positive_ids=ids, reduction="none")
    assert not torch.allclose(tied[1], dropped[1])  # the tie kept p_3 in row 1
    assert tied[1] <= base[1]  # only candidates above the threshold could have gone


@pytest.mark.parametrize("beta, tau_plus", [(0.0, 0.0), (1.0, 0.0), (0.5, 0.1), (2.0, 0.9)])
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("bs, temperature", [(3, 0.5), (512, 0.2), (2, 0.005)])
def test_hcl_info_nce_equals_reference(beta, tau_plus, exclude_self, bs, temperature):
    g = torch.Generator().manual_seed(5)
    z1, z2 = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    t = torch.tensor(temperature, dtype=torch.float64)

    def fast(x, y, t_, r):
        return C.info_nce(
            x,
            y,
            t_,
            exclude_self=exclude_self,
            reduction=r,
            block_size=bs,
            hcl_beta=beta,
            hcl_tau_plus=tau_plus,
        )

    def naive(x, y, t_, r):
        return oracles.hcl_info_nce(x, y, t_, r, beta=beta, tau_plus=tau_plus, exclude_self=exclude_self)

    assert_matches(fast, naive, [z1, z2], [t])


@pytest.mark.parametrize("beta, tau_plus", [(0.0, 0.0), (1.0, 0.0), (0.5, 0.1), (2.0, 0.9)])
@pytest.mark.parametrize("bs, temperature", [(3, 0.5), (2, 0.005)])
def test_hcl_clip_equals_oracle(beta, tau_plus, bs, temperature):
    g = torch.Generator().manual_seed(6)
    a, b = (
        torch.randn(7, 4, generator=g, dtype=torch.float64),
        torch.randn(7, 4, generator=g, dtype=torch.float64),
    )
    t = torch.tensor(temperature, dtype=torch.float64)
    assert_matches(
        lambda x, y, t_, r: C.clip_loss(
            x, y, t_, reduction=r, block_size=bs, hcl_beta=beta, hcl_tau_plus=tau_plus
        ),
        lambda x, y, t_, r: oracles.hcl_clip(x, y, t_, r, beta=beta, tau_plus=tau_plus),
        [a, b],
        [t],
    )


def test_hcl_clamp_binds_and_its_temperature_term_counts():
    """Close positives and tau+ = 0.9 drive the debiased sum below the floor n e^{-1/tau} for
    some rows (not all): the temperature gradient then carries the floor's derivative."""
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    scale = torch.tensor([0.1, 0.1, 3.0, 3.0, 3.0], dtype=torch.float64)[:, None]  # close and far positives
    z2 = z1 + scale * torch.randn(5, 4, generator=g, dtype=torch.float64)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=-1)
    L = z @ z.T / 0.5
    pidx = oracles.positive_index(10)
    pos = L[torch.arange(10), pidx]
    mask = torch.ones(10, 10, dtype=torch.bool)
    mask[torch.arange(10), pidx] = False
    mask.fill_diagonal_(False)
    neg = torch.exp(L).masked_fill(~mask, 0)
    imp = torch.exp(2.0 * L).masked_fill(~mask, 0)
    raw = (-0.9 * 8 * pos.exp() + (imp * neg).sum(1) / (imp.sum(1) / 8)) / 0.1
    binds = raw < 8 * torch.exp(torch.tensor(-2.0, dtype=torch.float64))
    assert bool(binds.any()) and not bool(binds.all())
    t = torch.tensor(0.5, dtype=torch.float64)
    assert_matches(
        lambda x, y, t_, r: C.info_nce(x, y, t_, reduction=r, block_size=3, hcl_beta=2.0, hcl_tau_plus=0.9),
        lambda x, y, t_, r: oracles.hcl_info_nce(x, y, t_, r, beta=2.0, tau_plus=0.9),
        [z1, z2],
        [t],
    )


def test_module_forms_take_the_arguments():
    a, p, ga, gp, negs = data(2)
    n, gn = negs["hard"]
    crit = C.RetrievalLoss(
        0.1, learn_temperature=True, directions=ALL4, hardness_mode="all_negatives", hardness_strength=1.0
    )
    want = C.retrieval_loss(
        a, p, n, 0.1, directions=ALL4, hardness_mode="all_negatives", hardness_strength=1.0
    )
    torch.testing.assert_close(crit(a, p, n).double(), want, rtol=1e-6, atol=0)
    crit.log_temperature.grad = None
    crit(a, p, n).backward()
    assert crit.log_temperature.grad is not None
    gist = C.RetrievalLoss(0.1, guide_margin=0.1, contrast_anchors=True)
    want = C.retrieval_loss(a, p, n, 0.1, guide=(ga, gp, gn), guide_margin=0.1, contrast_anchors=True)
    torch.testing.assert_close(gist(a, p, n, guide=(ga, gp, gn)).double(), want, rtol=1e-6, atol=0)
    hcl = C.RetrievalLoss(0.1, hcl_beta=1.0)
    torch.testing.assert_close(
        hcl(a, p, n).double(), C.retrieval_loss(a, p, n, 0.1, hcl_beta=1.0), rtol=1e-6, atol=0
    )
    z1, z2 = a, p
    torch.testing.assert_close(
        C.InfoNCELoss(0.3, hcl_beta=0.5, hcl_tau_plus=0.1)(z1, z2).double(),
        C.info_nce(z1, z2, 0.3, hcl_beta=0.5, hcl_tau_plus=0.1),
        rtol=1e-6,
        atol=0,
    )
    clip = C.ClipLoss(0.07, hcl_beta=1.0)
    out = clip(z1, z2)
    torch.testing.assert_close(out.double(), C.clip_loss(z1, z2, 0.07, hcl_beta=1.0), rtol=1e-6, atol=0)
    out.backward()
    assert clip.logit_scale.grad is not None


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(directions=()), ValueError, "directions is empty"),
        (dict(directions=("doc_to_query",)), ValueError, "must include 'query_to_doc'"),
        (dict(directions=("query_to_doc", "sideways")), ValueError, "unknown names"),
        (
            dict(directions=("query_to_doc", "query_to_query"), partition_mode="per_direction"),
            ValueError,
            "per_direction",
        ),
        (
            dict(directions=("query_to_doc", "doc_to_doc"), partition_mode="per_direction"),
            ValueError,
            "per_direction",
        ),
        (dict(partition_mode="both"), ValueError, "partition_mode must be"),
        (dict(hardness_mode="hardest"), ValueError, "hardness_mode must be one of"),
        (
            dict(hardness_mode="hard_negatives", hardness_strength=-1.0),
            ValueError,
            "hardness_strength must be >= 0",
        ),
        (dict(hcl_beta=-0.5), ValueError, "hcl_beta must be >= 0"),
        (dict(hcl_beta=1.0, hcl_tau_plus=1.0), ValueError, r"hcl_tau_plus must be in \[0, 1\)"),
        (dict(hcl_tau_plus=0.1), ValueError, "needs hcl_beta"),
        (dict(hcl_beta=1.0, directions=ALL4), ValueError, "hcl_beta .* runs with directions"),
        (dict(hcl_beta=1.0, hardness_mode="all_negatives", hardness_strength=1.0), ValueError, "without"),
        (dict(contrast_anchors=True), ValueError, "need guide"),
        (dict(guide="bad"), TypeError, "guide must be a tuple"),
        (dict(guide="short"), ValueError, "guide_positives must have B"),
        (dict(guide="noneg"), ValueError, "guide needs guide_negatives"),
        (dict(guide="badneg"), ValueError, "guide_negatives must have shape"),
        (dict(guide="ok", guide_margin_strategy="percent"), ValueError, "guide_margin_strategy"),
        (dict(guide="ok", directions=ALL4), ValueError, "guide runs with directions"),
    ],
)
def test_bad_arguments_fail_before_work(kw, err, match):
    a, p, ga, gp, negs = data(0)
    n, gn = negs["hard"]
    guides = {
        "bad": "bad",
        "short": (ga, gp[:3], gn),
        "noneg": (ga, gp),
        "badneg": (ga, gp, gn[:, :1]),
        "ok": (ga, gp, gn),
    }
    if "guide" in kw:
        kw = dict(kw, guide=guides[kw["guide"]])
    with pytest.raises(err, match=match):
        C.retrieval_loss(a, p, n, 0.1, **kw)


def test_info_nce_and_clip_refusals():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="decoupled"):
        C.info_nce(z, z, hcl_beta=1.0, decoupled=True)
    with pytest.raises(ValueError, match="torch engine only"):
        C.clip_loss(z, z, hcl_beta=1.0, backend="dense")
    with pytest.raises(ValueError, match="hcl_beta must be >= 0"):
        C.clip_loss(z, z, hcl_beta=-1.0)
    with pytest.raises(ValueError, match="at least one negative"):
        C.clip_loss(z[:1], z[:1], hcl_beta=1.0)


def test_guide_tile_keeps_exact_ties_where_a_plain_gemm_would_not():
    """A GEMM tile against the row-wise threshold differs by a rounding for many random float32
    batches, and a plain ``G > thr`` would then drop row 1's duplicate positive; the tile's
    near-threshold entries are decided by the threshold's own function, so the tie stays."""
    from contrastive.ops.retrieval_features import GuideSel, guide_threshold

    seen = 0
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        ga = torch.nn.functional.normalize(torch.randn(6, 33, generator=g), dim=-1)
        gp = torch.nn.functional.normalize(torch.randn(6, 33, generator=g), dim=-1)
        gp[4] = gp[1]
        thr = guide_threshold(ga, gp, 0.0, "absolute")
        seen += bool((ga @ gp.T)[1, 4] > thr[1])  # the plain comparison would drop it
        assert not GuideSel(ga, gp, thr, keep_diag=True)(0, 6, 0, 6)[1, 4]
        assert GuideSel(ga, gp, thr - 1e-3, keep_diag=True)(0, 6, 0, 6)[1, 4]  # any margin drops it
    assert seen > 0  # the case this test is about did occur


def test_hardness_strength_without_mode_is_ignored_as_in_sentence_transformers():
    a, p, _, _, negs = data(4)
    n = negs["hard"][0]
    torch.testing.assert_close(
        C.retrieval_loss(a, p, n, 0.1, hardness_strength=5.0), C.retrieval_loss(a, p, n, 0.1), rtol=0, atol=0
    )


@pytest.mark.parametrize("case", [1, 4, 7, 10, 12, 13])
def test_unnormalised_rows_equal_oracle(case):
    """normalize=False: raw dot products (the guide's similarity stays a cosine)."""
    a, p, ga, gp, negs = data(case)
    n, gn = negs["hard"]
    kw = _guide(CASES[case], ga, gp, gn)
    t = torch.tensor(2.0, dtype=torch.float64)
    assert_matches(
        lambda a_, p_, n_, t_, r: C.retrieval_loss(
            a_, p_, n_, t_, normalize=False, positive_ids=IDS, reduction=r, block_size=3, **kw
        ),
        lambda a_, p_, n_, t_, r: oracles.retrieval_features(
            a_, p_, n_, t_, r, ids=IDS, normalize=False, **kw
        ),
        [a, p, n],
        [t],
    )


def test_hcl_unnormalised_info_nce_and_clip_equal_oracles():
    g = torch.Generator().manual_seed(8)
    z1, z2 = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.tensor(3.0, dtype=torch.float64)
    assert_matches(
        lambda x, y, t_, r: C.info_nce(x, y, t_, normalize=False, reduction=r, block_size=3, hcl_beta=0.5),
        lambda x, y, t_, r: oracles.hcl_info_nce(x, y, t_, r, beta=0.5, normalize=False),
        [z1, z2],
        [t],
    )
    assert_matches(
        lambda x, y, t_, r: C.clip_loss(x, y, t_, normalize=False, reduction=r, block_size=3, hcl_beta=0.5),
        lambda x, y, t_, r: oracles.hcl_clip(x, y, t_, r, beta=0.5, normalize=False),
        [z1, z2],
        [t],
    )
