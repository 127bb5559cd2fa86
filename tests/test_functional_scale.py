"""Property test: every function of ``contrastive.functional`` is exact over its dtype's range.

Inputs at unit scale are multiplied by ``s`` (rows, and the maps ``M`` / ``A``), rounded to
the dtype under test, and the result is compared with float64 on the *same rounded values*
brought back to unit scale: the maths says a cosine or a normalised loss does not change
(degree 0) and its gradient scales as 1/s, while the margin loss with margin m s scales as
s^2 and its gradient as s. Where the exact answer does not fit the dtype (the margin loss of
float32 rows at 1e20: 1e40), the function must refuse with a ValueError that says it
overflows. Scales: 1e-30 .. 1e30 for float64, float32 and bfloat16 (float32's exponent
range), 1e-4 .. 1e4 for float16 (normal range 6e-5 .. 65504), and float64's whole range
(1e-300 .. 1e300). Results below the dtype's smallest normal may round to subnormals or 0
(an absolute floor of one subnormal step), and a gradient too large for the dtype (float16
rows of 1e-4 have gradients near 1e5 > 65504) is not representable: those draws are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contrastive import functional

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 2e-2}
# (dtype, largest |log10 scale|, id)
RANGES = [
    (torch.float64, 30, "float64"),
    (torch.float64, 300, "float64-full"),
    (torch.float32, 30, "float32"),
    (torch.bfloat16, 30, "bfloat16"),
    (torch.float16, 4, "float16"),
]


@dataclass
class Case:
    """fn(**inputs) -> per-item values; which inputs scale; the homogeneity degrees."""

    make: Callable[[np.random.Generator], dict[str, np.ndarray]]
    call: Callable[..., torch.Tensor]
    value_degree: int = 0  # f(s x) = s^k f(x)
    grad_degree: int = -1  # grad f(s x) = s^(k-1) grad f(x)
    fixed: tuple[str, ...] = field(default_factory=tuple)  # inputs that are not scaled


def _spd(rng, d):
    R = rng.normal(size=(d, d))
    S = R @ R.T + np.eye(d)
    return (S + S.T) / 2  # exactly symmetric


def _rows(rng, n=6, d=4):
    return rng.normal(size=(n, d))


CASES: dict[str, Case] = {
    "cosine_similarity": Case(
        lambda r: {"x": _rows(r), "y": _rows(r)}, lambda x, y: functional.cosine_similarity(x, y)
    ),
    "cosine_similarity(M)": Case(
        lambda r: {"x": _rows(r), "y": _rows(r), "M": r.normal(size=(3, 4))},
        lambda x, y, M: functional.cosine_similarity(x, y, M=M),
    ),
    "cosine_similarity(A full)": Case(
        lambda r: {"x": _rows(r), "y": _rows(r), "A": _spd(r, 4)},
        lambda x, y, A: functional.cosine_similarity(x, y, A=A),
    ),
    "cosine_similarity(A packed)": Case(
        lambda r: {"x": _rows(r), "y": _rows(r), "a": _spd(r, 4)[np.triu_indices(4)]},
        lambda x, y, a: functional.cosine_similarity(x, y, A=a),
    ),
    # margin m s with rows s: L(s u, s v; s m) = s^2 L(u, v; m)
    "contrastive_loss": Case(
        lambda r: {
            "u": _rows(r),
            "v": _rows(r) * 0.5,
            "margin": np.array(2.0),
            "y": np.array([0.0, 1.0, 0.3, 0.0, 1.0, 0.7]),
        },
        lambda u, v, margin, y: functional.contrastive_loss(u, v, y, margin=float(margin), reduction="none"),
        value_degree=2,
        grad_degree=1,
        fixed=("y",),
    ),
    "info_nce": Case(
        lambda r: {"z1": _rows(r), "z2": _rows(r)},
        lambda z1, z2: functional.info_nce(z1, z2, 0.5, reduction="none"),
    ),
    "nt_xent": Case(
        lambda r: {"z": _rows(r)}, lambda z: functional.nt_xent(z, 0.5, exclude_self=False, reduction="none")
    ),
    "clip_loss": Case(
        lambda r: {"a": _rows(r), "b": _rows(r)},
        lambda a, b: functional.clip_loss(a, b, 0.3, reduction="none"),
    ),
    "info_nce(decoupled)": Case(
        lambda r: {"z1": _rows(r), "z2": _rows(r)},
        lambda z1, z2: functional.info_nce(z1, z2, 0.5, decoupled=True, reduction="none"),
    ),
    "supcon_loss": Case(
        lambda r: {"z": _rows(r), "labels": np.array([0, 1, 0, 2, 1, 0])},
        lambda z, labels: functional.supcon_loss(z, labels.long(), 0.5, reduction="none"),
        fixed=("labels",),
    ),
    "retrieval_loss": Case(
        lambda r: {"q": _rows(r, 3), "p": _rows(r, 3), "n": r.normal(size=(3, 2, 4))},
        lambda q, p, n: functional.retrieval_loss(
            q,
            p,
            n,
            0.5,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
            reduction="none",
        ),
    ),
    "siglip_loss": Case(
        lambda r: {"a": _rows(r), "b": _rows(r)},
        lambda a, b: functional.siglip_loss(a, b, 0.5, -1.0, reduction="none"),
    ),
}


def _run(case: Case, inputs: dict[str, torch.Tensor], w: torch.Tensor):
    """Values and the gradients of sum(w * values) (grad_output != 1) with respect to the
    scaled inputs."""
    leaves = {
        k: (t.detach().clone().requires_grad_(k not in case.fixed and t.dim() > 0)) for k, t in inputs.items()
    }
    out = case.call(**leaves)
    (out.double() * w).sum().backward()
    grads = {k: t.grad for k, t in leaves.items() if t.requires_grad}
    return out.detach(), grads


def _rel_err(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> float:
    """max |got - want| / max |want|, less one subnormal step of ``dtype`` (underflow)."""
    got, want = got.double(), want.double()
    fi = torch.finfo(dtype)
    diff = max(float((got - want).abs().max()) - fi.tiny * fi.eps, 0.0)
    scale = float(want.abs().max())
    return diff / (scale if scale > 0 else 1.0)


def _times_power(t: torch.Tensor, s: float, k: int) -> torch.Tensor:
    """t s^k one factor at a time (0 stays 0 where s^k alone would overflow)."""
    for _ in range(abs(k)):
        t = t * s if k > 0 else t / s
    return t


def check_scale(name: str, dtype: torch.dtype, exponent: float, seed: int) -> None:
    case = CASES[name]
    rng = np.random.default_rng(seed)
    unit = case.make(rng)
    s = 10.0**exponent
    scaled, reference_in = {}, {}
    for k, a in unit.items():
        t = torch.tensor(a, dtype=torch.float64)
        if k in case.fixed:
            scaled[k] = reference_in[k] = t
            continue
        ts = (t * s).to(dtype)  # the input under test
        assume(bool(torch.isfinite(ts).all()))
        if ts.dim() > 1:
            assume(bool((ts != 0).any(dim=-1).all()))  # every row keeps a direction
        scaled[k] = ts
        reference_in[k] = ts.double() / s  # same values, unit scale
    n_out = case.call(**{k: v.detach() for k, v in reference_in.items()}).numel()
    w = torch.tensor(rng.uniform(0.5, 1.5, size=n_out))
    want_val, want_grads = _run(case, reference_in, w)
    want_val = _times_power(want_val, s, case.value_degree)  # may be inf
    biggest = float(want_val.abs().max())
    limit = torch.finfo(dtype).max
    assume(not 0.5 * limit < biggest < 2 * limit)  # rounding decides: skip
    if biggest >= limit:
        with pytest.raises(ValueError, match="overflows"):
            case.call(**scaled)
        return
    want_grads = {k: _times_power(g, s, case.value_degree - 1) for k, g in want_grads.items()}
    assume(all(float(g.abs().max()) < 0.5 * limit for g in want_grads.values()))
    got_val, got_grads = _run(case, scaled, w)
    assert got_val.dtype == dtype
    tol = TOL[dtype]
    err = _rel_err(got_val, want_val, dtype)
    assert err <= tol, f"{name} {dtype} s=1e{exponent:.2f}: value rel err {err:.2e}"
    for k, g in want_grads.items():
        assert got_grads[k].dtype == dtype
        err = _rel_err(got_grads[k], g, dtype)
        assert err <= tol, f"{name} {dtype} s=1e{exponent:.2f}: grad {k} rel err {err:.2e}"


def _params():
    for name in CASES:
        for dtype, e, label in RANGES:
            yield pytest.param(name, dtype, e, id=f"{name}-{label}")


@pytest.mark.parametrize("name, dtype, e", list(_params()))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_scale_invariance(name, dtype, e, data):
    exponent = data.draw(st.one_of(st.sampled_from([-e, e]), st.floats(-e, e)), label="log10 scale")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    check_scale(name, dtype, exponent, seed)


@pytest.mark.parametrize("exponent", [-20, 19, 20])
def test_cosine_issue_scales(exponent):
    """The issue's cases: rows by 1e-20 gave inf, by 1e19 -0.0, by 1e20 NaN."""
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    s = 10.0**exponent
    torch.testing.assert_close(
        functional.cosine_similarity(x * s, y * s), functional.cosine_similarity(x, y), rtol=1e-5, atol=1e-6
    )


