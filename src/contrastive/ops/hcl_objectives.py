"""Robinson et al.'s hard-negative estimator (:mod:`.hcl`) on InfoNCE and the two-tower loss,
as :mod:`.blockloss` blocks.

* InfoNCE on stacked views z ``(N, d)``: one symmetric block (upper tiles of z z^T), row i's
  negatives every k but i (when ``exclude_self``) and its positive p(i) = (i + N/2) mod N, so
  n_i = N - 2 (N - 1 keeping self); for two views this is the authors' ``criterion``.
* Two-tower (a, b): one rectangular block; rows (a_i against every b_j, j != i) and columns
  (b_i against every a_j, j != i) each their own HCL term with n_i = N - 1, averaged.
"""

from __future__ import annotations

import torch

from .blockloss import Block, BlockObjective, Side
from .engine import Build
from .hcl import Partition
from .selectors import Diag, eq_sel, transposed


def _full(zs):
    return [None if z is None else z.full() if hasattr(z, "full") else z for z in zs]


def hcl_info_nce_objective(exclude_self: bool, beta: float, tau_plus: float, bs: int) -> Build:
    """The engine's ``build`` for HCL InfoNCE of one stacked ``(N, d)`` input."""

    def build(zs, inv_temp, bias, needs):
        z = _full(zs)
        N, dev = z[0].shape[0], z[0].device
        p = (torch.arange(N, device=dev) + N // 2) % N  # (N,) p(i)
        m = [s for s in (Diag(dev) if exclude_self else None, eq_sel(p, torch.arange(N, device=dev))) if s]
        n_neg = torch.full((N,), N - 2 if exclude_self else N - 1, dtype=z[0].dtype, device=dev)
        parts = [Partition(1.0, "hcl", beta, tau_plus, n_neg)]
        blocks = [Block(0, 0, Side(0, m), Side(0, transposed(m)), sym=True)]
        return BlockObjective(z, inv_temp, needs, blocks, parts, (0, 0, p), 1.0, bs)

    return build


def hcl_clip_objective(beta: float, tau_plus: float, bs: int) -> Build:
    """The engine's ``build`` for the HCL two-tower loss of inputs (a, b)."""

    def build(zs, inv_temp, bias, needs):
        z = _full(zs)
        N, dev = z[0].shape[0], z[0].device
        n_neg = torch.full((N,), N - 1, dtype=z[0].dtype, device=dev)
        parts = [Partition(0.5, "hcl", beta, tau_plus, n_neg), Partition(0.5, "hcl", beta, tau_plus, n_neg)]
        blocks = [Block(0, 1, Side(0, [Diag(dev)]), Side(1, [Diag(dev)]))]
        return BlockObjective(z, inv_temp, needs, blocks, parts, (0, 1, None), 1.0, bs)

    return build
