"""The engine's one tile GEMM: every logit tile S_IJ = A_I B_J^T goes through :func:`tile_mm`.

On CPU (and for float32/float64 operands anywhere) it is ``torch.mm`` into a reusable buffer of
the compute dtype. (Issue 16: on CUDA, half-precision operands could stay in half precision with
float32 accumulation and output through ``torch.mm(a, b, out_dtype=torch.float32)``, which this
torch provides for CUDA only; the engine today upcasts operands to float32 first.)
"""

from __future__ import annotations

import torch


def tile_mm(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """out = a b^T (+ shift, a ``(1, 1)`` tensor, fused), shapes (m, d), (n, d) -> (m, n).

    Examples:
        >>> import torch
        >>> tile_mm(torch.eye(2), torch.ones(3, 2), torch.empty(2, 3))
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    if shift is not None:
        return torch.addmm(shift, a, b.T, out=out)
    return torch.mm(a, b.T, out=out)
