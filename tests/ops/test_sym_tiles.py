"""ops/sym_tiles.py: the two passes over a symmetric logit matrix S = Z Z^T / tau (upper-triangle
tiles only) against the dense oracle: pass 1's log-sum-exps and pass 2's gradient
(W P + (W P)^T) Z against the autograd of sum_i w_i lse_i, in float64 to 1e-10, at every tile
boundary, on both shift paths, with the masks the objectives use (none, self, decoupled
positives, equal labels)."""

import itertools

import pytest
import torch

from contrastive.ops.common import positive_index
from contrastive.ops.sym_tiles import sym_grad, sym_lse
from contrastive.ops.tiles import TileMask, logit_bound

from .. import oracles

TOL = dict(rtol=1e-10, atol=1e-10)


def masks(N):
    """The symmetric masks of the objectives on the symmetric engine, by name."""
    labels = torch.arange(N) % 3
    return {
        "none": {},
        "self": dict(self_offset=0),  # NT-Xent, SupCon
        "self+decoupled": dict(self_offset=0, row_key=positive_index(N), col_key=torch.arange(N)),  # DCL
        "labels": dict(row_key=labels, col_key=labels),
    }


# decoupled positives need an involution p(i) = (i + N/2) mod N: N even, and N >= 4 so that a
# row keeps a candidate besides itself and its positive
CASES = [
    (name, N, bs)
    for name, N, bs in itertools.product(
        ["none", "self", "self+decoupled", "labels"], [2, 7, 12], [1, 3, 5, 512]
    )
    if name != "self+decoupled" or (N % 2 == 0 and N >= 4)
] + [("self+decoupled", 4, bs) for bs in (1, 3, 512)]


@pytest.mark.parametrize("mask_name, N, bs", CASES)
@pytest.mark.parametrize("tau", [0.5, 0.002], ids=["fixed-shift", "online-max"])
def test_passes_equal_the_dense_oracle(N, bs, tau, mask_name):
    g = torch.Generator().manual_seed(N * 100 + bs)
    z = torch.randn(N, 4, generator=g, dtype=torch.float64)
    z = torch.nn.functional.normalize(z, dim=1) * (0.5 + torch.rand(N, 1, generator=g, dtype=torch.float64))
    w = torch.rand(N, generator=g, dtype=torch.float64) - 0.3  # mixed signs
    kw = masks(N)[mask_name]
    mask = TileMask(**kw)
    drop = oracles.tile_mask(N, N, **kw)
    inv_temp = 1 / tau
    c, fixed = logit_bound(inv_temp, [z])
    assert fixed == (tau == 0.5)

    lse = sym_lse(z, inv_temp, c, mask, bs, fixed)
    zl = z.clone().requires_grad_(True)
    want = oracles.row_lse(zl, zl, tau, drop=drop)
    torch.testing.assert_close(lse, want.detach(), **TOL)
    (grad,) = oracles.weighted_grads(want, w, (zl,))
    torch.testing.assert_close(sym_grad(z, inv_temp, c, lse, w, mask, bs, fixed), grad / inv_temp, **TOL)
