"""The functional API, the one public home of every loss function: the margin contrastive
loss, InfoNCE / NT-Xent, the two-tower (CLIP) loss, cosine similarity, supervised
contrastive, retrieval with hard negatives and SigLIP, each validated, with its analytic
gradient as backward. The blockwise objectives run on the engine contract of
:mod:`contrastive.ops.engine` (O(N d + block_size^2) memory, no N x N tensor); their
global-batch forms are in :mod:`contrastive.distributed`.

Conventions: embeddings are ``(N, d)``; two views are ``loss(z1, z2)``; explicit pairs are
``loss(u, v, y)`` with ``y = 1`` meaning *similar*; ``reduction`` is ``'mean' | 'sum' |
'none'``. Half-precision inputs are computed in float32 and the result cast back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .ops import validation as V
from .ops.common import Temperature, no_negatives_loss, reduce_rows
from .ops.contrastive_loss import ContrastiveLossFn, check_loss_fits
from .ops.cosine_similarity import MapCosineFn, PackedSymCosineFn, SymCosineFn, check_symmetric, packed_dim
from .ops.engine import run as run_engine
from .ops.hcl_objectives import hcl_clip_objective, hcl_info_nce_objective
from .ops.info_nce import info_nce_objective
from .ops.info_nce_dense import DenseInfoNCEFn, dense_clip
from .ops.matryoshka import Prefixes
from .ops.matryoshka_objectives import matryoshka_objective, matryoshka_siglip_objective
from .ops.retrieval import clip_objective, retrieval_objective
from .ops.retrieval_features import retrieval_features_objective
from .ops.siglip import siglip_objective
from .ops.supcon import supcon_objective
from .ops.tiles import check_block_size
from .ops.triton_glue import triton_clip_objective, triton_info_nce_objective
from .ops.validation import check_backend, check_common, check_pair, engine_backend

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
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    matryoshka_dims: tuple[int, ...] | list[int] | None = None,
    matryoshka_weights: tuple[float, ...] | list[float] | None = None,
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
        hcl_beta: Robinson et al. 2021's hard-negative estimator (``None``: off; beta >= 0):
            row i's n_i negatives (every row but itself and its positive) weighted by
            ``exp(beta s / tau)`` over their mean (not detached), ``Ng_i = (sum imp e^{s/tau}
            - tau+ n_i e^{l_i}) / (1 - tau+)`` clamped at ``n_i e^{-1/tau}``, and
            ``loss_i = -log(e^{l_i} / (e^{l_i} + Ng_i))`` (the authors' reference code). Runs
            on the torch engine; refused with ``decoupled``. A learnable temperature gets the
            clamp floor's derivative too.
        hcl_tau_plus: tau+ in [0, 1), the debiasing class prior (only with ``hcl_beta``).
        matryoshka_dims: prefix dimensions ``(d_1, ..., d_K)`` in any order (e.g. ``(768, 512,
            256, 128, 64)``): the loss becomes ``sum_k w_k L(z[:, :d_k])``, each prefix
            L2-normalised on its own (Kusupati et al. 2022; sentence-transformers'
            ``MatryoshkaLoss``), every prefix in one walk over the tiles (the GEMM work of the
            widest prefix once). ``None``: off. Needs ``normalize=True`` and the torch engine.
        matryoshka_weights: one weight per dim (``None``: ones); a repeated dim's weights add.

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
    prefixes = V.check_matryoshka(matryoshka_dims, matryoshka_weights, z.shape[1], normalize)
    V.check_prefix_rows("z", z, prefixes)
    if prefixes is not None:
        if backend in ("triton", "dense"):
            raise ValueError(
                f"matryoshka_dims runs on the torch engine only, got backend={backend!r}; "
                f"use backend='auto' or 'torch'"
            )
        backend = "torch"
    hcl = V.check_hcl(hcl_beta, hcl_tau_plus)
    if hcl is not None:
        if prefixes is not None:
            raise ValueError("hcl_beta and matryoshka_dims do not combine yet; drop one of them")
        V.check_hcl_engine("nt_xent", backend, decoupled, z.shape[0] - (2 if exclude_self else 1))
        bs = check_block_size(block_size, z.shape[0], z.device)
        build = hcl_info_nce_objective(bool(exclude_self), hcl[0], hcl[1], bs)
        return run_engine(build, [z], temperature, normalize=normalize, reduction=reduction)
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
        return no_negatives_loss([z], temperature, 2, reduction)
    backend = check_backend(backend, z)
    if backend == "dense":
        per_row = DenseInfoNCEFn.apply(z, temperature, bool(exclude_self), bool(normalize))
        return reduce_rows(per_row, reduction, z.dtype)
    if backend == "triton":
        build = triton_info_nce_objective(bool(exclude_self), block_size, z.dtype)
    else:
        bs = check_block_size(block_size, z.shape[0], z.device)
        build = matryoshka_objective(info_nce_objective(bool(exclude_self), bool(decoupled), bs), prefixes)
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
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    matryoshka_dims: tuple[int, ...] | list[int] | None = None,
    matryoshka_weights: tuple[float, ...] | list[float] | None = None,
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
        hcl_beta, hcl_tau_plus: Robinson et al.'s estimator, see :func:`nt_xent`; for two
            views it equals the authors' ``criterion``.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, see :func:`nt_xent`.

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
        hcl_beta=hcl_beta,
        hcl_tau_plus=hcl_tau_plus,
        matryoshka_dims=matryoshka_dims,
        matryoshka_weights=matryoshka_weights,
    )


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
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    matryoshka_dims: tuple[int, ...] | list[int] | None = None,
    matryoshka_weights: tuple[float, ...] | list[float] | None = None,
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
        hcl_beta, hcl_tau_plus: Robinson et al.'s estimator (see :func:`nt_xent`) in each
            direction, a_i's negatives the b_j and b_i's the a_j (j != i), n_i = N - 1, the two
            averaged.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes (``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]``, normalised on its own), see :func:`nt_xent`.

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
    prefixes = V.check_matryoshka(matryoshka_dims, matryoshka_weights, a.shape[1], normalize)
    if prefixes is not None:
        V.check_prefix_rows("a", a, prefixes)
        V.check_prefix_rows("b", b, prefixes)
        if backend in ("triton", "dense"):
            raise ValueError(
                f"matryoshka_dims runs on the torch engine only, got backend={backend!r}; "
                f"use backend='auto' or 'torch'"
            )
        backend = "torch"
    hcl = V.check_hcl(hcl_beta, hcl_tau_plus)
    if hcl is not None:
        if prefixes is not None:
            raise ValueError("hcl_beta and matryoshka_dims do not combine yet; drop one of them")
        V.check_hcl_engine("clip_loss", backend, False, a.shape[0] - 1)
        build = hcl_clip_objective(hcl[0], hcl[1], check_block_size(block_size, a.shape[0], a.device))
        return run_engine(build, [a, b], temperature, normalize=normalize, reduction=reduction)
    if a.shape[0] == 1:  # one pair: no negative in either direction, the loss is exactly 0
        return no_negatives_loss([a, b], temperature, 1, reduction)
    backend = check_backend(backend, a, b)
    if backend == "dense":
        return reduce_rows(dense_clip(a, b, temperature, normalize), reduction, a.dtype)
    if backend == "triton":
        build = triton_clip_objective(block_size, a.dtype)
    else:
        build = matryoshka_objective(
            clip_objective(check_block_size(block_size, a.shape[0], a.device)), prefixes
        )
    return run_engine(build, [a, b], temperature, normalize=normalize, reduction=reduction)


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


def _prefixes(
    names: Sequence[str], tensors: Sequence[torch.Tensor], dims: Any, weights: Any, normalize: bool
) -> Prefixes | None:
    """The validated Matryoshka prefixes (``None``: off), every input's prefixes checked."""
    prefixes = V.check_matryoshka(dims, weights, tensors[0].shape[-1], normalize)
    for n, t in zip(names, tensors):
        V.check_prefix_rows(n, t, prefixes)
    return prefixes


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: Temperature = 0.1,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Supervised contrastive loss (Khosla et al. 2020, the "outside" form): every other row
    with the same label is a positive.

    .. math::

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \ne i} \exp(z_i \cdot z_a / \tau)},
        \qquad P(i) = \{p \ne i : y_p = y_i\}

    Rows without a positive contribute nothing: ``'mean'`` averages over the rows that have
    one (as pytorch-metric-learning does; 0 when none has), ``'none'`` gives 0 there. With two
    views per sample and distinct labels per sample it is NT-Xent. The positives cost O(N d):
    :math:`\sum_{p \in P(i)} z_i \cdot z_p = z_i \cdot (c_{y_i} - z_i)` with :math:`c_y` the
    class sums, and the gradient's positive part is a class sum too; the denominator runs on
    the blockwise engine, so no N x N matrix or mask is ever held. The analytic gradient:
    :math:`\nabla_Z = \frac1\tau [(WP + (WP)^\top) Z - \text{class-sum terms}]`, see
    ``docs/derivations/supcon_loss.md``.

    Two rows of one label (one pair) have no negative: the loss is exactly 0, and so is its
    gradient.

    Args:
        z: embeddings, all views stacked.
        labels: integer class of each row.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        normalize: L2-normalise rows (cosine similarity). Zero rows are then an error.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-row losses).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (the torch engine on every device; no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own, all in one walk over the tiles
            (see :func:`~contrastive.functional.nt_xent`); needs ``normalize=True``.

    Shape:
        z: ``(N, d)``; labels: ``(N,)``; output: scalar, or ``(N,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``z``.

    Raises:
        TypeError: non-tensor inputs, floating labels, non-floating z.
        ValueError: labels of the wrong shape or device, temperature <= 0, NaN/Inf, zero rows,
            a bad reduction, block_size or backend.

    Examples:
        >>> import torch
        >>> from contrastive import supcon_loss
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> round(supcon_loss(z, torch.tensor([0, 0, 1, 1]), temperature=1.0).item(), 4)  # log(1 + 2/e)
        0.5514

    References:
        Khosla et al. Supervised Contrastive Learning. NeurIPS 2020.
    """
    V.check_tensor("z", z, 2)
    labels = V.check_ids("labels", labels, z.shape[0], z, "class labels")
    temperature = V.check_param("temperature", temperature, z, True)
    check_common(["z"], [z], reduction, check_finite, normalize)
    prefixes = _prefixes(["z"], [z], matryoshka_dims, matryoshka_weights, normalize)
    engine_backend("supcon_loss", backend)
    if z.shape[0] == 2 and bool(labels[0] == labels[1]):  # one pair: no negative, exactly 0
        return no_negatives_loss([z], temperature, 2, reduction)
    bs = check_block_size(block_size, z.shape[0], z.device)
    build = matryoshka_objective(supcon_objective(labels, bs), prefixes)
    return run_engine(build, [z], temperature, normalize=normalize, reduction=reduction)


def retrieval_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: Temperature = 0.05,
    *,
    directions: Sequence[str] = ("query_to_doc",),
    partition_mode: str = "joint",
    hardness_mode: str | None = None,
    hardness_strength: float = 0.0,
    hcl_beta: float | None = None,
    hcl_tau_plus: float = 0.0,
    guide: Sequence[torch.Tensor | None] | None = None,
    guide_margin: float = 0.0,
    guide_margin_strategy: str = "absolute",
    contrast_anchors: bool = False,
    contrast_positives: bool = False,
    positive_ids: torch.Tensor | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Retrieval loss with in-batch and hard negatives (MultipleNegativesRankingLoss-style).

    The candidates are every positive and every negative; row ``i`` is a cross-entropy at its
    own positive:

    .. math::

        \ell_i = -\log \frac{\exp(a_i \cdot p_i / \tau)}
            {\sum_j \exp(a_i \cdot p_j / \tau) + \sum_m \exp(a_i \cdot n_m / \tau)}

    ``negatives`` ``(B, K, d)`` are K hard negatives per anchor (every anchor sees all B K of
    them, as in sentence-transformers), or ``(M, d)`` shared ones (e.g. a queue of earlier
    embeddings, which may carry no gradient). ``positive_ids``: a positive ``p_j`` (j != i) whose
    id equals that of ``p_i`` is not a negative of row i (a duplicate in the batch), in every
    direction. Computed blockwise, every mask per tile from O(N) vectors: O((B + M) d) memory.
    Derivation: ``docs/derivations/retrieval_loss.md``.

    The features people pick the loss for (issue 25), with sentence-transformers 6.3's semantics
    where it defines them:

    * ``directions`` / ``partition_mode`` (GTE, Li et al. 2023; MultipleNegativesRankingLoss's
      arguments, same refusals): ``"query_to_doc"`` (required), ``"doc_to_query"`` (p_i against
      every anchor), ``"query_to_query"`` (a_i against the other anchors), ``"doc_to_doc"`` (p_i
      against every document but query i's own: its positive and own hard negatives).
      ``"joint"``: one partition function per row over every set named, at the positive
      s(a_i, p_i); ``"per_direction"``: each direction's softmax, the losses averaged (refused
      with the same-type directions). ``("query_to_doc", "doc_to_query")`` per direction is the
      former ``symmetric=True``; without negatives it is :func:`~contrastive.functional.clip_loss`.
    * ``hardness_mode`` / ``hardness_strength`` alpha (Lan et al. 2025, Eq. 5): the query_to_doc
      logit of a selected negative is ``s / tau + alpha * stop_grad(s)``;
      ``"in_batch_negatives"``: candidates not the query's own (other positives, other queries'
      hard negatives); ``"hard_negatives"``: the query's own hard negatives; ``"all_negatives"``:
      every candidate but the positive. A shared ``(M, d)`` set counts as every query's own hard
      negatives.
    * ``hcl_beta`` / ``hcl_tau_plus`` (Robinson et al. 2021, the authors' code): row i's
      negatives (every candidate but its positive and masked duplicates) reweighted by
      ``exp(beta s / tau)`` normalised by their mean, debiased with ``tau+`` and clamped at
      ``n_i exp(-1/tau)``; ``loss_i = -log(e^{l_i} / (e^{l_i} + Ng_i))``. A learnable temperature
      gets the clamp floor's derivative too. Only with the default directions and without
      hardness or a guide.
    * ``guide`` (GIST, Solatorio 2024; GISTEmbedLoss's masks): guide embeddings from a second
      model (no gradient, any width), ``t_i = g(a_i, p_i)`` their cosine; candidate j is dropped
      from row i when its guide similarity to row i exceeds ``t_i - guide_margin``
      (``"absolute"``) or ``t_i - |t_i| guide_margin`` (``"relative"``); ties kept, also for a
      duplicate positive (bit-equal guide embeddings tie exactly); the row's own positive never
      dropped. ``contrast_anchors`` / ``contrast_positives`` add the anchor-anchor and the
      positive-positive (positives only) blocks, self pairs masked, each guide-masked against
      the same ``t_i``: GIST's blocks. With the default directions only.

    One anchor without negatives (B = 1, ``negatives=None``) has no negative: the loss is
    exactly 0, and so is its gradient.

    Args:
        anchors: queries.
        positives: the positive of each anchor, row-aligned.
        negatives: hard negatives ``(B, K, d)``, shared negatives ``(M, d)``, or ``None``.
        temperature: tau > 0, a float or a scalar tensor (learnable when it requires grad).
        directions: the candidate sets, a tuple of ``"query_to_doc"``, ``"doc_to_query"``,
            ``"query_to_query"``, ``"doc_to_doc"``.
        partition_mode: ``"joint"`` or ``"per_direction"``.
        hardness_mode: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or ``"all_negatives"``.
        hardness_strength: alpha >= 0 (ignored without ``hardness_mode``, as in
            sentence-transformers).
        hcl_beta: Robinson's beta >= 0, or ``None`` (off).
        hcl_tau_plus: Robinson's class prior tau+ in [0, 1).
        guide: ``(guide_anchors, guide_positives)`` or with ``guide_negatives`` (needed exactly
            when ``negatives`` are given, same rows, any width), or ``None``.
        guide_margin: the margin of the false-negative threshold.
        guide_margin_strategy: ``"absolute"`` or ``"relative"``.
        contrast_anchors: add GIST's guide-masked anchor-anchor block (needs ``guide``).
        contrast_positives: add GIST's guide-masked positive-positive block (needs ``guide``).
        positive_ids: integer id of each positive ``(B,)`` (e.g. a document id).
        normalize: L2-normalise rows (anchors, positives and negatives).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (per-anchor losses).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own, all in one walk over the tiles
            (see :func:`~contrastive.functional.nt_xent`); needs ``normalize=True``. With
            the features that run on their own blocks (joint or same-type directions,
            hardness, HCL, a guide) each prefix is its own walk, exact but not fused.

    Shape:
        anchors, positives: ``(B, d)``; negatives: ``(B, K, d)`` or ``(M, d)``;
        positive_ids: ``(B,)``; output: scalar, or ``(B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``anchors``.

    Raises:
        TypeError: non-tensor or non-floating inputs, dtypes that differ, non-integer ids.
        ValueError: shapes that do not match (negatives or guide embeddings of the wrong shape,
            K = 0), devices that differ, temperature <= 0, NaN/Inf, zero rows, bad
            reduction/block_size/backend, an unknown or refused direction or partition mode,
            a bad hardness mode or negative strength, hcl_beta < 0 or tau+ outside [0, 1),
            refused feature combinations.

    Examples:
        >>> import torch
        >>> from contrastive import retrieval_loss
        >>> a = torch.eye(2); p = torch.eye(2); n = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
        >>> round(retrieval_loss(a, p, n, temperature=1.0).item(), 4)   # -log(e / (2e + 2))
        1.0064
        >>> two = retrieval_loss(a, p, n, 1.0, directions=("query_to_doc", "doc_to_query"))
        >>> round(two.item(), 4)   # joint: -log(e / (2e + 2 + e + 1))
        1.4119

    References:
        Henderson et al. Efficient Natural Language Response Suggestion for Smart Reply. 2017.
        Karpukhin et al. Dense Passage Retrieval for Open-Domain Question Answering. EMNLP 2020.
    """
    check_pair("anchors", anchors, "positives", positives)
    B, d = anchors.shape
    names, tensors = ["anchors", "positives"], [anchors, positives]
    neg = None
    if negatives is not None:
        if not isinstance(negatives, torch.Tensor):
            raise TypeError(
                f"negatives must be a torch.Tensor (B, K, d) or (M, d), got {type(negatives).__name__}"
            )
        V.check_tensor("negatives", negatives)
        if negatives.dim() == 3:
            if negatives.shape[0] != B or negatives.shape[2] != d:
                raise ValueError(
                    f"negatives of shape (B, K, d) must be ({B}, K, {d}) for anchors of shape "
                    f"{tuple(anchors.shape)}, got {tuple(negatives.shape)}"
                )
            if negatives.shape[1] == 0:
                raise ValueError("negatives has K = 0 hard negatives per anchor; pass negatives=None instead")
            neg = negatives.reshape(B * negatives.shape[1], d)  # (B K, d): every anchor sees all
        elif negatives.dim() == 2:
            if negatives.shape[1] != d:
                raise ValueError(
                    f"negatives of shape (M, d) must have d = {d} like the anchors, "
                    f"got {tuple(negatives.shape)}"
                )
            neg = negatives
        else:
            raise ValueError(f"negatives must have shape (B, K, d) or (M, d), got {tuple(negatives.shape)}")
        V.check_same_device("anchors", anchors, "negatives", negatives)
        if negatives.dtype != anchors.dtype:
            raise TypeError(
                f"anchors are {anchors.dtype} and negatives {negatives.dtype}; cast both to one dtype"
            )
        names.append("negatives")
        tensors.append(neg)
    if positive_ids is not None:
        positive_ids = V.check_ids("positive_ids", positive_ids, B, anchors, "ids")
    dirs = V.check_directions(directions, partition_mode)
    hardness_mode, hardness_strength = V.check_hardness(hardness_mode, hardness_strength)
    hcl = V.check_hcl(hcl_beta, hcl_tau_plus)
    contrast_anchors = V.check_bool("contrast_anchors", contrast_anchors)
    contrast_positives = V.check_bool("contrast_positives", contrast_positives)
    raw_guide = guide  # as given (a Matryoshka walk per prefix passes it on)
    if guide is not None:
        guide, guide_margin = V.check_guide(
            guide, anchors, negatives, guide_margin, guide_margin_strategy, check_finite
        )
        if dirs != ("query_to_doc",):
            raise ValueError(
                f"guide runs with directions=('query_to_doc',) only (GIST's blocks come from "
                f"contrast_anchors / contrast_positives), got directions={dirs}"
            )
    elif contrast_anchors or contrast_positives:
        raise ValueError(
            "contrast_anchors / contrast_positives are GIST's guide-masked blocks and need guide; without a guide "
            "use directions=('query_to_doc', 'query_to_query') or ('query_to_doc', 'doc_to_doc')"
        )
    if hcl is not None and (dirs != ("query_to_doc",) or hardness_mode is not None or guide is not None):
        raise ValueError(
            "hcl_beta (Robinson's estimator) runs with directions=('query_to_doc',) only, without "
            "hardness_mode and without guide; drop one of them"
        )
    if hcl is not None and B < 2 and neg is None:
        raise ValueError("hcl_beta needs at least one negative per row: pass B >= 2 or negatives")
    temperature = V.check_param("temperature", temperature, anchors, True)
    check_common(names, tensors, reduction, check_finite, normalize)
    prefixes = _prefixes(names, tensors, matryoshka_dims, matryoshka_weights, normalize)
    engine_backend("retrieval_loss", backend)
    if B == 1 and (neg is None or neg.shape[0] == 0):  # one pair: no negative, exactly 0
        return no_negatives_loss([anchors, positives], temperature, 1, reduction)
    bs = check_block_size(block_size, max(B, 1 if neg is None else neg.shape[0]), anchors.device)
    plain = (hardness_mode is None or hardness_strength == 0.0) and hcl is None and guide is None
    if plain and (
        dirs == ("query_to_doc",)
        or (set(dirs) == {"query_to_doc", "doc_to_query"} and partition_mode == "per_direction")
    ):
        build = matryoshka_objective(retrieval_objective(len(dirs) == 2, positive_ids, bs), prefixes)
    else:
        if prefixes is not None:  # the features' blocks have no prefix tiles yet: a walk per prefix
            parts = [
                w_k
                * retrieval_loss(
                    anchors[..., :d_k],
                    positives[..., :d_k],
                    None if negatives is None else negatives[..., :d_k],
                    temperature,
                    directions=dirs,
                    partition_mode=partition_mode,
                    hardness_mode=hardness_mode,
                    hardness_strength=hardness_strength,
                    hcl_beta=hcl_beta,
                    hcl_tau_plus=hcl_tau_plus,
                    guide=raw_guide,
                    guide_margin=guide_margin,
                    guide_margin_strategy=guide_margin_strategy,
                    contrast_anchors=contrast_anchors,
                    contrast_positives=contrast_positives,
                    positive_ids=positive_ids,
                    reduction=reduction,
                    block_size=block_size,
                    check_finite=False,
                )
                for d_k, w_k in zip(prefixes.dims, prefixes.weights)
            ]
            return torch.stack(parts).sum(0)
        K = negatives.shape[1] if negatives is not None and negatives.dim() == 3 else 0
        build = retrieval_features_objective(
            B=B,
            K=K,
            directions=dirs,
            partition_mode=partition_mode,
            hardness_mode=hardness_mode,
            hardness_strength=hardness_strength,
            hcl=hcl,
            guide=guide,
            guide_margin=float(guide_margin),
            guide_margin_strategy=guide_margin_strategy,
            contrast_anchors=contrast_anchors,
            contrast_positives=contrast_positives,
            positive_ids=positive_ids,
            bs=bs,
        )
    return run_engine(build, [anchors, positives, neg], temperature, normalize=normalize, reduction=reduction)


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: Temperature = 0.1,
    bias: Temperature = -10.0,
    *,
    normalize: bool = True,
    reduction: str = "mean",
    block_size: int | None = None,
    backend: str = "auto",
    check_finite: bool = True,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""The sigmoid loss of SigLIP (Zhai et al. 2023): every pair is a binary classification.

    .. math::

        \mathcal L = -\frac1B \sum_{i=1}^B \sum_{j=1}^B
            \log \sigma\big(y_{ij} (a_i \cdot b_j / \tau + \beta)\big),
        \qquad y_{ii} = 1,\; y_{ij} = -1 \ (i \ne j)

    No softmax, so no normaliser: one pass over the tiles gives loss and gradient together
    (:math:`\partial \ell / \partial S_{ij} = -y_{ij} \sigma(-y_{ij} S_{ij})`), and nothing per
    tile is kept, O(B d) memory. ``temperature`` and ``bias`` may be tensors that require grad
    (SigLIP learns both: :class:`~contrastive.SigLIPLoss`). Derivation:
    ``docs/derivations/siglip_loss.md``.

    Args:
        a: first tower's embeddings (e.g. images).
        b: second tower's embeddings (e.g. texts), row-aligned with ``a``.
        temperature: tau > 0 (SigLIP's logit scale is 1 / tau), float or scalar tensor.
        bias: the logit bias beta, float or scalar tensor (SigLIP starts at -10).
        normalize: L2-normalise rows.
        reduction: ``'mean'`` (the formula above: the sum divided by B) | ``'sum'`` |
            ``'none'`` (the B row sums).
        block_size: rows per tile (``None``: 512 on CPU, 4096 on CUDA).
        backend: ``'auto'`` or ``'torch'`` (no Triton kernel yet).
        check_finite: raise on NaN/Inf inputs.
        matryoshka_dims, matryoshka_weights: Matryoshka prefixes, ``sum_k w_k`` of the loss of
            each prefix ``[:, :d_k]`` normalised on its own, all in one walk over the tiles
            (see :func:`~contrastive.functional.nt_xent`); needs ``normalize=True``.

    Shape:
        a, b: ``(B, d)``; output: scalar, or ``(B,)`` for ``reduction='none'``.

    Returns:
        The loss in the dtype of ``a``.

    Raises:
        TypeError, ValueError: bad types, shapes or devices, temperature <= 0, a non-finite
            bias, NaN/Inf, zero rows, bad reduction/block_size/backend.

    Examples:
        >>> import torch
        >>> from contrastive import siglip_loss
        >>> a = torch.eye(2)                 # S = [[1, 0], [0, 1]] at tau = 1, bias = 0
        >>> round(siglip_loss(a, a, 1.0, 0.0).item(), 4)   # softplus(-1) + softplus(0)
        1.0064

    References:
        Zhai, Mustafa, Kolesnikov, Beyer. Sigmoid Loss for Language Image Pre-Training. ICCV 2023.
    """
    check_pair("a", a, "b", b)
    temperature = V.check_param("temperature", temperature, a, True)
    bias = V.check_param("bias", bias, a, False)
    check_common(["a", "b"], [a, b], reduction, check_finite, normalize)
    prefixes = _prefixes(["a", "b"], [a, b], matryoshka_dims, matryoshka_weights, normalize)
    engine_backend("siglip_loss", backend)
    bs = check_block_size(block_size, a.shape[0], a.device)
    build = siglip_objective(bs) if prefixes is None else matryoshka_siglip_objective(bs, prefixes)
    return run_engine(build, [a, b], temperature, bias=bias, normalize=normalize, reduction=reduction)
