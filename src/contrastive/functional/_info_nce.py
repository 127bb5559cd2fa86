"""InfoNCE / NT-Xent (one stacked matrix or two views, DCL, Robinson's HCL, Matryoshka) and the
two-tower (CLIP) loss on the engine, the dense path and the Triton kernels; re-exported by
:mod:`contrastive.functional`."""

from __future__ import annotations

import torch

from ..ops import validation as V
from ..ops.common import Temperature, no_negatives_loss, reduce_rows
from ..ops.engine import run as run_engine
from ..ops.hcl_objectives import hcl_clip_objective, hcl_info_nce_objective
from ..ops.info_nce import info_nce_objective
from ..ops.info_nce_dense import DenseInfoNCEFn, dense_clip
from ..ops.matryoshka_objectives import matryoshka_objective
from ..ops.retrieval import clip_objective
from ..ops.tiles import check_block_size
from ..ops.triton_glue import triton_clip_objective, triton_info_nce_objective
from ..ops.validation import check_backend


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
    prefixes, hcl, backend = V.check_two_view_features(
        ["z"], [z], matryoshka_dims, matryoshka_weights, normalize, hcl_beta, hcl_tau_plus, backend
    )
    if hcl is not None:
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
    prefixes, hcl, backend = V.check_two_view_features(
        ["a", "b"], [a, b], matryoshka_dims, matryoshka_weights, normalize, hcl_beta, hcl_tau_plus, backend
    )
    if hcl is not None:
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
