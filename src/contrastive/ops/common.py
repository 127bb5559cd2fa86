"""Helpers every back-end of the engine shares: compute dtype, exact L2 normalisation and its
chain rule, temperature values, the two-view positive index.

Normalisation is exact over the whole finite range: each row is first divided by its largest
absolute entry m_i (exact up to rounding, never overflows or underflows), then by the norm of
the rescaled row, which lies in [1, sqrt(d)]:

    z_i = (u_i / m_i) / |u_i / m_i|,        |u_i| = m_i |u_i / m_i|

so rows scaled by 1e-30 or 1e30 give the same z as the unit rows. The chain rule for
z = u / |u| is grad_u = (I - z z^T) grad_z / |u|, applied as two divisions (by |u_i / m_i|,
then by m_i) so that the gradient of a huge row is small rather than zero and that of a tiny
row large rather than inf (as long as the true value is representable).
"""

from __future__ import annotations

import torch

__all__ = [
    "compute_dtype",
    "normalize_rows",
    "chain_normalize",
    "chain_normalize_",
    "rowdot",
    "rolled",
    "temperature_value",
    "positive_index",
]

ROWS = 4096  # row block of the O(N d) helpers: their temporaries stay (ROWS, d), never (N, d)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = x / |x| row by row, exact for any finite non-zero row, and the norms.

    Args:
        x: rows to normalise.

    Shape:
        x: ``(N, d)``; returns z ``(N, d)`` and norms ``(N, 2)``: column 0 the max-abs m_i,
        column 1 the norm of the rescaled row (|x_i| = m_i * norms[i, 1]).

    Examples:
        >>> import torch
        >>> z, n = normalize_rows(torch.tensor([[3e30, 4e30], [3e-30, 4e-30]]))
        >>> z
        tensor([[0.6000, 0.8000],
                [0.6000, 0.8000]])
    """
    m = x.abs().amax(dim=1, keepdim=True)  # (N, 1) max-abs m_i
    y = x / m  # (N, d) entries in [-1, 1]
    n = torch.linalg.vector_norm(y, dim=1, keepdim=True)  # (N, 1) in [1, sqrt(d)]
    return y.div_(n), torch.cat([m, n], 1)  # in place: one (N, d) copy


def row_norms(norms: torch.Tensor) -> torch.Tensor:
    """|x_i| (N, 1) from :func:`normalize_rows`' norms (may overflow to inf for rows near the
    dtype's largest value; use it only where that is harmless)."""
    return norms[:, :1] * norms[:, 1:]


def chain_normalize(grad_z: torch.Tensor, z: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """grad_u = (I - z z^T) grad_z / |u| for z = u / |u|; ``norms`` from :func:`normalize_rows`
    (``(N, 2)``) or plain norms ``(N, 1)``. ``grad_z`` is left as it was (see
    :func:`chain_normalize_` for the in-place form).

    Examples:
        >>> import torch
        >>> u = torch.tensor([[3.0, 4.0]]); z, n = normalize_rows(u)
        >>> chain_normalize(z.clone(), z, n)                        # radial part removed
        tensor([[0., 0.]])
    """
    return chain_normalize_(grad_z.clone(), z, norms)


def chain_normalize_(grad_z: torch.Tensor, z: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """:func:`chain_normalize` written into ``grad_z`` (returned): no (N, d) temporary.

    Examples:
        >>> import torch
        >>> u = torch.tensor([[3.0, 4.0]]); z, n = normalize_rows(u)
        >>> g = torch.tensor([[1.0, 0.0]]); chain_normalize_(g, z, n) is g
        True
        >>> g                                          # (I - z z^T) e_1 / 5
        tensor([[ 0.1280, -0.0960]])
    """
    dot = rowdot(z, grad_z)[:, None]  # (N, 1) z_i . grad_z_i
    grad_z.addcmul_(z, dot, value=-1)  # (I - z z^T) grad_z
    if norms.shape[1] == 2:
        return grad_z.div_(norms[:, 1:]).div_(norms[:, :1])  # / (|u / m| m)
    return grad_z.div_(norms)


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a_i . b_i for every row, ``(N,)``, computed ``ROWS`` rows at a time: equal to
    ``(a * b).sum(1)`` without its ``(N, d)`` temporary.

    Examples:
        >>> import torch
        >>> rowdot(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
        tensor([3., 8.])
    """
    out = a.new_empty(a.shape[0])
    for i0 in range(0, a.shape[0], ROWS):
        s = slice(i0, i0 + ROWS)
        torch.sum(a[s] * b[s], 1, out=out[s])
    return out


def rolled(n: int, shift: int) -> list[tuple[slice, slice]]:
    """Row i is paired with row (i + shift) mod n: the pairs as two (rows, partner rows)
    slices, so that ``z[p]`` for p(i) = (i + shift) mod n is never gathered into a copy.

    Examples:
        >>> rolled(6, 3)                       # p = [3, 4, 5, 0, 1, 2]
        [(slice(0, 3, None), slice(3, 6, None)), (slice(3, 6, None), slice(0, 3, None))]
    """
    shift %= max(n, 1)
    return [(slice(0, n - shift), slice(shift, n)), (slice(n - shift, n), slice(0, shift))]


def temperature_value(
    temperature: float | torch.Tensor, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """The temperature as a detached 0-d tensor of ``dtype`` on ``device``."""
    if isinstance(temperature, torch.Tensor):
        return temperature.detach().to(dtype=dtype, device=device).reshape(())
    return torch.tensor(float(temperature), dtype=dtype, device=device)


def scalar(value: float | torch.Tensor | None) -> float | None:
    """A Python float of a float or scalar tensor (``None`` stays ``None``)."""
    if value is None:
        return None
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def positive_index(N: int, device: torch.device | None = None) -> torch.Tensor:
    """p(i) = (i + N/2) mod N, the other view of row i in two stacked views."""
    return (torch.arange(N, device=device) + N // 2) % N
