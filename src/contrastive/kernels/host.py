"""Host side of the Triton InfoNCE engine: validation, tile configurations, launches, algebra.

Two public functions with the same contract as the torch engine, so that dispatch is a swap:

* :func:`info_nce_triton`: single tower, ``S = inv_temp Z Z^T``, positive ``p(i) = (i + N/2) mod N``.
* :func:`clip_triton`: two towers, ``S = inv_temp A B^T``, positives on the diagonal, the
  loss of row ``i`` the mean of its row and column cross-entropies.

Both take unit rows (the caller normalises and chains the gradient through the
normalisation), return per-row losses, the gradient of ``sum_i w_i loss_i`` with respect to
the rows as free vectors, and its derivative with respect to ``inv_temp``. Launch plan:

1. pass 1: per-row log-sum-exp. Fixed shift ``c = inv_temp max|x| max|y|`` (every logit is
   in [-c, c]; ``c = inv_temp`` for unit rows) with atomic row/column sums over the upper
   triangle of the symmetric ``S`` (half the work), or, when ``c > FIXED_SHIFT_MAX``
   (temperature below ~0.025), one program per row block with an online max (no atomics).
   ``torch.use_deterministic_algorithms(True)`` also takes the atomic-free kernel.
2. finalize: positives and losses (O(N d)).
3. pass 2 (only when gradients are wanted): one program per row block accumulates
   ``sum_J H_IJ Y_J`` in registers, no atomics; the single tower needs one launch because
   its ``H`` is symmetric, the two towers two launches (rows of A, rows of B).

Nothing of size ``N x N`` is allocated: memory beyond the inputs is the float32 gradient
``(N, d)`` plus O(N) vectors (and ``SPLIT`` gradient slices at small N, see ``_split_rows``).
Triton is imported only when a function here runs.

Why atomics in pass 1 and none in pass 2. Per tile of ``BLOCK^2`` entries pass 1 does
``BLOCK^2 d`` multiply-adds and ``BLOCK^2`` exponentials, and the triangle halves both (at
d = 128 an H100 SM retires bf16 tensor-core MACs and ``ex2`` at about the same rate per
entry, so the exponentials matter as much as the GEMM). Its price is ``BLOCK`` float32
atomic adds per tile (the column sums): ``N^2 / (2 BLOCK)`` in all, a few per thousand MACs.
Pass 2 would need ``BLOCK x d`` atomic adds per tile to scatter ``H^T Z_I`` into the
column block (``N^2 d / (2 BLOCK)`` in all: 5e11 at N = 2^20, d = 128, the dQ problem of
FlashAttention's backward). Because ``H`` is symmetric, the row-block kernel that gathers
``sum_J H_IJ Z_J`` is also the column kernel, so pass 2 visits every tile once from its
row side instead: 2 GEMMs per tile over all tiles (4 N^2 d flops for pass 2, vs 3 N^2 d
for the triangle with atomics; 5 N^2 d with pass 1), no atomics, deterministic, and one
exponential per entry (``E_IJ (a_I + a_J)`` with the fixed shift). The two-tower form has no symmetry: pass 1
takes every tile once with row sums in registers and column sums by atomics, pass 2 runs
the row kernel on ``(A, B)`` and on ``(B, A)``.
"""

from __future__ import annotations

import math

import torch

from ._launch import (  # noqa: F401  (re-exported: tools and tests reach them here too)
    _configs,
    _device_module,
    _interpret_for,
    _Launcher,
    _num_sms,
    _pow2,
    _split_rows,
    _split_sym,
)

__all__ = ["info_nce_triton", "clip_triton", "FIXED_SHIFT_MAX"]


#: Largest shift ``c = inv_temp max|x| max|y|`` (about ``inv_temp`` for unit rows) for the fixed
#: shift: a row's sum can be as small as ``exp(-2c)``, which must stay a normal float32 with
#: headroom: ``2c <= -log(float32 tiny) - 8``, i.e. c <= 39.7 (temperature >= ~0.025).
FIXED_SHIFT_MAX = (-math.log(torch.finfo(torch.float32).tiny) - 8.0) / 2.0
LOG2E = 1.4426950408889634
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ----------------------------------------------------------------------------- checks
def _check_rows(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of unit rows (N, d), got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must be float32, bfloat16 or float16 for the Triton kernels, got {x.dtype}; "
            f"use the torch engine for float64"
        )
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got {tuple(x.shape)}")


