"""The Triton InfoNCE kernels against a float64 autograd of the dense formulas.

Testing tier 4 of DESIGN.md: on CPU the kernels run under the Triton interpreter
(``TRITON_INTERPRET=1``, set per test through ``monkeypatch`` so no other test sees it); on a
machine with CUDA the same tests also run the compiled kernels. Shapes are small but cover
the tile boundaries: N = 2, one tile, N not a multiple of the tile, several tiles, column
splits, a D that needs several K chunks and several output chunks, both exclude_self
variants, the fixed-shift and online-max paths, temperatures 0.01 to 10.
"""

import math

import pytest
import torch

pytest.importorskip("triton", minversion="3.7")

from contrastive.kernels import clip_triton, info_nce_triton  # noqa: E402
from contrastive.kernels.host import FIXED_SHIFT_MAX  # noqa: E402

from .. import oracles  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return torch.device(request.param)


def unit_rows(N, d, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(N, d, generator=g, dtype=torch.float64), dim=1)
    return x.to(dtype).to(device)


def weights(N, device, seed, shift=0.3):
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand(N, generator=g) - shift).to(device)  # mixed signs, non-uniform


def _leaf(x):
    return x.detach().double().cpu().requires_grad_()


def dense_single(z, inv_temp, exclude, w):
    """The oracle's per-row NT-Xent losses on unit rows (float64, CPU) and the autograd of
    sum_i w_i loss_i with respect to z and to inv_temp (the kernels' temperature argument)."""
    z, t = _leaf(z), torch.tensor(inv_temp, dtype=torch.float64, requires_grad=True)
    loss = oracles.nt_xent(z, 1 / t, "none", exclude_self=exclude, normalize=False)
    return (loss.detach(), *oracles.weighted_grads(loss, w.cpu(), (z, t)))


def dense_clip(a, b, inv_temp, w):
    """As :func:`dense_single` for the two-tower loss: (loss, grad_a, grad_b, grad_inv_temp)."""
    a, b, t = _leaf(a), _leaf(b), torch.tensor(inv_temp, dtype=torch.float64, requires_grad=True)
    loss = oracles.clip_loss(a, b, 1 / t, "none", normalize=False)
    return (loss.detach(), *oracles.weighted_grads(loss, w.cpu(), (a, b, t)))


def assert_close(out, ref, tol, what, atol=None):
    """max |out - ref| <= tol * max |ref| + atol (default tol / 10: covers exact zeros)."""
    assert out is not None, what
    out = out.detach().double().cpu()
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    assert torch.isfinite(out).all(), what
    err = (out - ref).abs().max().item()
    bound = tol * ref.abs().max().item() + (tol / 10 if atol is None else atol)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def check_single(z, inv_temp, exclude, w, tol, **kw):
    loss, grad, dinv = info_nce_triton(z, inv_temp, exclude, w, **kw)
    assert loss.dtype == grad.dtype == dinv.dtype == torch.float32
    assert dinv.dim() == 0 and grad.shape == z.shape
    ref_loss, ref_grad, ref_dinv = dense_single(z, inv_temp, exclude, w)
    assert_close(loss, ref_loss, tol, "loss")
    assert_close(grad, ref_grad, tol, "grad_z")
    assert_close(dinv, ref_dinv, tol, "dinv")
    return loss


def check_clip(a, b, inv_temp, w, tol, **kw):
    loss, ga, gb, dinv = clip_triton(a, b, inv_temp, w, **kw)
    ref_loss, ref_ga, ref_gb, ref_dinv = dense_clip(a, b, inv_temp, w)
    assert_close(loss, ref_loss, tol, "loss")
    assert_close(ga, ref_ga, tol, "grad_a")
    assert_close(gb, ref_gb, tol, "grad_b")
    assert_close(dinv, ref_dinv, tol, "dinv")


