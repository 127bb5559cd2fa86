"""ops/common.py: exact L2 normalisation over the whole finite range, its chain rule against
autograd, and the small helpers every back-end shares."""

import pytest
import torch

from contrastive.ops.common import (
    Rows,
    chain_normalize,
    compute_dtype,
    normalize_rows,
    positive_index,
    row_norms,
    scalar,
    temperature_value,
)

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


@pytest.mark.parametrize("plain_norms", [False, True])
def test_chain_normalize_is_the_gradient_through_the_normalisation(plain_norms):
    """grad_u = (I - z z^T) grad_z / |u| equals autograd through u / |u| (float64, 1e-10)."""
    g = torch.Generator().manual_seed(1)
    u = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    grad_z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    (want,) = torch.autograd.grad(torch.nn.functional.normalize(u, dim=1), u, grad_z)
    z, n = normalize_rows(u.detach())
    got = chain_normalize(grad_z.clone(), z, row_norms(n) if plain_norms else n)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_compute_dtype_temperature_value_scalar_and_positive_index():
    assert compute_dtype(torch.float64) == torch.float64
    assert all(compute_dtype(d) == torch.float32 for d in (torch.float32, torch.bfloat16, torch.float16))
    t = torch.tensor([0.25], requires_grad=True)
    v = temperature_value(t, torch.float64, "cpu")
    assert v.shape == () and v.dtype == torch.float64 and not v.requires_grad and v.item() == 0.25
    assert temperature_value(0.5, torch.float32, "cpu").item() == 0.5
    assert scalar(None) is None and scalar(t) == 0.25 and scalar(2) == 2.0
    assert positive_index(6).tolist() == [3, 4, 5, 0, 1, 2]


@pytest.mark.parametrize(
    "dtype, scale, one_multiply",
    [
        (torch.float32, 1.0, True),
        (torch.float32, 1e-30, True),
        (torch.float32, 1e30, True),
        (torch.float32, 1e-39, False),  # 1 / |u| above 1 / tiny: the two divisions
        (torch.float32, 1e38, False),  # |u| near the largest float32: 1 / |u| below tiny
        (torch.float64, 1e-300, True),
        (torch.float64, 1e-310, False),
    ],
)
def test_rows_blocks_equal_the_unit_rows_on_both_paths(dtype, scale, one_multiply):
    """Rows makes u / |u| with one multiply where 1 / |u_i| is a normal number for every row,
    else with normalize_rows' two divisions; blocks, into a buffer or not, agree either way."""
    x = torch.randn(9, 5, dtype=torch.float64)
    u = (x * scale).to(dtype)  # subnormal entries keep fewer digits: the reference starts from u
    y = u.double() / u.double().abs().amax(1, keepdim=True)
    z0 = y / torch.linalg.vector_norm(y, dim=1, keepdim=True)
    rows = Rows(u, dtype, True)
    assert (rows.inv_norm is not None) == one_multiply
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(rows.full().double(), z0, rtol=tol, atol=0)
    out = torch.empty(4, 5, dtype=dtype)
    torch.testing.assert_close(rows.block(3, 7, out), rows[3:7], rtol=0, atol=0)
    plain = Rows(x.to(dtype), dtype, False)
    assert plain[2:4].data_ptr() == plain.u[2:4].data_ptr()  # unnormalised rows in the compute dtype: views