def _check_inv_temp(inv_temp) -> float:
    if isinstance(inv_temp, torch.Tensor):
        inv_temp = inv_temp.item()
    inv_temp = float(inv_temp)
    if not (math.isfinite(inv_temp) and inv_temp > 0):
        raise ValueError(f"inv_temp = 1 / temperature must be a finite number > 0, got {inv_temp}")
    return inv_temp


def _weights(weights, N: int, device) -> torch.Tensor:
    if weights is None:
        return torch.full((N,), 1.0 / N, dtype=torch.float32, device=device)
    if not isinstance(weights, torch.Tensor) or weights.shape != (N,):
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a tensor of shape ({N},), one per row, got {shape}")
    return weights.to(device=device, dtype=torch.float32).contiguous()


def _max_norm(x: torch.Tensor, chunk: int = 1 << 16) -> float:
    """max_i |x_i| in float32: one O(N d) pass in row chunks (bounded scratch), one host sync."""
    m = torch.stack(
        [
            torch.linalg.vector_norm(x[i : i + chunk], dim=1, dtype=torch.float32).max()
            for i in range(0, x.shape[0], chunk)
        ]
    )
    return float(m.max())


def _given_lse(lse, N: int, device) -> torch.Tensor:
    if not isinstance(lse, torch.Tensor) or lse.shape != (N,):
        raise ValueError(f"lse must be the ({N},) tensor returned with return_lse=True")
    return lse.to(device=device, dtype=torch.float32).contiguous()


def _use_fixed(c: float, path: str | None) -> bool:
    if path is None:
        return c <= FIXED_SHIFT_MAX
    if path not in ("fixed", "online"):
        raise ValueError(f"path must be None, 'fixed' or 'online', got {path!r}")
    return path == "fixed"


def _precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: float32 stays accurate (3xTF32) unless torch allows TF32."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
    return "tf32"  # ignored for 16-bit operands


# ----------------------------------------------------------------------------- passes
class _Ctx:
    """What every launch of one call shares."""

    def __init__(self, x, inv_temp, block_size, tile, split, pass1):
        self.interpret = _interpret_for(x)
        self.N, self.D = x.shape
        self.device = x.device
        self.inv_temp = inv_temp
        self.inv_temp2 = inv_temp * LOG2E
        self.c = inv_temp  # the shift, set per call
        self.block_size, self.tile, self.split = block_size, tile, split
        self.pass1 = pass1
        self.flags = dict(UPCAST=self.interpret and x.dtype == torch.bfloat16, PREC=_precision(x.dtype))
        # autotuning key: one bucket per power of two below 2^16 rows, one for all N >= 2^16
        # (>= 512 row blocks, several waves on any GPU: the ranking settles, while tuning at
        # N = 2^20 would time every candidate at ~1 s a launch)
        self.n_bucket = min(self.N.bit_length(), 17)
        self.esize = x.element_size()

    def launcher(self, name):
        return _Launcher(
            name, self.D, self.interpret, self.block_size, self.tile, self.esize, self.flags["PREC"]
        )


def _run_pass1(c: _Ctx, x, y, *, sym: bool, exclude: bool, fixed: bool):
    """Natural-log lse of the rows and of the columns of S = inv_temp x y^T, each (N,) float32."""
    N, D = c.N, c.D
    atomic = fixed and c.pass1 != "rows" and not torch.are_deterministic_algorithms_enabled()
    if atomic:
        r_row = torch.zeros(N, dtype=torch.float32, device=c.device)
        r_col = r_row if sym else torch.zeros(N, dtype=torch.float32, device=c.device)
        sms = _num_sms(c.device)
        nsplit = c.split

        def grid(meta):
            nb = triton_cdiv(N, meta["BLOCK"])
            return (nb, nsplit if nsplit is not None else _split_sym(nb, sms))

        c.launcher("p1_sums_kernel")(
            grid,
            x,
            y,
            r_row,
            r_col,
            N,
            c.inv_temp2,
            c.c * LOG2E,
            c.n_bucket,
            D=D,
            SYM=sym,
            EXCLUDE=exclude,
            **c.flags,
        )
        lse_row = torch.log(r_row) + c.c  # lse_i = log r_i + c
        lse_col = lse_row if sym else torch.log(r_col) + c.c
        return lse_row, lse_col

    def rows(a, b, excl):
        nsplit = _split_rows(N, c.device, c.split)
        part = torch.empty((nsplit, N), dtype=torch.float32, device=c.device)  # partial lse per split
        c.launcher("p1_rows_kernel")(
            lambda meta: (triton_cdiv(N, meta["BLOCK_M"]), nsplit),
            a,
            b,
            part,
            N,
            c.inv_temp2,
            c.c * LOG2E,
            c.n_bucket,
            D=D,
            FIXED=fixed,
            EXCLUDE=excl,
            **c.flags,
        )
        return part[0] if nsplit == 1 else torch.logsumexp(part, dim=0)

    lse_row = rows(x, y, exclude)
    lse_col = lse_row if sym else rows(y, x, False)  # columns of S = rows of S^T
    return lse_row, lse_col