# N = 2: a single pair; 16: one interpreter tile; 34, 50: a partial last tile; 64: four full tiles.
# temperature 0.01 takes the online-max path (inv_temp 100 > FIXED_SHIFT_MAX).
@pytest.mark.parametrize(
    "N, exclude, tau",
    [
        (2, True, 0.5),
        (2, False, 0.5),
        (16, True, 0.07),
        (34, False, 0.1),
        (50, True, 0.01),
        (50, False, 0.01),
        (64, False, 1.0),
        (50, True, 10.0),
    ],
)
def test_single_tower_matches_float64_autograd(device, N, exclude, tau):
    z = unit_rows(N, 24, torch.float32, device, seed=N)
    w = weights(N, device, seed=N)
    loss = check_single(z, 1 / tau, exclude, w, TOL[torch.float32])
    loss2, grad2, dinv2 = info_nce_triton(z, 1 / tau, exclude, w, compute_grad=False)
    assert grad2 is None and dinv2 is None
    torch.testing.assert_close(loss2, loss)


# Launch variants at one shape: forced paths, the atomic-free pass 1, column splits (several
# programs per row block, gradient slices summed), rectangular tiles, and d = 40 with 16-wide
# K and output chunks (K loop, three D chunks, no Y reuse).
@pytest.mark.parametrize(
    "kw",
    [
        dict(path="fixed"),
        dict(path="online"),
        dict(_pass1="rows"),
        dict(_split=3),
        dict(_split=3, path="online"),
        dict(_pass1="rows", _split=2),
        dict(_tile=(32, 16, 16, 16)),
        dict(_tile=(16, 32, 16, 16), path="online"),
        dict(block_size=32),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_single_tower_launch_variants(device, kw):
    N, d = 50, 40
    z = unit_rows(N, d, torch.float32, device, seed=7)
    check_single(z, 1 / 0.3, True, weights(N, device, seed=7), TOL[torch.float32], **kw)


def test_fixed_and_online_paths_agree_on_both_variants(device):
    z = unit_rows(34, 16, torch.float32, device, seed=3)
    for exclude in (True, False):
        a = info_nce_triton(z, 20.0, exclude, path="fixed")
        b = info_nce_triton(z, 20.0, exclude, path="online")
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert FIXED_SHIFT_MAX < 100  # tau = 0.01 is online


def test_deterministic_mode_takes_the_atomic_free_pass(device):
    z = unit_rows(50, 16, torch.float32, device, seed=5)
    w = weights(50, device, seed=5)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = info_nce_triton(z, 2.0, True, w)
        second = info_nce_triton(z, 2.0, True, w)
    finally:
        torch.use_deterministic_algorithms(prev)
    for x, y in zip(first, second):
        assert torch.equal(x, y)
    check_single(z, 2.0, True, w, TOL[torch.float32])


def test_default_weights_are_the_mean_and_match_the_dense_op(device):
    from contrastive.ops.info_nce_dense import DenseInfoNCEFn

    N = 34
    z = unit_rows(N, 12, torch.float32, device, seed=11)
    loss, grad, _ = info_nce_triton(z, 1 / 0.2, True)
    zz = z.detach().cpu().double().requires_grad_()
    per_row = DenseInfoNCEFn.apply(zz, 0.2, True, False)
    per_row.mean().backward()
    assert_close(loss, per_row.detach(), 1e-5, "loss vs DenseInfoNCEFn")
    assert_close(grad, zz.grad, 1e-5, "grad vs DenseInfoNCEFn")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_inputs(device, dtype):
    N = 48
    z = unit_rows(N, 24, dtype, device, seed=2)
    w = weights(N, device, seed=2, shift=0.0) * 100  # large weights: no fp16 overflow
    check_single(z, 1 / 0.1, True, w, TOL[dtype])
    a, b = unit_rows(N, 24, dtype, device, seed=3), unit_rows(N, 24, dtype, device, seed=4)
    check_clip(a, b, 1 / 0.1, w, TOL[dtype])


@pytest.mark.parametrize(
    "N, tau, kw",
    [
        (1, 1.0, {}),
        (2, 0.5, {}),
        (50, 0.01, {}),
        (50, 0.3, {}),
        (33, 10.0, {}),
        (50, 0.3, dict(_split=3)),
        (50, 0.3, dict(_pass1="rows")),
        (50, 0.05, dict(path="online", _split=2)),
        (50, 0.3, dict(_tile=(32, 16, 16, 16))),
    ],
)
def test_clip_matches_float64_autograd(device, N, tau, kw):
    d = 40 if "_tile" in kw else 20
    a, b = unit_rows(N, d, torch.float32, device, seed=N), unit_rows(N, d, torch.float32, device, seed=N + 50)
    check_clip(a, b, 1 / tau, weights(N, device, seed=N), TOL[torch.float32], **kw)


def test_clip_default_weights_and_no_grad(device):
    a, b = unit_rows(20, 8, torch.float32, device, seed=1), unit_rows(20, 8, torch.float32, device, seed=2)
    loss, ga, gb, dinv = clip_triton(a, b, 2.0, compute_grad=False)
    assert ga is None and gb is None and dinv is None
    ref = dense_clip(a, b, 2.0, torch.full((20,), 1 / 20))
    assert_close(loss, ref[0], 1e-5, "loss")
    # identical towers at a low temperature (online path): losses near 0 are differences of
    # logits near inv_temp = 50, so their float32 error scales with inv_temp, not with them
    loss, *_ = clip_triton(a, a, 50.0, compute_grad=False)
    ref = dense_clip(a, a, 50.0, torch.full((20,), 1 / 20))[0]
    assert_close(loss, ref, 1e-5, "loss, a = b", atol=50 * 1e-6)


@pytest.mark.parametrize("path", [None, "online"])
def test_rows_of_any_norm(device, path):
    # the fixed shift is inv_temp max|z|^2, so rows longer than 1 neither overflow nor lose exactness
    N = 34
    z = unit_rows(N, 12, torch.float32, device, seed=9) * torch.linspace(0.5, 2.0, N, device=device)[:, None]
    check_single(z, 4.0, True, weights(N, device, seed=9), TOL[torch.float32], path=path)
    a, b = z, unit_rows(N, 12, torch.float32, device, seed=10) * 1.5
    check_clip(a, b, 4.0, weights(N, device, seed=10), TOL[torch.float32], path=path)


def test_saved_lse_skips_pass_one(device):
    # reduction='none': forward keeps lse, backward brings the weights
    N = 34
    z = unit_rows(N, 12, torch.float32, device, seed=12)
    w = weights(N, device, seed=12)
    loss, _, _, lse = info_nce_triton(z, 5.0, True, compute_grad=False, return_lse=True)
    again = info_nce_triton(z, 5.0, True, w, lse=lse)
    for x, y in zip(again, info_nce_triton(z, 5.0, True, w)):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    a, b = z, unit_rows(N, 12, torch.float32, device, seed=13)
    out = clip_triton(a, b, 5.0, compute_grad=False, return_lse=True)
    again = clip_triton(a, b, 5.0, w, lse=out[-1])
    for x, y in zip(again, clip_triton(a, b, 5.0, w)):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lse"):
        info_nce_triton(z, 5.0, True, lse=lse[:3])


def test_equal_embeddings_give_log_n_minus_one(device):
    N = 18
    z = torch.zeros(N, 8, device=device)
    z[:, 0] = 1
    loss, grad, _ = info_nce_triton(z, 2.0, True)
    torch.testing.assert_close(loss.cpu(), torch.full((N,), math.log(N - 1)), rtol=1e-6, atol=1e-6)


def test_bad_input_raises(device, monkeypatch):
    z = unit_rows(8, 4, torch.float32, device, seed=0)
    with pytest.raises(ValueError, match="even"):
        info_nce_triton(z[:7], 2.0, True)
    with pytest.raises(TypeError, match="float64"):
        info_nce_triton(z.double(), 2.0, True)
    with pytest.raises(ValueError, match="inv_temp"):
        info_nce_triton(z, 0.0, True)
    with pytest.raises(ValueError, match="weights"):
        info_nce_triton(z, 2.0, True, torch.ones(3, device=device))
    with pytest.raises(ValueError, match="power of two"):
        info_nce_triton(z, 2.0, True, block_size=24)
    with pytest.raises(ValueError, match="same shape"):
        clip_triton(z, z[:6], 2.0)
    with pytest.raises(ValueError, match="path"):
        info_nce_triton(z, 2.0, True, path="fast")
    if device.type == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            info_nce_triton(z, 2.0, True)
