"""The functional API: every objective, validated, with its analytic gradient as backward.

Conventions: embeddings are ``(N, d)``; two views are ``loss(z1, z2)``; explicit pairs are
``loss(u, v, y)`` with ``y = 1`` meaning *similar*; ``reduction`` is ``'mean' | 'sum' |
'none'``. Half-precision inputs are computed in float32 and the result cast back.
"""

from __future__ import annotations

import torch

from . import _validation as V
from ._deprecation import keyword_only, renamed_keywords
from .objectives import retrieval_loss, siglip_loss, supcon_loss  # noqa: F401  (re-exported)
from .ops import compute_dtype
from .ops.clip import clip_objective
from .ops.contrastive_loss import ContrastiveLossFn, check_loss_fits
from .ops.cosine_similarity import MapCosineFn, PackedSymCosineFn, SymCosineFn, check_symmetric, packed_dim
from .ops.engine import run as run_engine
from .ops.info_nce import info_nce_objective
from .ops.info_nce_dense import DenseInfoNCEFn
from .ops.tiles import check_block_size
from .ops.triton_glue import triton_clip_objective, triton_info_nce_objective

__all__ = [
    "contrastive_loss",
    "info_nce",
    "nt_xent",
    "clip_loss",
    "cosine_similarity",
    "supcon_loss",
    "retrieval_loss",
    "siglip_loss",
]

Temperature = float | torch.Tensor


