"""ops/tiles.py, the tile bookkeeping of the blockwise engines: block plans, block-size
validation, the shift rule, the online log-sum-exp step and the tile mask. The passes that use
them are tested in test_sym_tiles.py and test_rect_tiles.py, and end to end (every objective at
every tile boundary) in test_info_nce.py, test_clip.py, test_supcon.py, test_retrieval.py and
test_siglip.py."""

import math

import pytest
import torch

from contrastive.ops.tiles import (
    DEFAULT_BLOCK_CPU,
    TileBuffers,
    TileMask,
    blocks,
    check_block_size,
    default_block_size,
    logit_bound,
    online_update,
    use_fixed_shift,
)

from .. import oracles

CPU = torch.device("cpu")


@pytest.mark.parametrize("n, size", [(1, 1), (7, 3), (9, 3), (5, 512), (12, 1)])
def test_blocks_cover_the_range_once_in_order(n, size):
    plan = blocks(n, size)
    assert [i for a, b in plan for i in range(a, b)] == list(range(n))
    assert all(0 < b - a <= size for a, b in plan)
    assert len(plan) == math.ceil(n / size)


def test_block_size_defaults_and_is_capped_at_n():
    assert default_block_size(CPU, 10_000) == DEFAULT_BLOCK_CPU
    assert default_block_size(CPU, 7) == 7
    assert default_block_size(CPU, 0) == 1
    assert check_block_size(None, 10_000, CPU) == DEFAULT_BLOCK_CPU
    assert check_block_size(64, 10, CPU) == 10
    assert check_block_size(3, 10, CPU) == 3


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True])
def test_bad_block_size_names_the_argument(bad):
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        check_block_size(bad, 10, CPU)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fixed_shift_exactly_while_exp_minus_2c_is_normal(dtype):
    """The rule: the fixed shift c is used while exp(-2c) (the smallest tile entry) stays a
    normal number with e^8 of headroom; at the boundary it is, past it it is not."""
    c_max = (-math.log(torch.finfo(dtype).tiny) - 8.0) / 2
    assert use_fixed_shift(c_max, dtype) and not use_fixed_shift(c_max * (1 + 1e-9), dtype)
    e = torch.exp(torch.tensor(-2 * c_max, dtype=torch.float64)).to(dtype)
    assert e >= torch.finfo(dtype).tiny  # the smallest exponential is not subnormal


def test_tile_buffers_are_reused_per_name_and_shape():
    buf = TileBuffers(torch.float64, CPU)
    a = buf.get("E", 3, 4)
    assert a.shape == (3, 4) and a.dtype == torch.float64
    assert buf.get("E", 3, 4).data_ptr() == a.data_ptr()
    assert buf.get("H", 3, 4).data_ptr() != a.data_ptr()
    assert buf.get("E", 2, 4).shape == (2, 4)


def test_online_update_is_logsumexp_tile_by_tile():
    """Running max and sum over column tiles equal one logsumexp, with rows that see only
    -inf for a while (masked) and a row that is -inf throughout (which stays -inf, no NaN)."""
    g = torch.Generator().manual_seed(0)
    S = torch.randn(5, 11, generator=g, dtype=torch.float64) * 30
    S[1, :6] = float("-inf")  # -inf in the first tiles only
    S[4] = float("-inf")  # a row with no candidate at all
    m = torch.full((5,), float("-inf"), dtype=torch.float64)
    r = torch.zeros(5, dtype=torch.float64)
    for j0, j1 in blocks(11, 3):
        T = S[:, j0:j1]
        online_update(m, r, slice(0, 5), T.amax(1), lambda s: torch.exp(T - s[:, None]).sum(1))  # noqa: B023
    got = m + r.log()
    torch.testing.assert_close(got[:4], torch.logsumexp(S[:4], 1), rtol=1e-14, atol=0)
    assert got[4] == float("-inf") and not torch.isnan(r).any()


@pytest.mark.parametrize("i0, j0", [(0, 0), (3, 0), (0, 4), (6, 2)])
@pytest.mark.parametrize(
    "kw",
    [
        dict(self_offset=0),
        dict(self_offset=5),
        dict(row_key="ids", col_key="ids"),
        dict(self_offset=0, row_key="ids", col_key="ids"),
        dict(row_key="ids", col_key="ids", keep_offset=5),  # decoupled: keys are pair ids
    ],
)
def test_tile_mask_equals_its_definition_on_every_tile(i0, j0, kw):
    ids = torch.tensor([0, 1, 2, 0, 3, 0, 1, 2, 0, 3])
    kw = {k: ids if isinstance(v, str) else v for k, v in kw.items()}
    want = oracles.tile_mask(10, 10, **kw)
    mask = TileMask(**kw)
    assert not mask.empty
    T = torch.zeros(4, 5)
    mask.apply(T, i0, j0, 1.0)
    ni, nj = min(4, 10 - i0), min(5, 10 - j0)
    assert torch.equal(T[:ni, :nj].bool(), want[i0 : i0 + ni, j0 : j0 + nj])


def test_empty_mask_leaves_the_tile_alone():
    T = torch.randn(3, 3)
    before = T.clone()
    mask = TileMask()
    assert mask.empty
    mask.apply(T, 0, 0, float("-inf"))
    assert torch.equal(T, before)


def test_logit_bound_is_the_largest_possible_logit():
    """c = inv_temp max|x| max|y| over every tensor of each side (None and empty ones skipped):
    every |S_ij| <= c, with equality for parallel rows of the largest norms; the symmetric
    bound is inv_temp max|z|^2; ``fixed`` is use_fixed_shift's rule."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64)
    p, n = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 3, generator=g, dtype=torch.float64),
    )
    c, fixed = logit_bound(2.0, [a], [p, None, n, p[:0]])
    rho_a, rho_y = a.norm(dim=1).max(), torch.cat([p, n]).norm(dim=1).max()
    assert c == pytest.approx(2.0 * float(rho_a * rho_y), rel=1e-14)
    assert (2.0 * a @ torch.cat([p, n]).T).abs().max() <= c
    assert fixed == use_fixed_shift(c, torch.float64)
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert logit_bound(0.5, [x], [2 * x])[0] == pytest.approx(0.5 * 2.0 * 25.0, rel=1e-14)
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    assert logit_bound(1.0, [z]) == (25.0, True)
    assert logit_bound(1e4, [z.float()]) == (25e4, False)  # exp(-2c) underflows: online max
    assert logit_bound(2.0, [z[:0]])[0] == 0.0  # no rows: no logit
