"""Exact power-of-two rescaling, so that scale-invariant objectives work over a dtype's whole range.

Cosine similarities and norms are invariant to (or homogeneous in) the scale of their
inputs, but their intermediate products are not: ``x . x`` of a float32 row of norm 1e-20
underflows to 0 and of norm 1e20 overflows to inf, and torch's ``vector_norm`` does the
same (it sums squares without rescaling). Dividing a row by ``2^e``, with ``2^e`` its
largest magnitude rounded to a power of two, is exact in binary floating point (unless the
result is subnormal) and brings the row's largest entry into [0.5, 1), where every product
of the objective is safe. The gradient with respect to the unscaled row is the scaled row's
gradient times ``2^-e`` (chain rule through ``x_hat = x 2^-e``).
"""

from __future__ import annotations

import torch


def pow2_exponent(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Exponents ``e`` with ``max |x| = m 2^e``, ``m`` in [0.5, 1), over ``dim`` (all if None).

    All-zero slices get ``e = 0`` (nothing to rescale).

    Shape:
        x: any; output: ``x.amax(dim)``'s shape, int32.

    Example:
        >>> pow2_exponent(torch.tensor([[3.0, -1.0], [0.0, 0.0]]), dim=1).tolist()
        [2, 0]
    """
    amax = x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim=dim)
    _, e = torch.frexp(amax)
    return torch.where(amax > 0, e, torch.zeros_like(e))


def times_pow2(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``x * 2^e`` exactly (``e`` broadcast against ``x``), without forming an overflowing ``2^e``.

    ``2^e`` is applied in two halves, each well inside the range of float32 and float64, so
    exponents up to about +-250 (float32) are safe even where ``2^e`` alone is not representable.

    Example:
        >>> x = torch.tensor([2.0**-100])
        >>> times_pow2(x, torch.tensor([200])).item() == 2.0**100
        True
        >>> (x * torch.exp2(torch.tensor([200.0]))).item()   # the one-step product overflows
        inf
    """
    e = e.to(x.dtype)
    half = torch.trunc(e / 2)
    return x * torch.exp2(half) * torch.exp2(e - half)


def scaled_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_hat, e)`` with ``x_hat = x 2^-e`` row by row, each row's largest entry in [0.5, 1).

    Shape:
        x: ``(B, d)``; x_hat: ``(B, d)``; e: ``(B,)``.
    """
    e = pow2_exponent(x, dim=1)  # (B,)
    return times_pow2(x, -e[:, None]), e


def scaled_whole(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_hat, e)`` with ``x_hat = x 2^-e``, the largest entry of the whole tensor in [0.5, 1)."""
    e = pow2_exponent(x)
    return times_pow2(x, -e), e


def safe_norm(x: torch.Tensor) -> torch.Tensor:
    """Row L2 norms without overflow or underflow: ``2^e |x 2^-e|``, ``(B, d) -> (B,)``.

    Example:
        >>> safe_norm(torch.tensor([[3e20, 4e20], [3e-30, 4e-30]])).tolist() == [
        ...     torch.tensor(5e20).item(), torch.tensor(5e-30).item()]
        True
    """
    xs, e = scaled_rows(x)
    return times_pow2(torch.linalg.vector_norm(xs, dim=1), e)
