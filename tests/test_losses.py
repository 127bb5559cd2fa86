"""The loss modules pass their arguments through to :mod:`contrastive.functional`."""

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
