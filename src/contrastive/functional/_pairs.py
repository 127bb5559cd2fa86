"""The pair losses: the margin contrastive loss on Euclidean distance (Hadsell, Chopra and
LeCun 2006) and cosine similarity under a learned map or matrix (CSML, Nguyen and Bai 2010),
both on explicit pairs ``(x1, x2)``; re-exported by :mod:`contrastive.functional`."""

from __future__ import annotations

import torch

from ..ops import validation as V
from ..ops.common import reduce_rows
from ..ops.contrastive_loss import ContrastiveLossFn, check_loss_fits
from ..ops.cosine_similarity import MapCosineFn, PackedSymCosineFn, SymCosineFn, check_symmetric, packed_dim


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
        margin: m >= 0; dissimilar pairs farther apart than m cost nothing (keyword-only).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (keyword-only).
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
    out = reduce_rows(per_pair, reduction, u.dtype)
    if check_finite:
        check_loss_fits(per_pair, out)
    return out


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
        x1: first items of the pairs (``x`` in the formulas).
        x2: second items of the pairs (``y`` in the formulas).
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
