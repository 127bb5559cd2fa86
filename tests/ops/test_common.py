"""ops/common.py: exact L2 normalisation over the whole finite range and its chain rule."""

import pytest
import torch

from contrastive.ops.common import chain_normalize, normalize_rows, row_norms

SCALES = (1e-30, 1e-20, 1e20, 1e30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_normalize_rows_is_exact_at_any_scale(dtype, scale):
    x = torch.randn(6, 5, dtype=torch.float64)
    z0, _ = normalize_rows(x)
    z, n = normalize_rows((x * scale).to(dtype))
    torch.testing.assert_close(z.double(), z0, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
    torch.testing.assert_close(
        row_norms(n).double(),
        torch.linalg.vector_norm(x, dim=1, keepdim=True) * scale,
        rtol=1e-6 if dtype == torch.float32 else 1e-14,
        atol=0,
    )


def test_chain_normalize_two_factor_norms_equal_plain_norms():
    x = torch.randn(7, 4, dtype=torch.float64)
    g = torch.randn(7, 4, dtype=torch.float64)
    z, n = normalize_rows(x)
    torch.testing.assert_close(
        chain_normalize(g, z, n), chain_normalize(g, z, row_norms(n)), rtol=1e-14, atol=0
    )
