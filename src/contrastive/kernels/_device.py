"""Triton device code of the blockwise InfoNCE engine (pass 1, finalize, pass 2).

Host code (:mod:`contrastive.kernels.host`, through ``_launch.py``) loads this file at most twice, once with
``TRITON_INTERPRET=1`` (CPU tensors, tests) and once without (CUDA), so that the two kinds
of kernel never mix. Everything here works in base 2: with ``inv_temp2 = inv_temp * log2(e)``
(the reciprocal temperature in base 2) a logit is ``s2 = inv_temp2 * (x_i . y_j)`` and
``exp(s - m) = exp2(s2 - m2)``; ``c2 = c * log2(e)``.

Notation shared by all kernels (``X`` rows, ``Y`` columns, both ``(N, D)``):

    S_ij = inv_temp * x_i . y_j                        logits, |S_ij| <= c = inv_temp max|x| max|y|
    pass 1 fixed shift c:                               r_i = sum_j exp(S_ij - c),  lse_i = log r_i + c
    pass 1 online max (tiny temperatures):              m_i = max_j S_ij, l_i = sum_j exp(S_ij - m_i)
    pass 2 (gradient products, one row block each):    acc_i = sum_j H_ij y_j
        H_ij = alpha_i exp(S_ij - lx_i) + beta_j exp(S_ij - ly_j)     (online max)
             = exp(S_ij - c) (alpha'_i + beta'_j)                     (fixed shift: one exponential)

The single tower (``X = Y = Z``) gets ``H = WP + (WP)^T`` and the two-tower form (CLIP)
``H = (W P_row + (W P_col^T)^T) / 2`` from the same pass-2 kernel by the choice of
``alpha``, ``beta``, ``lx``, ``ly``; the host module has the algebra. The atomic pass 1
uses square ``BLOCK x BLOCK`` tiles (the upper triangle of a symmetric S), the row-block
kernels ``BLOCK_M x BLOCK_N`` tiles; the mask of S_ii is paid only in the column blocks
that meet the diagonal.

Nothing here allocates an ``N x N`` array: a program holds one tile of ``S`` at a time,
plus a ``BLOCK_M x BLOCK_DV`` float32 gradient accumulator in pass 2.
"""

try:
    import triton
    import triton.language as tl
except ImportError:  # keeps the module importable (doctest collection) where Triton is absent

    class _NoTriton:
        constexpr = object

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _NoTriton()


# The standard-library reductions (tl.sum, tl.max) and tl.cdiv are themselves @triton.jit
# functions, compiled or interpreted according to TRITON_INTERPRET when triton.language was
# first imported; these local versions follow the flavour of this module instead, so that
# interpreted and compiled kernels can live in one process.
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _rsum(x, axis):
    return tl.reduce(x, axis, _add)


