"""Power-of-two rescaling (``contrastive.ops.scaling``)."""

import pytest
import torch

from contrastive.ops.scaling import pow2_exponent, safe_norm, scaled_rows, times_pow2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_rows_is_exact_and_in_range(dtype):
    info = torch.finfo(dtype)
    x = torch.tensor(
        [[info.tiny, -3 * info.tiny], [info.max, -info.max / 3], [0.0, 0.0], [1.0, 0.75]], dtype=dtype
    )
    xs, e = scaled_rows(x)
    amax = xs.abs().amax(1)
    assert ((amax >= 0.5) & (amax < 1) | (amax == 0)).all()
    assert torch.equal(times_pow2(xs, e[:, None]), x)  # the round trip is exact


def test_safe_norm_matches_float64_where_vector_norm_overflows():
    x = torch.tensor([[3e30, 4e30], [3e-30, 4e-30], [1e-45, 0.0], [0.0, 0.0]])
    assert torch.linalg.vector_norm(x[0]).isinf() and torch.linalg.vector_norm(x[1]) == 0
    torch.testing.assert_close(safe_norm(x), torch.linalg.vector_norm(x.double(), dim=1).float())


def test_pow2_exponent_whole_tensor():
    assert int(pow2_exponent(torch.tensor([[0.25, -5.0]]))) == 3