def _run_finalize(c: _Ctx, x, y, lse_row, lse_col, qshift: int):
    """Positive cosines pos_i = x_i . y_q(i) and losses (lse_row + lse_col)/2 - inv_temp pos."""
    N, D = c.N, c.D
    pos = torch.empty(N, dtype=torch.float32, device=c.device)
    loss = torch.empty(N, dtype=torch.float32, device=c.device)
    block = 16 if c.interpret else 64
    bk = min(_pow2(D), 64 if c.interpret else 128)
    mod = _device_module(c.interpret)
    mod.finalize_kernel[(triton_cdiv(N, block),)](
        x, y, lse_row, lse_col, pos, loss, N, c.inv_temp, qshift, D=D, BLOCK=block, BLOCK_K=bk, num_warps=4
    )
    return pos, loss


def _run_pass2(c: _Ctx, x, y, alpha, beta, lx, ly, gamma, qshift: int, *, exclude: bool, fixed: bool):
    """grad_x = inv_temp (sum_j H_ij y_j - gamma_i y_q(i)) and the partial sum_i x_i . acc_i.

    With the fixed shift ``H_ij = exp(S_ij - c) (alpha_i + beta_j)``, otherwise
    ``H_ij = alpha_i exp(S_ij - lx_i) + beta_j exp(S_ij - ly_j)`` (lx, ly natural-log lse).
    Returns the (N, D) float32 gradient (before the weight rescale) and the d_inv_temp partial sum.
    """
    N, D = c.N, c.D
    nsplit = _split_rows(N, c.device, c.split)
    out = torch.empty((nsplit, N, D), dtype=torch.float32, device=c.device)  # per-split gradient slices
    dinv_part = torch.zeros(
        nsplit * triton_cdiv(N, 16) * triton_cdiv(D, 16), dtype=torch.float32, device=c.device
    )
    lx2 = alpha if fixed else (lx * LOG2E).contiguous()  # unused when fixed
    ly2 = beta if fixed else (ly * LOG2E).contiguous()
    grid = lambda meta: (triton_cdiv(N, meta["BLOCK_M"]), triton_cdiv(D, meta["BLOCK_DV"]), nsplit)  # noqa: E731
    c.launcher("p2_rows_kernel")(
        grid,
        x,
        y,
        alpha.contiguous(),
        beta.contiguous(),
        lx2,
        ly2,
        gamma.contiguous(),
        out,
        dinv_part,
        N,
        c.inv_temp2,
        c.c * LOG2E,
        c.inv_temp,
        qshift,
        c.n_bucket,
        D=D,
        FIXED=fixed,
        EXCLUDE=exclude,
        **c.flags,
    )
    grad = out[0] if nsplit == 1 else out.sum(dim=0)
    return grad, dinv_part.sum()


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _scaled_weights(w: torch.Tensor):
    """w / max|w| and max|w|: keeps H within [-2, 2] so that float16 tiles cannot overflow."""
    wmax = w.abs().amax().clamp_min(torch.finfo(torch.float32).tiny)  # 0-d, stays on device
    return w / wmax, wmax