@triton.jit
def _rmax(x, axis):
    return tl.reduce(x, axis, _maximum)


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PREC: tl.constexpr):
    """acc + a @ b in float32.

    ``UPCAST``: the Triton interpreter stores bfloat16 as uint16 and multiplies the bit
    patterns in ``tl.dot`` (triton-lang/triton#11584; the interpreter supports no bfloat16
    arithmetic); upcasting to float32 first gives the exact product of the bfloat16 values.
    Set only under the interpreter.
    """
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _load_rows(ptr, rows, rmask, k0, D: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows ``rows`` and columns ``[k0, k0 + BLOCK_K)`` of a contiguous (N, D) matrix, zero-padded."""
    offs = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    ptrs = ptr + rows.to(tl.int64)[:, None] * D + offs[None, :]  # (R, BLOCK_K)
    if D % BLOCK_K == 0:
        return tl.load(ptrs, mask=rmask[:, None], other=0.0)
    else:
        return tl.load(ptrs, mask=rmask[:, None] & (offs[None, :] < D), other=0.0)


@triton.jit
def _scores_multi_k(
    x_ptr,
    y_ptr,
    rows,
    rmask,
    cols,
    cmask,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
):
    """x_I . y_J for all pairs of a tile, reducing over D in chunks of BLOCK_K.  (BLOCK_M, BLOCK_N) fp32."""
    s = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in tl.range(0, D, BLOCK_K):
        x = _load_rows(x_ptr, rows, rmask, k0, D, BLOCK_K)  # (BLOCK, BLOCK_K)
        y = _load_rows(y_ptr, cols, cmask, k0, D, BLOCK_K)  # (BLOCK, BLOCK_K)
        s = _dot(x, tl.trans(y), s, UPCAST, PREC)
    return s


# --------------------------------------------------------------------------------------
# Pass 1, fixed shift, with atomics: r_row[i] += sum_j E_ij, r_col[j] += sum_i E_ij.
# --------------------------------------------------------------------------------------
@triton.jit
def p1_sums_kernel(
    x_ptr,
    y_ptr,
    rrow_ptr,
    rcol_ptr,
    N,
    inv_temp2,
    c2,
    N_BUCKET,
    D: tl.constexpr,
    SYM: tl.constexpr,
    EXCLUDE: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Row and column sums of E = exp(S - c) (fixed shift c >= max |S|), accumulated atomically.

    ``SYM`` (single tower, ``Y = X``, ``rcol_ptr = rrow_ptr``): S is symmetric, so only the
    tiles ``J >= I`` are computed; tile (I, J > I) adds its row sums to r_I and its column
    sums to r_J, which are the row sums of the mirrored tile (J, I). The diagonal tile adds
    only its row sums (it is its own mirror), with ``E_ii = 0`` when ``EXCLUDE``.
    Not ``SYM`` (two-tower): every tile, row sums to ``rrow`` and column sums to ``rcol``.

    Grid ``(cdiv(N, BLOCK), SPLIT)``: program (I, k) visits column blocks k, k + SPLIT, ...
    (from I + 1 + k when ``SYM``). ``N_BUCKET`` is unused here: it keys the autotuner.
    """
    pid = tl.program_id(0)
    k = tl.program_id(1)
    split = tl.num_programs(1)
    nb = (N + BLOCK - 1) // BLOCK
    SINGLE_K: tl.constexpr = BLOCK_K >= D
    offs = tl.arange(0, BLOCK)
    rows = pid * BLOCK + offs  # (BLOCK,)
    rmask = rows < N
    if SINGLE_K:
        x_tile = _load_rows(x_ptr, rows, rmask, 0, D, BLOCK_K)  # (BLOCK, BLOCK_K), kept
    racc = tl.full((BLOCK,), 0.0, dtype=tl.float32)  # partial r_I
    if SYM:
        if k == 0:
            # diagonal tile: E = exp2(s2 - c2), columns past N and (if EXCLUDE) i == j masked
            if SINGLE_K:
                s = _dot(
                    x_tile, tl.trans(x_tile), tl.full((BLOCK, BLOCK), 0.0, dtype=tl.float32), UPCAST, PREC
                )
            else:
                s = _scores_multi_k(
                    x_ptr, x_ptr, rows, rmask, rows, rmask, D, BLOCK, BLOCK, BLOCK_K, UPCAST, PREC
                )
            s2_shifted = s * inv_temp2 + tl.where(rmask, -c2, float("-inf"))[None, :]
            if EXCLUDE:
                s2_shifted = tl.where(offs[:, None] == offs[None, :], float("-inf"), s2_shifted)
            racc += _rsum(tl.exp2(s2_shifted), axis=1)
        jstart = pid + 1 + k
    else:
        jstart = k
        rbias = tl.where(rmask, 0.0, float("-inf"))  # rows past N add nothing to r_col
    for jb in tl.range(jstart, nb, split):
        cols = jb * BLOCK + offs
        cmask = cols < N
        if SINGLE_K:
            y = _load_rows(y_ptr, cols, cmask, 0, D, BLOCK_K)
            s = _dot(x_tile, tl.trans(y), tl.full((BLOCK, BLOCK), 0.0, dtype=tl.float32), UPCAST, PREC)
        else:
            s = _scores_multi_k(
                x_ptr, y_ptr, rows, rmask, cols, cmask, D, BLOCK, BLOCK, BLOCK_K, UPCAST, PREC
            )
        s2_shifted = (
            s * inv_temp2 + tl.where(cmask, -c2, float("-inf"))[None, :]
        )  # s2 - c2, columns past N -> -inf
        if not SYM:
            s2_shifted += rbias[:, None]
        e = tl.exp2(s2_shifted)  # E_IJ = exp(S_IJ - c)
        racc += _rsum(e, axis=1)
        tl.atomic_add(rcol_ptr + cols, _rsum(e, axis=0), mask=cmask, sem="relaxed")
    tl.atomic_add(rrow_ptr + rows, racc, mask=rmask, sem="relaxed")


# --------------------------------------------------------------------------------------
# Pass 1, one program per row block (no atomics): partial lse per column split.
# --------------------------------------------------------------------------------------
@triton.jit
def _diag_blocks(pid, nbn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Column blocks [lo, hi) that meet the diagonal entries of row block ``pid``."""
    lo = (pid * BLOCK_M) // BLOCK_N
    hi = tl.minimum(((pid + 1) * BLOCK_M - 1) // BLOCK_N + 1, nbn)
    return lo, hi


@triton.jit
def _p1_row_tile(
    m,
    l,
    x_tile,
    x_ptr,
    y_ptr,
    rows,
    rmask,
    jb,
    N,
    inv_temp2,
    c2,
    D: tl.constexpr,
    FIXED: tl.constexpr,
    DIAG: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    cols = jb * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    cmask = cols < N
    if BLOCK_K >= D:
        y = _load_rows(y_ptr, cols, cmask, 0, D, BLOCK_K)  # (BLOCK_N, BLOCK_K)
        s = _dot(x_tile, tl.trans(y), tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32), UPCAST, PREC)
    else:
        s = _scores_multi_k(
            x_ptr, y_ptr, rows, rmask, cols, cmask, D, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PREC
        )
    s2 = s * inv_temp2 + tl.where(cmask, 0.0, float("-inf"))[None, :]  # s2, columns past N -> -inf
    if DIAG:
        s2 = tl.where(rows[:, None] == cols[None, :], float("-inf"), s2)  # self excluded
    if FIXED:
        l += _rsum(tl.exp2(s2 - c2), axis=1)  # r_i += sum_j exp(S_ij - c)
    else:
        # online max; m_safe keeps exp2 finite while a row has seen only masked entries
        m_new = tl.maximum(m, _rmax(s2, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_safe) + _rsum(tl.exp2(s2 - m_safe[:, None]), axis=1)
        m = m_new
    return m, l


@triton.jit
def p1_rows_kernel(
    x_ptr,
    y_ptr,
    lse_ptr,
    N,
    inv_temp2,
    c2,
    N_BUCKET,
    D: tl.constexpr,
    FIXED: tl.constexpr,
    EXCLUDE: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Partial log-sum-exp of the rows of S over a contiguous range of column blocks.

    Grid ``(cdiv(N, BLOCK_M), SPLIT)``; program (I, k) covers column blocks
    ``[k nbn / SPLIT, (k + 1) nbn / SPLIT)`` (``nbn = cdiv(N, BLOCK_N)``) and writes
    ``lse_ptr[k, I]`` (natural log, -inf for an empty range); the host combines the SPLIT
    partials with a logsumexp. ``FIXED``: sum of exp(S - c) (the deterministic
    stand-in for ``p1_sums_kernel``); otherwise an online max, valid at any temperature.
    ``EXCLUDE`` drops S_ii; only the column blocks that meet the diagonal pay for the mask.
    """
    pid = tl.program_id(0)
    k = tl.program_id(1)
    split = tl.num_programs(1)
    nbn = (N + BLOCK_N - 1) // BLOCK_N
    jlo = (k * nbn) // split
    jhi = ((k + 1) * nbn) // split
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    rmask = rows < N
    if BLOCK_K >= D:
        x_tile = _load_rows(x_ptr, rows, rmask, 0, D, BLOCK_K)  # (BLOCK_M, BLOCK_K), kept
    else:
        x_tile = 0
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)  # running max (base 2)
    l = tl.full((BLOCK_M,), 0.0, dtype=tl.float32)  # running sum
    if EXCLUDE:
        dlo, dhi = _diag_blocks(pid, nbn, BLOCK_M, BLOCK_N)
        for jb in tl.range(jlo, tl.minimum(jhi, dlo)):
            m, l = _p1_row_tile(
                m,
                l,
                x_tile,
                x_ptr,
                y_ptr,
                rows,
                rmask,
                jb,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                False,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
        for jb in tl.range(tl.maximum(jlo, dlo), tl.minimum(jhi, dhi)):
            m, l = _p1_row_tile(
                m,
                l,
                x_tile,
                x_ptr,
                y_ptr,
                rows,
                rmask,
                jb,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                True,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
        for jb in tl.range(tl.maximum(jlo, dhi), jhi):
            m, l = _p1_row_tile(
                m,
                l,
                x_tile,
                x_ptr,
                y_ptr,
                rows,
                rmask,
                jb,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                False,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
    else:
        for jb in tl.range(jlo, jhi):
            m, l = _p1_row_tile(
                m,
                l,
                x_tile,
                x_ptr,
                y_ptr,
                rows,
                rmask,
                jb,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                False,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
    if FIXED:
        lse2 = c2 + tl.log2(l)
    else:
        lse2 = m + tl.log2(l)
    tl.store(lse_ptr + k * N + rows, lse2 * 0.6931471805599453, mask=rmask)  # ln 2: back to natural log


# --------------------------------------------------------------------------------------
# Positives and per-row losses.
# --------------------------------------------------------------------------------------
@triton.jit
def finalize_kernel(
    x_ptr,
    y_ptr,
    lse_row_ptr,
    lse_col_ptr,
    pos_ptr,
    loss_ptr,
    N,
    inv_temp,
    QSHIFT,
    D: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """pos_i = x_i . y_q(i), q(i) = (i + QSHIFT) mod N; loss_i = (lse_row_i + lse_col_i)/2 - inv_temp pos_i."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < N
    q = (rows + QSHIFT) % N  # positive of row i
    pos = tl.full((BLOCK,), 0.0, dtype=tl.float32)
    for k0 in tl.range(0, D, BLOCK_K):
        x = _load_rows(x_ptr, rows, rmask, k0, D, BLOCK_K).to(tl.float32)
        y = _load_rows(y_ptr, q, rmask, k0, D, BLOCK_K).to(tl.float32)
        pos += _rsum(x * y, axis=1)
    lr = tl.load(lse_row_ptr + rows, mask=rmask, other=0.0)
    lc = tl.load(lse_col_ptr + rows, mask=rmask, other=0.0)
    tl.store(pos_ptr + rows, pos, mask=rmask)
    tl.store(loss_ptr + rows, 0.5 * (lr + lc) - inv_temp * pos, mask=rmask)


# --------------------------------------------------------------------------------------
# Pass 2: acc_I = sum_J H_IJ Y_J, one program per (row block, D chunk, column split).
# --------------------------------------------------------------------------------------
@triton.jit
def _p2_tile(
    acc,
    x_tile,
    alpha_i,
    lx_i,
    x_ptr,
    y_ptr,
    beta_ptr,
    ly_ptr,
    rows,
    rmask,
    jb,
    dv0,
    N,
    inv_temp2,
    c2,
    D: tl.constexpr,
    FIXED: tl.constexpr,
    DIAG: tl.constexpr,
    REUSE_Y: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    cols = jb * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    cmask = cols < N
    if BLOCK_K >= D:
        y = _load_rows(y_ptr, cols, cmask, 0, D, BLOCK_K)  # (BLOCK_N, BLOCK_K)
        s = _dot(x_tile, tl.trans(y), tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32), UPCAST, PREC)
    else:
        s = _scores_multi_k(
            x_ptr, y_ptr, rows, rmask, cols, cmask, D, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PREC
        )
    s2 = s * inv_temp2  # S_IJ in base 2
    beta_j = tl.load(beta_ptr + cols, mask=cmask, other=0.0)  # (BLOCK_N,)
    if FIXED:
        # H_IJ = E_IJ (alpha_I + beta_J), E = exp(S - c): one exponential per entry
        h = tl.exp2(s2 - c2) * (alpha_i[:, None] + beta_j[None, :])
    else:
        # H_IJ = alpha_I exp(S - lx_I) + beta_J exp(S - ly_J): each term bounded by its weight
        ly_j = tl.load(ly_ptr + cols, mask=cmask, other=float("inf"))
        h = alpha_i[:, None] * tl.exp2(s2 - lx_i[:, None]) + beta_j[None, :] * tl.exp2(s2 - ly_j[None, :])
    if DIAG:
        h = tl.where(rows[:, None] == cols[None, :], 0.0, h)  # P_ii = 0 when self is excluded
    # columns past N: their y rows are zero-padded, so whatever h holds there adds nothing
    if REUSE_Y:
        yv = y
    else:
        yv = _load_rows(y_ptr, cols, cmask, dv0, D, BLOCK_DV)  # (BLOCK_N, BLOCK_DV)
    return _dot(h.to(yv.dtype), yv, acc, UPCAST, PREC)  # acc_I += H_IJ Y_J


@triton.jit
def p2_rows_kernel(
    x_ptr,
    y_ptr,
    alpha_ptr,
    beta_ptr,
    lx_ptr,
    ly_ptr,
    gamma_ptr,
    grad_ptr,
    dinv_ptr,
    N,
    inv_temp2,
    c2,
    out_scale,
    QSHIFT,
    N_BUCKET,
    D: tl.constexpr,
    FIXED: tl.constexpr,
    EXCLUDE: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Gradient rows: grad_I = out_scale * (sum_J H_IJ Y_J - gamma_I y_q(I)), no atomics.

    Grid ``(cdiv(N, BLOCK_M), cdiv(D, BLOCK_DV), SPLIT)``. Program (I, v, k) covers column
    blocks ``[k nbn / SPLIT, (k + 1) nbn / SPLIT)`` and output columns
    ``[v BLOCK_DV, (v + 1) BLOCK_DV)``; it writes ``grad_ptr[k]`` (an (N, D) float32 slice;
    the host sums the SPLIT slices) and ``dinv_ptr[(k nbm + I) n_dv + v] = sum_i x_i . acc_i``
    over its rows and D chunk, from which the host gets d(loss)/d(inv_temp). The one-hot
    term ``- gamma_i y_q(i)`` (q(i) = (i + QSHIFT) mod N) is added by split k = 0 only.
    ``lx_ptr``/``ly_ptr`` (log2-domain lse of rows/columns) are read only when not ``FIXED``.
    """
    pid = tl.program_id(0)
    pid_dv = tl.program_id(1)
    k = tl.program_id(2)
    nbm = tl.num_programs(0)
    n_dv = tl.num_programs(1)
    split = tl.num_programs(2)
    nbn = (N + BLOCK_N - 1) // BLOCK_N
    jlo = (k * nbn) // split
    jhi = ((k + 1) * nbn) // split
    REUSE_Y: tl.constexpr = (BLOCK_K >= D) & (BLOCK_DV == BLOCK_K)
    dv0 = pid_dv * BLOCK_DV
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    rmask = rows < N
    if BLOCK_K >= D:
        x_tile = _load_rows(x_ptr, rows, rmask, 0, D, BLOCK_K)  # (BLOCK_M, BLOCK_K), kept
    else:
        x_tile = 0
    alpha_i = tl.load(alpha_ptr + rows, mask=rmask, other=0.0)
    if FIXED:
        lx_i = alpha_i  # unused
    else:
        lx_i = tl.load(lx_ptr + rows, mask=rmask, other=float("inf"))
    acc = tl.full((BLOCK_M, BLOCK_DV), 0.0, dtype=tl.float32)  # sum_J H_IJ Y_J[:, chunk]
    if EXCLUDE:
        dlo, dhi = _diag_blocks(pid, nbn, BLOCK_M, BLOCK_N)
        for jb in tl.range(jlo, tl.minimum(jhi, dlo)):
            acc = _p2_tile(
                acc,
                x_tile,
                alpha_i,
                lx_i,
                x_ptr,
                y_ptr,
                beta_ptr,
                ly_ptr,
                rows,
                rmask,
                jb,
                dv0,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                False,
                REUSE_Y,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
                BLOCK_DV,
            )
        for jb in tl.range(tl.maximum(jlo, dlo), tl.minimum(jhi, dhi)):
            acc = _p2_tile(
                acc,
                x_tile,
                alpha_i,
                lx_i,
                x_ptr,
                y_ptr,
                beta_ptr,
                ly_ptr,
                rows,
                rmask,
                jb,
                dv0,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                True,
                REUSE_Y,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
                BLOCK_DV,
            )
        for jb in tl.range(tl.maximum(jlo, dhi), jhi):
            acc = _p2_tile(
                acc,
                x_tile,
                alpha_i,
                lx_i,
                x_ptr,
                y_ptr,
                beta_ptr,
                ly_ptr,
                rows,
                rmask,
                jb,
                dv0,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                False,
                REUSE_Y,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
                BLOCK_DV,
            )
    else:
        for jb in tl.range(jlo, jhi):
            acc = _p2_tile(
                acc,
                x_tile,
                alpha_i,
                lx_i,
                x_ptr,
                y_ptr,
                beta_ptr,
                ly_ptr,
                rows,
                rmask,
                jb,
                dv0,
                N,
                inv_temp2,
                c2,
                D,
                FIXED,
                False,
                REUSE_Y,
                UPCAST,
                PREC,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
                BLOCK_DV,
            )
    # dinv partial: sum_ij H_ij x_i . y_j = sum_i x_i . acc_i (before the one-hot term)
    xv = _load_rows(x_ptr, rows, rmask, dv0, D, BLOCK_DV).to(tl.float32)
    tl.store(dinv_ptr + (k * nbm + pid) * n_dv + pid_dv, _rsum(_rsum(xv * acc, axis=1), axis=0))
    if k == 0:
        q = (rows + QSHIFT) % N
        gamma_i = tl.load(gamma_ptr + rows, mask=rmask, other=0.0)
        yq = _load_rows(y_ptr, q, rmask, dv0, D, BLOCK_DV).to(tl.float32)
        acc -= gamma_i[:, None] * yq  # one-hot part of G
    offs_dv = dv0 + tl.arange(0, BLOCK_DV)
    gptrs = grad_ptr + k.to(tl.int64) * N * D + rows.to(tl.int64)[:, None] * D + offs_dv[None, :]
    tl.store(gptrs, acc * out_scale, mask=rmask[:, None] & (offs_dv[None, :] < D))
