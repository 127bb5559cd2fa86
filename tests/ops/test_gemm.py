"""ops/gemm.py: tile_mm, the engine's one tile GEMM, writes a b^T (+ a fused (1, 1) shift) into the
buffer it is given, for every dtype the engine computes in."""

import pytest
import torch

from contrastive.ops.gemm import tile_mm


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
@pytest.mark.parametrize("shift", [None, -3.5])
def test_tile_mm_writes_a_b_transpose_into_the_buffer(dtype, tol, shift):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, generator=g, dtype=torch.float64)
    b = torch.randn(3, 7, generator=g, dtype=torch.float64)
    out = torch.full((5, 3), float("nan"), dtype=dtype)
    s = None if shift is None else torch.full((1, 1), shift, dtype=dtype)
    got = tile_mm(a.to(dtype), b.to(dtype), out, s)
    assert got.data_ptr() == out.data_ptr() and got.shape == (5, 3)
    want = a @ b.T + (0.0 if shift is None else shift)
    torch.testing.assert_close(out.double(), want, rtol=tol, atol=tol)