# ----------------------------------------------------------------------------- API
def info_nce_triton(
    z: torch.Tensor,
    inv_temp: float,
    exclude_self: bool,
    weights: torch.Tensor | None = None,
    compute_grad: bool = True,
    block_size: int | None = None,
    *,
    path: str | None = None,
    lse: torch.Tensor | None = None,
    return_lse: bool = False,
    _tile=None,
    _split=None,
    _pass1=None,
):
    r"""Single-tower InfoNCE on unit rows, blockwise, on the GPU (or the Triton interpreter).

    With :math:`S = \mathrm{inv\_temp}\, Z Z^\top`, positives :math:`p(i) = (i + N/2) \bmod N`
    and :math:`P_{ij} = \exp(S_{ij} - \mathrm{lse}_i)` (:math:`P_{ii} = 0` when ``exclude_self``):

    .. math::

        \mathrm{loss}_i = \mathrm{lse}_i - S_{i,p(i)}, \qquad
        \nabla_Z \textstyle\sum_i w_i \mathrm{loss}_i = \mathrm{inv\_temp}\,(WG + (WG)^\top) Z,
        \quad G = P - \mathrm{onehot}(p),\ W = \mathrm{diag}(w)

    and :math:`\partial/\partial\,\mathrm{inv\_temp} = \sum_{ij} w_i G_{ij}\, z_i \cdot z_j`.
    The gradient is with respect to Z as free vectors (chain through the normalisation outside).

    Args:
        z: unit rows (the shift adapts to the largest norm, so rounding of the input dtype, or
            any norm, stays exact); float32, bfloat16 or float16.
        inv_temp: 1 / temperature, a positive float.
        exclude_self: drop :math:`k = i` from the denominators (SimCLR).
        weights: per-row weights :math:`w` of the loss whose gradient is returned; default
            ``1/N`` each (the mean). Any sign and scale (e.g. an upstream ``grad_output``).
        compute_grad: also run pass 2 (gradient and ``d_inv_temp``).
        block_size: square tile size (power of two >= 16); ``None`` autotunes.
        path: ``None`` picks the fixed shift ``c = inv_temp max_i |z_i|^2`` when
            ``c <= FIXED_SHIFT_MAX`` and the online max above; ``'fixed'``/``'online'`` force one.
        lse: the per-row log-sum-exp of an earlier call on the same ``z`` and ``inv_temp``
            (``return_lse=True``): pass 1 is skipped. For a backward whose weights arrive
            late (``reduction='none'``): run pass 1 in forward, pass 2 in backward.
        return_lse: append the per-row log-sum-exp (float32, ``(N,)``) to the outputs.

    Shape:
        z: ``(N, d)``, N even. Returns ``(N,)``, ``(N, d)``, ``()`` (and ``(N,)``).

    Returns:
        ``(loss_rows, grad_z, d_inv_temp)``: float32 per-row losses, float32 gradient of
        ``sum_i w_i loss_i`` (``None`` unless ``compute_grad``), its derivative with respect
        to ``inv_temp`` as a 0-d float32 tensor (``None`` unless ``compute_grad``); then
        ``lse`` when ``return_lse``.

    Raises:
        TypeError: non-tensor or unsupported dtype. ValueError: odd or zero N, bad shapes,
            ``inv_temp <= 0``, CPU tensors without ``TRITON_INTERPRET=1``.
    """
    _check_rows("z", z)
    N = z.shape[0]
    if N % 2:
        raise ValueError(f"z must have an even number of rows N = 2B (row i pairs with i + N/2), got N = {N}")
    inv_temp = _check_inv_temp(inv_temp)
    c = _Ctx(z, inv_temp, block_size, _tile, _split, _pass1)
    z = z.contiguous()  # (N, d)
    w = _weights(weights, N, z.device)  # (N,)
    c.c = inv_temp * _max_norm(z) ** 2  # |S_ij| <= c
    fixed = _use_fixed(c.c, path)
    exclude = bool(exclude_self)
    if lse is None:
        lse, _ = _run_pass1(c, z, z, sym=True, exclude=exclude, fixed=fixed)  # (N,)
    else:
        lse = _given_lse(lse, N, z.device)
    pos, loss = _run_finalize(c, z, z, lse, lse, N // 2)  # loss_i = lse_i - inv_temp z_i.z_p(i)
    tail = (lse,) if return_lse else ()
    if not compute_grad:
        return (loss, None, None) + tail
    ws, wmax = _scaled_weights(w)
    # H = WP + (WP)^T: H_ij = w_i P_ij + w_j P_ji, P_ij = exp(S_ij - lse_i) = E_ij exp(c - lse_i)
    a = ws * torch.exp(c.c - lse) if fixed else ws  # alpha = beta
    gamma = ws + ws.roll(N // 2)  # one-hot part: -(w_i + w_p(i)) z_p(i)
    grad, part = _run_pass2(c, z, z, a, a, lse, lse, gamma, N // 2, exclude=exclude, fixed=fixed)
    grad.mul_(wmax)  # inv_temp (WG + (WG)^T) Z
    # d_inv_temp = sum_ij w_i G_ij z_i.z_j = (1/2) sum_ij H_ij z_i.z_j - sum_i w_i z_i.z_p(i)
    d_inv_temp = 0.5 * wmax * part - (w * pos).sum()
    return (loss, grad, d_inv_temp) + tail


def clip_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    inv_temp: float,
    weights: torch.Tensor | None = None,
    compute_grad: bool = True,
    block_size: int | None = None,
    *,
    path: str | None = None,
    lse: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_lse: bool = False,
    _tile=None,
    _split=None,
    _pass1=None,
):
    r"""Two-tower (CLIP) InfoNCE on unit rows, blockwise, on the GPU (or the Triton interpreter).

    With :math:`S = \mathrm{inv\_temp}\, A B^\top`, row and column softmaxes
    :math:`P^r_{ij} = \exp(S_{ij} - \mathrm{lse}^r_i)`, :math:`P^c_{ij} = \exp(S_{ij} - \mathrm{lse}^c_j)`:

    .. math::

        \mathrm{loss}_i = \tfrac12 (\mathrm{lse}^r_i - S_{ii}) + \tfrac12 (\mathrm{lse}^c_i - S_{ii}),
        \qquad K_{ij} = \tfrac12 (w_i P^r_{ij} + w_j P^c_{ij}) - w_i \delta_{ij}

        \nabla_A = \mathrm{inv\_temp}\, K B, \qquad \nabla_B = \mathrm{inv\_temp}\, K^\top A, \qquad
        \partial/\partial\,\mathrm{inv\_temp} = \textstyle\sum_{ij} K_{ij}\, a_i \cdot b_j

    for :math:`\sum_i w_i \mathrm{loss}_i`.

    Args:
        a, b: unit rows, row i of ``a`` paired with row i of ``b``; float32, bfloat16 or float16.
        inv_temp: 1 / temperature, a positive float.
        weights: per-row weights, default ``1/N`` each.
        compute_grad: also run pass 2.
        block_size: square tile size (power of two >= 16); ``None`` autotunes.
        path: as in :func:`info_nce_triton`.
        lse: ``(lse_rows, lse_cols)`` of an earlier call (``return_lse=True``): skips pass 1.
        return_lse: append ``(lse_rows, lse_cols)`` (float32, ``(N,)`` each) to the outputs.

    Shape:
        a, b: ``(N, d)``. Returns ``(N,)``, ``(N, d)``, ``(N, d)``, ``()``.

    Returns:
        ``(loss_rows, grad_a, grad_b, d_inv_temp)``, float32; the last three ``None`` unless
        ``compute_grad``; then ``(lse_rows, lse_cols)`` when ``return_lse``.

    Raises:
        TypeError, ValueError: as :func:`info_nce_triton`, and ``a``/``b`` of different
            shape, dtype or device.
    """
    _check_rows("a", a)
    _check_rows("b", b)
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        raise ValueError(
            f"a and b must have the same shape, dtype and device, got {tuple(a.shape)} {a.dtype} {a.device} "
            f"and {tuple(b.shape)} {b.dtype} {b.device}"
        )
    inv_temp = _check_inv_temp(inv_temp)
    c = _Ctx(a, inv_temp, block_size, _tile, _split, _pass1)
    N = a.shape[0]
    a, b = a.contiguous(), b.contiguous()  # (N, d) each
    w = _weights(weights, N, a.device)
    c.c = inv_temp * _max_norm(a) * _max_norm(b)  # |S_ij| <= c
    fixed = _use_fixed(c.c, path)
    if lse is None:
        lse_r, lse_c = _run_pass1(c, a, b, sym=False, exclude=False, fixed=fixed)
    else:
        if not isinstance(lse, (tuple, list)) or len(lse) != 2:
            raise ValueError("lse must be the pair (lse_rows, lse_cols) returned with return_lse=True")
        lse_r, lse_c = (_given_lse(t, N, a.device) for t in lse)
    pos, loss = _run_finalize(c, a, b, lse_r, lse_c, 0)  # S_ii = inv_temp a_i.b_i
    tail = ((lse_r, lse_c),) if return_lse else ()
    if not compute_grad:
        return (loss, None, None, None) + tail
    ws, wmax = _scaled_weights(w)
    half = 0.5 * ws
    # K+_ij = (w_i P^r_ij + w_j P^c_ij)/2 = E_ij (w_i e^{c - lse^r_i} + w_j e^{c - lse^c_j})/2 (fixed shift c)
    ar = half * torch.exp(c.c - lse_r) if fixed else half
    ac = half * torch.exp(c.c - lse_c) if fixed else half
    grad_a, part = _run_pass2(c, a, b, ar, ac, lse_r, lse_c, ws, 0, exclude=False, fixed=fixed)  # K B
    grad_b, _ = _run_pass2(c, b, a, ac, ar, lse_c, lse_r, ws, 0, exclude=False, fixed=fixed)  # K^T A
    grad_a.mul_(wmax)
    grad_b.mul_(wmax)
    d_inv_temp = wmax * part - (w * pos).sum()  # sum_ij K_ij a_i.b_j
    return (loss, grad_a, grad_b, d_inv_temp) + tail