def _reduce(per_row: torch.Tensor, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    if reduction == "mean":
        per_row = per_row.mean()
    elif reduction == "sum":
        per_row = per_row.sum()
    return per_row.to(out_dtype)


@keyword_only(3, ("margin", "reduction"))
def contrastive_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    y: torch.Tensor,
    *,
    margin: float = 1.0,
    reduction: str = "mean",
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Margin contrastive loss on Euclidean distance (Hadsell, Chopra and LeCun 2006).

    .. math::

        D_b = \lVert u_b - v_b \rVert_2, \qquad
        L_b = y_b \tfrac12 D_b^2 + (1 - y_b) \tfrac12 \max(0, m - D_b)^2

    ``y = 1`` means *similar* (as in torch and metric-learn; the DrLIM paper uses the
    opposite). Soft labels ``y`` in [0, 1] interpolate between the two terms. The backward
    is the closed form

    .. math::

        \partial L_b / \partial u_b = (u_b - v_b)\,(y_b - (1 - y_b) \max(m - D_b, 0) / D_b),
        \qquad \partial L_b / \partial v_b = -\partial L_b / \partial u_b

    At :math:`D_b = 0` the hinge term has a kink; its gradient there is the Clarke
    subgradient 0, so no input gives NaN. Gradients with respect to ``y`` are
    :math:`\tfrac12 D^2 - \tfrac12 \max(0, m - D)^2`. Derivation:
    ``docs/derivations/contrastive_loss.md``.

    Args:
        u: first embeddings of each pair.
        v: second embeddings of each pair.
        y: similarity labels in [0, 1] (1 = similar), float, int or bool.
        margin: m >= 0; dissimilar pairs farther apart than m cost nothing. Keyword-only
            (passing it positionally is deprecated: it warns and works until the next release).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'``; keyword-only, as ``margin``.
        check_finite: raise on NaN/Inf inputs (one reduction over each input) and on a
            loss that overflows the dtype (one more over the output).

    Shape:
        u, v: ``(B, d)``; y: ``(B,)``; output: scalar, or ``(B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``u``.

    Raises:
        TypeError: non-tensor or non-floating inputs.
        ValueError: shapes that do not match, an empty batch, margin < 0, y outside [0, 1],
            NaN/Inf inputs, a loss too large for the dtype (float32: a similar pair at
            D > 2.6e19); any finite D is otherwise exact.

    Examples:
        >>> import torch
        >>> from contrastive import contrastive_loss
        >>> u = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
        >>> v = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> y = torch.tensor([1.0, 0.0])   # similar pair at D = 5, dissimilar pair at D = 0.5
        >>> contrastive_loss(u, v, y, margin=1.0, reduction="none")
        tensor([12.5000,  0.1250])

    References:
        Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an Invariant Mapping.
        CVPR 2006.
    """
    V.check_tensor("u", u, 2)
    V.check_tensor("v", v, 2)
    V.check_same_shape("u", u, "v", v)
    V.check_same_device("u", u, "v", v)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of labels in [0, 1], got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != u.shape[0]:
        raise ValueError(
            f"y must have shape ({u.shape[0]},) to label each pair of u and v, got {tuple(y.shape)}"
        )
    if not y.dtype.is_floating_point:
        y = y.to(u.dtype)
    margin = V.check_margin(margin)
    V.check_reduction(reduction)
    if check_finite:
        V.check_finite("u", u)
        V.check_finite("v", v)
        V.check_finite("y", y)
    if bool(((y < 0) | (y > 1)).any()):
        raise ValueError("y must lie in [0, 1] (1 = similar, 0 = dissimilar, soft labels between)")
    per_pair = ContrastiveLossFn.apply(u, v, y, margin)
    out = _reduce(per_pair, reduction, u.dtype)
    if check_finite:
        check_loss_fits(per_pair, out)
    return out


def _check_temperature_device(temperature: Temperature, ref: torch.Tensor) -> Temperature:
    """Deprecated alias of ``contrastive._validation.check_temperature_device`` (one release)."""
    import warnings

    warnings.warn(
        "contrastive.functional._check_temperature_device is deprecated; use "
        "contrastive._validation.check_temperature_device",
        DeprecationWarning,
        stacklevel=2,
    )
    return V.check_temperature_device(temperature, ref)


BACKENDS = ("auto", "torch", "triton", "dense")


def _check_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Validate ``backend`` and resolve ``'auto'``: Triton for CUDA tensors when it is
    installed, else the torch engine (see :mod:`contrastive.kernels.dispatch`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from .kernels.dispatch import choose_backend

    return choose_backend(backend, *tensors)


def nt_xent(
    z: torch.Tensor,
    temperature: Temperature = 0.5,
    *,
    exclude_self: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
    check_finite: bool = True,
    block_size: int | None = None,
    backend: str = "auto",
    decoupled: bool = False,
) -> torch.Tensor:
    r"""InfoNCE / NT-Xent on one stacked matrix of ``N = 2B`` embeddings (lower-level form).

    Row ``i`` and row ``p(i) = (i + B) mod N`` are the two views of one sample:

    .. math::

        L_{ij} = \frac{z_i \cdot z_j}{\tau}, \qquad
        \ell_i = -\log \frac{\exp L_{i,p(i)}}{\sum_{k} [k \ne i]\, \exp L_{ik}}, \qquad
        \mathcal L = \frac1N \sum_i \ell_i

    ``exclude_self=True`` drops ``k = i`` from the denominator (SimCLR, Chen et al. 2020);
    ``exclude_self=False`` keeps it (InfoNCE, van den Oord et al. 2018). ``decoupled=True``
    also drops ``k = p(i)`` (decoupled contrastive learning, DCL: the positive is left out of
    the denominator). With ``normalize=True`` the rows are L2-normalised first, so ``L``
    holds cosine similarities. The backward is the closed form of
    ``docs/derivations/info_nce.md``

    .. math::

        \nabla_Z \mathcal L = \frac{1}{N\tau} (G + G^\top) Z, \qquad G = P - \mathrm{onehot}(p)

    chained through the normalisation, :math:`\nabla_u = (I - z z^\top) \nabla_z / \lVert u \rVert`;
    a tensor ``temperature`` that requires grad gets
    :math:`\partial \mathcal L / \partial \tau = -\sum_{ij} G_{ij} L_{ij} / (N \tau)`.
    Derivation: ``docs/derivations/info_nce.md``.

    With one pair (N = 2, ``exclude_self=True``) row i has no negative: the loss is exactly 0
    and so is its gradient (as a cross-entropy over one logit), not a rounding residue.

    Args:
        z: stacked embeddings, first half one view, second half the other.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        exclude_self: drop the self-similarity from the denominator (SimCLR).
        normalize: L2-normalise rows (cosine similarity). Zero rows are then an error.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-row losses in the order of ``z``).
        check_finite: raise on NaN/Inf inputs.
        block_size: rows per tile of the blockwise engine (``None``: 512 on CPU, 4096 on
            CUDA; autotuned for Triton, where it must be a power of two >= 16). Memory is
            O(N d + block_size^2).
        backend: ``'auto'`` (Triton kernels for CUDA tensors when Triton is installed,
            else the torch blockwise engine), ``'torch'``, ``'triton'`` (CUDA float32,
            bfloat16 or float16; CPU only under ``TRITON_INTERPRET=1``, for tests) or
            ``'dense'`` (holds the N x N logits; the reference path).
        decoupled: leave the positive out of the denominator (DCL, Yeh et al. 2022); needs
            N >= 4 when ``exclude_self`` (a row must keep a candidate). Runs on the torch
            engine (``'auto'`` picks it; ``'triton'`` and ``'dense'`` raise).

    Shape:
        z: ``(N, d)`` with N even; output: scalar, or ``(N,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``z``.

    Raises:
        TypeError, ValueError: bad types, shapes, odd N, temperature <= 0, NaN/Inf, zero rows.

    Examples:
        >>> import math, torch
        >>> from contrastive import nt_xent
        >>> z = torch.ones(8, 3)            # all embeddings equal: every logit is the same
        >>> round(nt_xent(z).item(), 6) == round(math.log(8 - 1), 6)
        True
    """
    V.check_tensor("z", z, 2)
    if z.shape[0] % 2:
        raise ValueError(
            f"z must have an even number of rows N = 2B (row i pairs with row i + B), got "
            f"N = {z.shape[0]}; stack the two views as torch.cat([z1, z2])"
        )
    temperature = V.check_temperature(temperature)
    temperature = V.check_temperature_device(temperature, z)
    V.check_reduction(reduction)
    exclude_self, normalize = V.check_bool("exclude_self", exclude_self), V.check_bool("normalize", normalize)
    if check_finite:
        V.check_finite("z", z)
    if normalize:
        V.check_nonzero_rows("z", z)
    if decoupled:
        if exclude_self and z.shape[0] < 4:
            raise ValueError(
                f"decoupled=True with exclude_self=True leaves row i no candidate when N = {z.shape[0]}; "
                f"pass at least 2 pairs (N >= 4) or exclude_self=False"
            )
        if backend in ("triton", "dense"):
            raise ValueError(
                f"decoupled=True runs on the torch engine only, got backend={backend!r}; "
                f"use backend='auto' or 'torch'"
            )
        backend = "torch"
    if exclude_self and z.shape[0] == 2:  # one pair: no negative, the loss is exactly 0
        return V.no_negatives_loss([z], temperature, 2, reduction)
    backend = _check_backend(backend, z)
    if backend == "dense":
        per_row = DenseInfoNCEFn.apply(z, temperature, bool(exclude_self), bool(normalize))
        return _reduce(per_row, reduction, z.dtype)
    if backend == "triton":
        build = triton_info_nce_objective(bool(exclude_self), block_size, z.dtype)
    else:
        bs = check_block_size(block_size, z.shape[0], z.device)
        build = info_nce_objective(bool(exclude_self), bool(decoupled), bs)
    return run_engine(build, [z], temperature, normalize=normalize, reduction=reduction)


def info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: Temperature = 0.5,
    *,
    exclude_self: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
    check_finite: bool = True,
    block_size: int | None = None,
    backend: str = "auto",
    decoupled: bool = False,
) -> torch.Tensor:
    r"""InfoNCE / NT-Xent (SimCLR) of two views: ``z1[i]`` and ``z2[i]`` are a positive pair.

    Stacks :math:`Z = [z_1; z_2]` (``N = 2B`` rows, positive ``p(i) = (i + B) mod N``) and
    computes, with cosine similarities when ``normalize=True``,

    .. math::

        \mathcal L = \frac1N \sum_{i=1}^{N} -\log
            \frac{\exp(z_i \cdot z_{p(i)} / \tau)}{\sum_k [k \ne i]\, \exp(z_i \cdot z_k / \tau)}

    The other ``2B - 2`` rows are the negatives of row ``i``. ``exclude_self=True`` is
    SimCLR's denominator (Chen et al. 2020), ``False`` keeps ``k = i`` (van den Oord et al.
    2018). The backward is
    the closed form :math:`(G + G^\top) Z / (N\tau)`, never the autograd of the forward; see
    :func:`nt_xent` for the formulas and ``docs/derivations/info_nce.md`` for the derivation
    (with why a ``1/tau^2`` gradient formula written for it is wrong and not used).

    With one pair (B = 1) there is no negative: the loss is exactly 0 and so is its gradient
    (as a cross-entropy over one logit), not a rounding residue.

    Args:
        z1: embeddings of the first view.
        z2: embeddings of the second view, row-aligned with ``z1``.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        exclude_self: drop the self-similarity from the denominator (SimCLR's default).
        normalize: L2-normalise rows (cosine similarity).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (``(2B,)``: rows of z1, then rows of z2).
        check_finite: raise on NaN/Inf inputs.
        block_size, backend: see :func:`nt_xent`. The default runs the blockwise engine,
            which never holds the N x N matrix (memory O(N d + block_size^2)).
        decoupled: decoupled contrastive learning (DCL): the positive ``z_{p(i)}`` is left
            out of the denominator, ``sum_k [k != i, k != p(i)]``; needs B >= 2.

    Shape:
        z1, z2: ``(B, d)``; output: scalar, or ``(2B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``z1``.

    Raises:
        TypeError, ValueError: bad types, shapes that differ, empty batch, temperature <= 0,
            NaN/Inf, zero rows.

    Examples:
        >>> import torch
        >>> from contrastive import info_nce
        >>> z1 = torch.eye(4)
        >>> info_nce(z1, z1, temperature=0.1) < info_nce(z1, z1.flip(0), temperature=0.1)
        tensor(True)

    References:
        Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of
        Visual Representations. ICML 2020. Oord, Li, Vinyals. Representation Learning with
        Contrastive Predictive Coding. 2018.
    """
    V.check_tensor("z1", z1, 2)
    V.check_tensor("z2", z2, 2)
    V.check_same_shape("z1", z1, "z2", z2)
    V.check_same_device("z1", z1, "z2", z2)
    if z1.dtype != z2.dtype:
        raise TypeError(f"z1 is {z1.dtype} and z2 is {z2.dtype}; cast both to one dtype")
    if check_finite:
        V.check_finite("z1", z1)
        V.check_finite("z2", z2)
    return nt_xent(
        torch.cat([z1, z2]),
        temperature,
        exclude_self=exclude_self,
        normalize=normalize,
        reduction=reduction,
        check_finite=False,
        block_size=block_size,
        backend=backend,
        decoupled=decoupled,
    )


def _dense_clip(a: torch.Tensor, b: torch.Tensor, temperature: Temperature, normalize: bool) -> torch.Tensor:
    """The two-tower loss by plain autograd over the full N x N logits (reference path)."""
    ct = compute_dtype(a.dtype)
    a, b = a.to(ct), b.to(ct)
    if normalize:
        a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True)
        b = b / torch.linalg.vector_norm(b, dim=1, keepdim=True)
    S = a @ b.T / temperature
    d = torch.diagonal(S)
    return 0.5 * (torch.logsumexp(S, 1) - d) + 0.5 * (torch.logsumexp(S, 0) - d)


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: Temperature = 0.07,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    check_finite: bool = True,
    block_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Two-tower (CLIP) contrastive loss: ``a[i]`` and ``b[i]`` are a positive pair.

    .. math::

        S_{ij} = \frac{a_i \cdot b_j}{\tau}, \qquad
        \ell_i = \tfrac12 \Big(\log\sum_j e^{S_{ij}} - S_{ii}\Big)
                + \tfrac12 \Big(\log\sum_j e^{S_{ji}} - S_{ii}\Big)

    the mean of a cross-entropy over the rows (a to b) and one over the columns (b to a),
    with cosine similarities when ``normalize=True``. Computed blockwise: the N x N matrix
    is never held (memory O(N d + block_size^2)). The backward is analytic:
    :math:`\partial \ell / \partial S = (W R + C W)/2 - W`, with ``R``, ``C`` the row and
    column softmaxes; ``grad_a = dS\, b / \tau``, ``grad_b = dS^\top a / \tau``. A tensor
    ``temperature`` that requires grad (CLIP learns it, usually as ``exp(logit_scale)``)
    gets its exact gradient. Derivation: ``docs/derivations/info_nce.md``.

    With one pair (N = 1) there is no negative: the loss is exactly 0 and so is its gradient
    (as open_clip's cross-entropy over one logit), not a rounding residue.

    Args:
        a: first tower's embeddings (e.g. images).
        b: second tower's embeddings (e.g. texts), row-aligned with ``a``.
        temperature: tau > 0, a float or a scalar tensor.
        normalize: L2-normalise rows.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-pair losses ``(N,)``).
        check_finite: raise on NaN/Inf inputs.
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA, autotuned for Triton).
        backend: ``'auto'``, ``'torch'``, ``'triton'`` (see :func:`nt_xent`) or ``'dense'``
            (plain autograd over the full logits, the reference).

    Shape:
        a, b: ``(N, d)``; output: scalar, or ``(N,)`` for ``reduction='none'``.

    Raises:
        TypeError, ValueError: bad types, shapes that differ, empty batch, temperature <= 0,
            NaN/Inf, zero rows.

    Examples:
        >>> import torch
        >>> from contrastive import clip_loss
        >>> a = torch.eye(3); b = torch.eye(3)
        >>> round(clip_loss(a, b, temperature=1.0).item(), 4)  # log(e + 2) - 1
        0.5514
    """
    V.check_tensor("a", a, 2)
    V.check_tensor("b", b, 2)
    V.check_same_shape("a", a, "b", b)
    V.check_same_device("a", a, "b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"a is {a.dtype} and b is {b.dtype}; cast both to one dtype")
    temperature = V.check_temperature_device(V.check_temperature(temperature), a)
    V.check_reduction(reduction)
    if check_finite:
        V.check_finite("a", a)
        V.check_finite("b", b)
    if V.check_bool("normalize", normalize):
        V.check_nonzero_rows("a", a)
        V.check_nonzero_rows("b", b)
    if a.shape[0] == 1:  # one pair: no negative in either direction, the loss is exactly 0
        return V.no_negatives_loss([a, b], temperature, 1, reduction)
    backend = _check_backend(backend, a, b)
    if backend == "dense":
        return _reduce(_dense_clip(a, b, temperature, normalize), reduction, a.dtype)
    if backend == "triton":
        build = triton_clip_objective(block_size, a.dtype)
    else:
        build = clip_objective(check_block_size(block_size, a.shape[0], a.device))
    return run_engine(build, [a, b], temperature, normalize=normalize, reduction=reduction)


@renamed_keywords({"x": "x1", "y": "x2"})
def cosine_similarity(
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    M: torch.Tensor | None = None,
    A: torch.Tensor | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Cosine similarity of pairs, plain, under a linear map ``M`` or a symmetric matrix ``A``.

    .. math::

        \mathrm{sim}(x, y, M) = \frac{Mx \cdot My}{\lVert Mx \rVert\, \lVert My \rVert}, \qquad
        \mathrm{sim}(x, y, A) = \frac{y^\top A x}{\sqrt{x^\top A x \; y^\top A y}}

    with ``x`` a row of ``x1`` and ``y`` the same row of ``x2`` (the argument names of
    :func:`torch.nn.functional.cosine_similarity`).

    With :math:`A = M^\top M` the two agree. The backward is CSML's (Nguyen and Bai 2010):
    for ``M``,
    :math:`\partial\,\mathrm{sim} / \partial M_{ij} = [(x_j w_i + v_i y_j) nm - l (x_j v_i m + n y_j w_i)] / (nm)^{3/2}`
    with ``v = Mx, w = My, n = v.v, m = w.w, l = v.w``. ``A`` may be a full ``(d, d)``
    matrix (every entry its own parameter:
    :math:`(2 y_i x_j nm - lm x_i x_j - ln y_i y_j) / (2 (nm)^{3/2})`) or its ``d(d+1)/2``
    upper-triangular entries, row-major, whose gradient is the tied form
    (off-diagonal entries get both terms, diagonal entries one). Derivation and the errata
    of the notes it was written from: ``docs/derivations/cosine_similarity.md``.

    Args:
        x1: first items of the pairs (``x`` in the formulas; ``x=`` is a deprecated keyword
            that warns and works until the next release).
        x2: second items of the pairs (``y`` in the formulas; ``y=`` deprecated likewise).
        M: optional map ``(k, d)``.
        A: optional symmetric matrix ``(d, d)`` or packed upper triangle ``(d(d+1)/2,)``;
            ``x^T A x`` must be positive (project ``A`` onto the PSD cone, or use ``M``).
        check_finite: raise on NaN/Inf inputs.

    Shape:
        x1, x2: ``(B, d)``; output ``(B,)``.

    Raises:
        ValueError: both ``M`` and ``A``, shapes, NaN/Inf, a zero-norm ``Mx``, a ``(d, d)``
            ``A`` that is not symmetric, and ``x^T A x <= 0`` (the fix:
            ``CosineMetric.project_psd()`` or the map form). Rows, ``M`` and ``A`` of any
            finite scale are exact (the op rescales by powers of two).

    Examples:
        >>> import torch
        >>> from contrastive import cosine_similarity
        >>> x1 = torch.tensor([[1.0, 0.0]]); x2 = torch.tensor([[1.0, 1.0]])
        >>> cosine_similarity(x1, x2)
        tensor([0.7071])
        >>> cosine_similarity(x1, x2, A=torch.diag(torch.tensor([4.0, 1.0])))  # 4 / sqrt(4 * 5)
        tensor([0.8944])
    """
    V.check_tensor("x1", x1, 2)
    V.check_tensor("x2", x2, 2)
    V.check_same_shape("x1", x1, "x2", x2)
    V.check_same_device("x1", x1, "x2", x2)
    if M is not None and A is not None:
        raise ValueError("pass M (a linear map) or A (a symmetric matrix), not both")
    d = x1.shape[1]
    if check_finite:
        V.check_finite("x1", x1)
        V.check_finite("x2", x2)
    if A is None:
        if M is None:
            M = torch.eye(d, dtype=x1.dtype, device=x1.device)
        V.check_tensor("M", M, 2)
        if M.shape[1] != d:
            raise ValueError(f"M must have shape (k, {d}) to map {d}-dimensional rows, got {tuple(M.shape)}")
        if check_finite:
            V.check_finite("M", M)
        return MapCosineFn.apply(x1, x2, M).to(x1.dtype)
    if not isinstance(A, torch.Tensor) or not A.dtype.is_floating_point:
        raise TypeError("A must be a floating torch.Tensor, (d, d) or packed (d(d+1)/2,)")
    if A.dim() == 1:
        if packed_dim(A.shape[0]) != d:
            raise ValueError(f"packed A has {A.shape[0]} entries; for d = {d} it needs {d * (d + 1) // 2}")
        fn: type[PackedSymCosineFn | SymCosineFn] = PackedSymCosineFn
    elif A.dim() == 2 and tuple(A.shape) == (d, d):
        fn = SymCosineFn
    else:
        raise ValueError(f"A must have shape ({d}, {d}) or ({d * (d + 1) // 2},), got {tuple(A.shape)}")
    if check_finite:
        V.check_finite("A", A)
    if fn is SymCosineFn:
        check_symmetric(A)
    # the op checks M x != 0 and x^T A x > 0 on its rescaled copies (exact for any scale)
    return fn.apply(x1, x2, A).to(x1.dtype)
