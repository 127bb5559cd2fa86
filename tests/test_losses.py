"""The loss modules pass their arguments through to :mod:`contrastive.functional`."""

import math

import pytest
import torch

import contrastive as C
from contrastive import InfoNCELoss


def test_info_nce_loss_passes_block_size_backend_and_check_finite():
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(12, 5, generator=g, dtype=torch.float64) for _ in range(2))
    want = C.info_nce(z1, z2, 0.5, block_size=4, backend="torch")  # 0.5: exact in the float32 buffer
    for backend in ("torch", "dense"):
        crit = InfoNCELoss(0.5, block_size=4, backend=backend)
        assert (crit.block_size, crit.backend, crit.check_finite) == (4, backend, True)
        torch.testing.assert_close(crit(z1, z2), want, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="backend"):
        InfoNCELoss(0.5, backend="cuda")(z1, z2)
    bad = z1.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="z1"):
        InfoNCELoss(0.5)(bad, z2)
    assert torch.isnan(InfoNCELoss(0.5, check_finite=False)(bad, z2))  # the check skipped


def test_clip_module_learns_temperature():
    crit = C.ClipLoss()
    assert crit.temperature.item() == pytest.approx(0.07)
    a, b = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4)
    out = crit(a, b)
    out.backward()
    assert crit.logit_scale.grad is not None and a.grad is not None
    torch.testing.assert_close(out.detach(), C.clip_loss(a.detach(), b, 0.07))
    clamped = C.ClipLoss(0.001, min_temperature=0.01)  # CLIP's clamp: logit scale <= log 100
    assert clamped.temperature.item() == pytest.approx(0.01)
    assert C.ClipLoss(0.001, min_temperature=None).temperature.item() == pytest.approx(0.001)


def test_cosine_metric_module_and_projection():
    m = C.CosineMetric(3, form="symmetric")
    with torch.no_grad():
        m.a.copy_(torch.tensor([1.0, 2.0, 0.0, 1.0, 0.0, 1.0]))  # eigenvalues -1, 1, 3
    assert torch.linalg.eigvalsh(m.matrix()).min() < 0
    m.project_psd(1e-3)
    assert torch.linalg.eigvalsh(m.matrix()).min() >= 1e-3 - 1e-6
    mm = C.CosineMetric(4, 2, form="map")
    out = mm(torch.randn(5, 4), torch.randn(5, 4))
    out.sum().backward()
    assert mm.M.grad.shape == (2, 4)
    with pytest.raises(ValueError, match="form"):
        C.CosineMetric(3, form="cone")


def test_contrastive_loss_module_reduction_is_keyword_only():
    m = C.ContrastiveLoss(2.0, reduction="sum")
    assert (m.margin, m.reduction) == (2.0, "sum")
    with pytest.raises(TypeError, match="positional"):
        C.ContrastiveLoss(2.0, "sum")


def test_cosine_metric_forward_takes_x1_x2():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    metric = C.CosineMetric(3, form="symmetric")
    torch.testing.assert_close(metric(x1, x2), metric(x1=x1, x2=x2), rtol=0, atol=0)
    with pytest.raises(TypeError, match="'x'"):
        metric(x=x1, y=x2)


def test_also_fixed_temperature_keeps_float64_precision():
    """Issue 24: a fixed temperature is not rounded to float32 (the module equals the function at 1e-12)."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 5, dtype=torch.float64)
    y = torch.arange(12) % 4
    tau = 0.07  # not a float32 number
    cases = [
        (InfoNCELoss(tau)(z1, z2), C.info_nce(z1, z2, tau)),
        (C.SupConLoss(tau)(z1, y), C.supcon_loss(z1, y, tau)),
        (C.RetrievalLoss(tau)(z1, z2), C.retrieval_loss(z1, z2, None, tau)),
        (C.ClipLoss(tau, learn_temperature=False)(z1, z2), C.clip_loss(z1, z2, tau)),
        (
            C.SigLIPLoss(math.exp(-2.5), -3.3, learn_temperature=False, learn_bias=False)(z1, z2),
            C.siglip_loss(z1, z2, math.exp(-2.5), -3.3),
        ),
    ]
    for got, want in cases:
        assert got.dtype == torch.float64 and abs(got.item() - want.item()) <= 1e-12
    assert InfoNCELoss(tau).temperature == tau and C.SupConLoss(tau).temperature == tau


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_also_one_pair_is_exactly_zero_with_a_zero_gradient(dtype):
    """Issue 24: one pair has no negative: the loss is 0 (never a negative residue), grads 0."""
    for seed in range(20):
        torch.manual_seed(seed)
        a = (3 * torch.randn(1, 6, dtype=dtype)).requires_grad_()
        b = (3 * torch.randn(1, 6, dtype=dtype)).requires_grad_()
        tau = torch.tensor(0.05, dtype=dtype, requires_grad=True)
        losses = [
            C.info_nce(a, b, tau),
            C.clip_loss(a, b, tau),
            C.supcon_loss(torch.cat([a, b]), torch.tensor([3, 3]), tau),
            C.retrieval_loss(a, b, None, tau),
            C.nt_xent(torch.cat([a, b]), tau),
        ]
        for loss in losses:
            assert loss.dtype == dtype and loss.item() == 0.0
            a.grad = b.grad = tau.grad = None
            loss.backward()
            assert a.grad.abs().max() == 0 and b.grad.abs().max() == 0 and tau.grad == 0
    assert C.info_nce(a, b, reduction="none").tolist() == [0.0, 0.0]
    assert C.info_nce(a, b, exclude_self=False).item() > 0  # the self term is a candidate: not empty
