"""Helpers every back-end of the engine shares: compute dtype, exact L2 normalisation and its
chain rule, temperature values, the two-view positive index.

Normalisation is exact over the whole finite range: each row is first divided by its largest
absolute entry m_i (exact up to rounding, never overflows or underflows), then by the norm of
the rescaled row, which lies in [1, sqrt(d)]:

    z_i = (u_i / m_i) / |u_i / m_i|,        |u_i| = m_i |u_i / m_i|

so rows scaled by 1e-30 or 1e30 give the same z as the unit rows. :class:`Rows` makes these
rows block by block from u and its norms, so an objective never holds Z next to u. The chain rule for
z = u / |u| is grad_u = (I - z z^T) grad_z / |u|, applied as two divisions (by |u_i / m_i|,
then by m_i) so that the gradient of a huge row is small rather than zero and that of a tiny
row large rather than inf (as long as the true value is representable).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "Rows",
    "Blocks",
    "compute_dtype",
    "normalize_rows",
    "chain_normalize",
    "chain_normalize_",
    "row_slices",
    "rowdot",
    "sub_rows_",
    "rolled",
    "temperature_value",
    "positive_index",
    "reduce_rows",
    "Temperature",
]

Temperature = float | torch.Tensor  # a temperature (or bias): a float or a scalar tensor

ROWS = 4096  # row block of the O(N d) helpers: their temporaries stay (ROWS, d), never (N, d)


def row_slices(n: int) -> list[slice]:
    """``ROWS``-row slices covering ``range(n)``: the blocks every O(N d) loop walks.

    Examples:
        >>> row_slices(5000)
        [slice(0, 4096, None), slice(4096, 5000, None)]
    """
    return [slice(i0, min(i0 + ROWS, n)) for i0 in range(0, n, ROWS)]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Rows:
    """The rows an objective reads, made on demand one block at a time, never held whole:
    ``rows[i0:i1]`` is ``z[i0:i1]`` in the compute dtype, with z = u / |u| row by row when
    ``normalize`` (exactly :func:`normalize_rows`' values) or z = u.

    Only u (the caller's tensor), the norms ``(N, 2)`` and ``1 / |u_i|`` are kept; a block
    costs one elementwise pass over (rows, d) (two for rows near the ends of the dtype's
    range), against the (rows, bs, d) GEMMs it feeds.

    Args:
        u: the input rows, any floating dtype.
        dtype: the compute dtype (blocks are made in it).
        normalize: L2-normalise the rows.

    Shape:
        u: ``(N, d)``; ``rows[a:b]``: ``(b - a, d)``; ``norms``: ``(N, 2)`` or ``None``.

    Examples:
        >>> import torch
        >>> r = Rows(torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.float32, True)
        >>> r[1:2], r.shape
        (tensor([[0., 1.]]), torch.Size([2, 2]))
    """

    def __init__(self, u: torch.Tensor, dtype: torch.dtype, normalize: bool) -> None:
        self.u, self.dtype, self.device = u, dtype, u.device
        self.shape = u.shape
        self.norms: torch.Tensor | None = None
        self.inv_norm: torch.Tensor | None = None  # (N, 1) 1 / |u_i| when every row allows it
        if normalize:
            norms = torch.empty(u.shape[0], 2, dtype=dtype, device=u.device)  # (N, 2): m_i, |u_i / m_i|
            for s in row_slices(u.shape[0]):
                x = u[s].to(dtype)
                m = x.abs().amax(dim=1, keepdim=True)  # max-abs m_i
                norms[s, :1] = m
                norms[s, 1:] = torch.linalg.vector_norm(x / m, dim=1, keepdim=True)  # in [1, sqrt(d)]
            self.norms = norms
            # one multiply per entry instead of two divisions where 1 / |u_i| = 1 / (m_i n_i) is a
            # normal number for every row (all but rows near the ends of the dtype's range)
            inv = (norms[:, :1] * norms[:, 1:]).reciprocal_()  # (N, 1)
            tiny = torch.finfo(dtype).tiny
            self.inv_norm = inv if bool(((inv >= tiny) & (inv <= 1 / tiny)).all()) else None

    def __getitem__(self, s: slice) -> torch.Tensor:
        i0, i1, _ = s.indices(self.shape[0])
        return self.block(i0, i1, None)

    def block(self, i0: int, i1: int, out: torch.Tensor | None) -> torch.Tensor:
        """``self[i0:i1]``, written into ``out`` (``(i1 - i0, d)``, the compute dtype) when given:
        the tile loops make a block per tile, and a fresh allocation each time costs page faults."""
        x = self.u[i0:i1]  # (rows, d)
        if self.norms is None:
            if x.dtype == self.dtype:
                return x  # a view
            return x.to(self.dtype) if out is None else out.copy_(x)
        if out is None:
            out = torch.empty(x.shape, dtype=self.dtype, device=x.device)
        if self.inv_norm is not None:
            return torch.mul(x, self.inv_norm[i0:i1], out=out)  # u / |u|
        n = self.norms[i0:i1]
        return torch.div(x, n[:, :1], out=out).div_(n[:, 1:])  # (u / m) / |u / m|: exact at any scale

    def full(self) -> torch.Tensor:
        """All rows at once, ``(N, d)`` (for back-ends that need one tensor)."""
        return self[0 : self.shape[0]]

    def new_zeros(self, *size: Any) -> torch.Tensor:
        return torch.zeros(*size, dtype=self.dtype, device=self.device)

    def new_empty(self, *size: Any) -> torch.Tensor:
        return torch.empty(*size, dtype=self.dtype, device=self.device)

    def new_ones(self, *size: Any) -> torch.Tensor:
        return torch.ones(*size, dtype=self.dtype, device=self.device)

    def new_full(self, size: tuple[int, ...], value: float) -> torch.Tensor:
        return torch.full(size, value, dtype=self.dtype, device=self.device)


Blocks = torch.Tensor | Rows  # what the tile passes read rows from: z[i0:i1] either way


def take(z: Blocks, i0: int, i1: int, out: torch.Tensor) -> torch.Tensor:
    """Rows i0..i1 of ``z``: a view of a tensor, or a :class:`Rows` block made into ``out``."""
    return z.block(i0, i1, out) if isinstance(z, Rows) else z[i0:i1]


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
    rows = Rows(x, x.dtype, True)
    assert rows.norms is not None  # normalize=True
    return rows.full(), rows.norms


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


def chain_normalize_(grad_z: torch.Tensor, z: Blocks, norms: torch.Tensor) -> torch.Tensor:
    """:func:`chain_normalize` written into ``grad_z`` (returned), ``ROWS`` rows at a time:
    no (N, d) temporary. ``z``: the unit rows, a tensor or :class:`Rows`.

    Examples:
        >>> import torch
        >>> u = torch.tensor([[3.0, 4.0]]); z, n = normalize_rows(u)
        >>> g = torch.tensor([[1.0, 0.0]]); chain_normalize_(g, z, n) is g
        True
        >>> g                                          # (I - z z^T) e_1 / 5
        tensor([[ 0.1280, -0.0960]])
    """
    for s in row_slices(grad_z.shape[0]):
        zb, gb, nb = z[s], grad_z[s], norms[s]
        dot = torch.sum(zb * gb, 1, keepdim=True)  # (rows, 1) z_i . grad_z_i
        gb.addcmul_(zb, dot, value=-1)  # (I - z z^T) grad_z
        if nb.shape[1] == 2:
            gb.div_(nb[:, 1:]).div_(nb[:, :1])  # / (|u / m| m)
        else:
            gb.div_(nb)
    return grad_z


def rowdot(a: Blocks, b: Blocks, a0: int = 0, b0: int = 0, n: int | None = None) -> torch.Tensor:
    """a_i . b_i for rows a[a0 : a0 + n] against b[b0 : b0 + n], ``(n,)``, ``ROWS`` rows at a
    time: ``(a * b).sum(1)`` without its ``(n, d)`` temporary. ``a``, ``b``: tensors or
    :class:`Rows`; ``n`` defaults to the rows of ``a`` from ``a0``.

    Examples:
        >>> import torch
        >>> rowdot(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
        tensor([3., 8.])
    """
    n = a.shape[0] - a0 if n is None else n
    out = a.new_empty(n)
    for k0 in range(0, n, ROWS):
        k1 = min(k0 + ROWS, n)
        torch.sum(a[a0 + k0 : a0 + k1] * b[b0 + k0 : b0 + k1], 1, out=out[k0:k1])
    return out


def sub_rows_(
    g: torch.Tensor, z: Blocks, coef: torch.Tensor, g0: int = 0, z0: int = 0, n: int | None = None
) -> None:
    """g[g0 + k] -= coef[g0 + k] z[z0 + k] for k < n (default: all of g from g0), in place,
    ``ROWS`` rows at a time; ``coef`` ``(N, 1)``."""
    n = g.shape[0] - g0 if n is None else n
    for k0 in range(0, n, ROWS):
        k1 = min(k0 + ROWS, n)
        g[g0 + k0 : g0 + k1].addcmul_(z[z0 + k0 : z0 + k1], coef[g0 + k0 : g0 + k1], value=-1)


def rolled(n: int, shift: int) -> list[tuple[int, int, int]]:
    """Row i is paired with row (i + shift) mod n: the pairs as runs (start, partner start,
    length), so that ``z[p]`` for p(i) = (i + shift) mod n is never gathered into a copy.

    Examples:
        >>> rolled(6, 2)                       # p = [2, 3, 4, 5, 0, 1]
        [(0, 2, 4), (4, 0, 2)]
    """
    shift %= max(n, 1)
    return [(0, shift, n - shift), (n - shift, 0, shift)]


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


def reduce_rows(per_row: torch.Tensor, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    """``'mean'`` / ``'sum'`` of per-row losses, or them as they are (``'none'``), in ``out_dtype``:
    the reduction of the losses that do not run on the engine (the dense paths, the margin loss)."""
    if reduction == "mean":
        per_row = per_row.mean()
    elif reduction == "sum":
        per_row = per_row.sum()
    return per_row.to(out_dtype)


def no_negatives_loss(
    tensors: list[torch.Tensor], temperature: Any, rows: int, reduction: str
) -> torch.Tensor:
    """The loss of a batch that has no negative at all (one pair): exactly 0, and so is its
    gradient (the softmax is over the positive alone), as the cross-entropy of one logit is in
    sentence-transformers and open_clip; computed rather than rounded (the engine's
    ``lse - positive`` leaves +-1e-7 in float32, a negative loss). The zero stays in the graph
    of ``tensors`` (and a tensor ``temperature``), so ``backward`` fills their ``.grad`` with 0.

    Examples:
        >>> z = torch.randn(1, 3, requires_grad=True)
        >>> loss = no_negatives_loss([z], 0.5, 2, "mean"); loss.backward()
        >>> loss.item(), z.grad.abs().sum().item()
        (0.0, 0.0)
    """
    leaves = [t for t in tensors if t is not None] + [temperature] * isinstance(temperature, torch.Tensor)
    zero = sum((t * 0).sum().to(tensors[0].dtype) for t in leaves)  # 0 in the graph of every input
    if reduction == "none":
        return zero + torch.zeros(rows, dtype=tensors[0].dtype, device=tensors[0].device)  # (rows,)
    return zero
