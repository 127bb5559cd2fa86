"""contrastive.integrations.open_clip against the released open-clip-torch 3.3.0's own loss.py.

open_clip's loss.py is loaded by file path from the installed package (importing the package
would need torchvision; ``make install`` installs it with ``--no-deps``). Both losses run on
the same random features, scale and bias: the loss, the feature gradients and the
``logit_scale`` / ``logit_bias`` gradients agree to 1e-10 in float64 and 1e-5 in float32, on
one process and on 2 gloo ranks for every ``(local_loss, gather_with_grad)`` pair of
``ClipLoss`` and every ``dist_impl`` of ``SigLipLoss``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from contrastive.integrations import open_clip as ours
from tests.test_distributed import _err, check_all_ok, spawn


def _loss_py() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "loss.py"
    return path if path.is_file() else None


def load_open_clip_loss():
    """open_clip/loss.py as a module of its own (its imports: torch only)."""
    path = _loss_py()
    spec = importlib.util.spec_from_file_location("_open_clip_loss_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pytestmark = pytest.mark.skipif(
    _loss_py() is None,
    reason="open-clip-torch is not installed (make install: pip install --no-deps open-clip-torch==3.3.0)",
)

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _inputs(n, d, dtype, seed, unit=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = x + torch.randn(n, d, generator=g, dtype=torch.float64)
    if unit:
        x, t = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(t, dim=1)
    scale = float(torch.empty(()).uniform_(1.0, 100.0, generator=g))
    bias = float(torch.empty(()).uniform_(-12.0, 2.0, generator=g))
    return x.to(dtype), t.to(dtype), scale, bias


def _run(loss, x, t, scale, bias, dtype, w=2.5, **kw):
    """loss(x, t, scale, bias) with every input a leaf that requires grad; w * loss back-propagated."""
    xs, ts = x.clone().requires_grad_(), t.clone().requires_grad_()
    s = torch.tensor(scale, dtype=dtype, requires_grad=True)
    b = None if bias is None else torch.tensor(bias, dtype=dtype, requires_grad=True)
    out = loss(xs, ts, s, b, **kw)
    val = out["contrastive_loss"] if isinstance(out, dict) else out
    (w * val).backward()
    return val.detach(), xs.grad, ts.grad, s.grad, None if b is None else b.grad


def _close(a, b, tol):
    for u, v in zip(a, b):
        assert (u is None) == (v is None)
        if u is not None:
            assert _err(u, v) <= tol, (_err(u, v), u, v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n, d, unit", [(1, 3, True), (7, 5, True), (33, 8, False), (600, 16, True)])
def test_clip_loss_matches_open_clip(dtype, n, d, unit):
    oc = load_open_clip_loss()
    x, t, scale, bias = _inputs(n, d, dtype, seed=n, unit=unit)
    for b in (None, bias):
        want = _run(oc.ClipLoss(), x, t, scale, b, dtype)
        got = _run(ours.ClipLoss(), x, t, scale, b, dtype)
        _close(got, want, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n, d, unit", [(1, 3, True), (7, 5, True), (33, 8, False), (600, 16, True)])
def test_siglip_loss_matches_open_clip(dtype, n, d, unit):
    oc = load_open_clip_loss()
    x, t, scale, bias = _inputs(n, d, dtype, seed=10 + n, unit=unit)
    for b in (bias, None):
        want = _run(oc.SigLipLoss(), x, t, scale, b, dtype)
        got = _run(ours.SigLipLoss(), x, t, scale, b, dtype)
        _close(got, want, TOL[dtype])


def test_output_dict_and_constructor_defaults_match_open_clip():
    import inspect

    oc = load_open_clip_loss()
    x, t, scale, bias = _inputs(5, 4, torch.float64, seed=3)
    for theirs, mine in ((oc.ClipLoss, ours.ClipLoss), (oc.SigLipLoss, ours.SigLipLoss)):
        sig_t, sig_m = inspect.signature(theirs.__init__), inspect.signature(mine.__init__)
        assert [(p.name, p.default) for p in sig_t.parameters.values()] == [
            (p.name, p.default) for p in sig_m.parameters.values()
        ]
        fwd_t, fwd_m = inspect.signature(theirs.forward), inspect.signature(mine.forward)
        assert [(p.name, p.default) for p in fwd_t.parameters.values()] == [
            (p.name, p.default) for p in fwd_m.parameters.values()
        ]
        a = theirs()(x, t, torch.tensor(scale), torch.tensor(bias), output_dict=True)
        b = mine()(x, t, torch.tensor(scale), torch.tensor(bias), output_dict=True)
        assert a.keys() == b.keys() == {"contrastive_loss"}
        assert _err(b["contrastive_loss"], a["contrastive_loss"]) <= 1e-10
    assert ours.SigLipLoss().dist_impl == oc.SigLipLoss().dist_impl == "bidir"


def test_world_size_one_ignores_the_distributed_flags():
    oc = load_open_clip_loss()
    x, t, scale, _ = _inputs(6, 4, torch.float64, seed=4)
    for local_loss in (False, True):
        for gwg in (False, True):
            want = _run(
                oc.ClipLoss(local_loss=local_loss, gather_with_grad=gwg), x, t, scale, None, torch.float64
            )
            got = _run(
                ours.ClipLoss(local_loss=local_loss, gather_with_grad=gwg), x, t, scale, None, torch.float64
            )
            _close(got, want, 1e-10)


def test_bad_input_is_refused():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="use_horovod"):
        ours.ClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="dist_impl"):
        ours.SigLipLoss(dist_impl="ring")
    with pytest.raises(ValueError, match="logit_scale must be positive"):
        ours.ClipLoss()(x, x, torch.tensor(0.0))
    with pytest.raises(ValueError, match="logit_scale must be a float or a floating scalar"):
        ours.ClipLoss()(x, x, torch.ones(2))
    with pytest.raises(ValueError, match="logit_bias must be finite"):
        ours.SigLipLoss()(x, x, 10.0, float("nan"))
    with pytest.raises(ValueError, match="same shape|shape"):
        ours.ClipLoss()(x, torch.randn(5, 3), 10.0)
    with pytest.raises(TypeError, match="one dtype"):
        ours.SigLipLoss()(x, x.double(), 10.0, -10.0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        ours.ClipLoss(rank=0, world_size=2)(x, x, 10.0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        ours.SigLipLoss(rank=0, world_size=2)(x, x, 10.0, -10.0)


# ----------------------------------------------------------------------------- 2 gloo ranks
def _rank_case(kind, kwargs, dtype, rank, world):
    """On each rank: open_clip's loss and ours on the rank's share of one global batch."""
    oc = load_open_clip_loss()
    n, d = 5, 4  # rows per rank (open_clip needs equal sizes)
    x, t, scale, bias = _inputs(n * world, d, dtype, seed=77)
    s = slice(rank * n, (rank + 1) * n)
    cls_t, cls_m = (oc.ClipLoss, ours.ClipLoss) if kind == "clip" else (oc.SigLipLoss, ours.SigLipLoss)
    want = _run(cls_t(rank=rank, world_size=world, **kwargs), x[s], t[s], scale, bias, dtype)
    got = _run(cls_m(rank=rank, world_size=world, **kwargs), x[s], t[s], scale, bias, dtype)
    names = ("loss", "image_grad", "text_grad", "scale_grad", "bias_grad")
    errors = {}
    for name, u, v in zip(names, got, want):
        errors[name] = _err(u, v) / TOL[dtype] * 1e-10  # check_all_ok's bound is 1e-10
    return errors


CLIP_COMBOS = [
    dict(local_loss=False, gather_with_grad=False),
    dict(local_loss=False, gather_with_grad=True),
    dict(local_loss=True, gather_with_grad=False),
    dict(local_loss=True, gather_with_grad=True),
]


@pytest.mark.parametrize(
    "kwargs", CLIP_COMBOS, ids=lambda k: f"local{int(k['local_loss'])}-gwg{int(k['gather_with_grad'])}"
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clip_loss_on_two_ranks_matches_open_clip(kwargs, dtype):
    out = spawn(2, functools.partial(_rank_case, "clip", kwargs, dtype))
    check_all_ok(out, 2)


@pytest.mark.parametrize("dist_impl", ["bidir", "shift", "reduce", "gather"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_siglip_loss_on_two_ranks_matches_open_clip(dist_impl, dtype):
    out = spawn(2, functools.partial(_rank_case, "siglip", dict(dist_impl=dist_impl), dtype))
    check_all_ok(out, 2)


@pytest.mark.parametrize("dist_impl", ["bidir", "shift"])
def test_siglip_neighbour_exchanges_on_three_ranks(dist_impl):
    """With 3 ranks open_clip's 'bidir' runs its two-way exchange (2 ranks only need one hop)."""
    out = spawn(3, functools.partial(_rank_case, "siglip", dict(dist_impl=dist_impl), torch.float64))
    check_all_ok(out, 3)


def test_importing_the_drop_ins_imports_no_open_clip():
    import subprocess
    import sys

    code = (
        "import sys, contrastive.integrations.open_clip as m; m.ClipLoss(); "
        "print(sorted(k for k in sys.modules if k.startswith('open_clip')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