def test_contrastive_loss_issue_distances():
    """D = 2e19 gave inf and D = 3e19 NaN in float32: the loss is 2e38 (fits) and 0 (y = 0)."""
    u = torch.zeros(2, 3)
    v = torch.tensor([[2e19, 0.0, 0.0], [3e19, 0.0, 0.0]], requires_grad=True)
    out = functional.contrastive_loss(u, v, torch.tensor([1.0, 0.0]), reduction="none")
    assert out.tolist() == [pytest.approx(2e38, rel=1e-6), 0.0]
    out.sum().backward()
    assert torch.isfinite(v.grad).all() and v.grad[1].abs().max() == 0
    with pytest.raises(ValueError, match="overflows float32.*float64"):
        functional.contrastive_loss(u, v.detach(), torch.tensor([1.0, 1.0]), reduction="none")  # 4.5e38
    assert functional.contrastive_loss(
        u.double(), v.detach().double(), torch.tensor([1.0, 1.0]).double(), reduction="sum"
    ).item() == pytest.approx(2e38 + 4.5e38)


def test_tiny_rows_are_directions():
    """Rows of norm ~1e-25 are valid directions; only exact zeros are refused."""
    x = torch.randn(4, 3) * 1e-25
    torch.testing.assert_close(
        functional.cosine_similarity(x, x.flip(0)), functional.cosine_similarity(x * 1e25, x.flip(0) * 1e25)
    )
    z = torch.randn(4, 3)
    z[2] = 0
    with pytest.raises(ValueError, match="zero-norm row \\(row 2\\)"):
        functional.nt_xent(z)
    with pytest.raises(ValueError, match="zero vector"):
        functional.cosine_similarity(z, torch.randn(4, 3), M=torch.randn(2, 3))


def test_nonsymmetric_A_refused():
    A = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="not symmetric.*\\(A \\+ A.T\\) / 2"):
        functional.cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), A=A)
    # rounding-level asymmetry (A = M^T M computed in float32) is accepted
    M = torch.randn(5, 5)
    assert torch.isfinite(functional.cosine_similarity(torch.randn(3, 5), torch.randn(3, 5), A=M.T @ M)).all()
