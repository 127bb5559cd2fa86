r"""Drop-in replacements for open_clip's ``ClipLoss`` and ``SigLipLoss`` (open-clip-torch 3.3.0,
``open_clip/loss.py``): the same constructor arguments and defaults, the same call signatures
and ``output_dict`` results, computed on this library's blockwise engine. Nothing is imported
from open_clip, so no extra is needed; change one import line::

    from open_clip.loss import ClipLoss, SigLipLoss            # before
    from contrastive.integrations.open_clip import ClipLoss, SigLipLoss   # after

open_clip passes ``logit_scale`` already exponentiated (a multiplier, ``model.logit_scale.exp()``),
and takes the features as given (its models normalise them). So the engine runs with
``normalize=False`` and ``temperature = 1 / logit_scale``, kept as a tensor so that the
gradient reaches ``logit_scale``.

What each rank computes under ``torch.distributed`` (``world_size > 1``), as open_clip does:

* ``ClipLoss(local_loss=False)``: the loss of the whole global batch on every rank
  (:func:`contrastive.distributed.clip_loss`, each rank computing only its own rows and
  columns). ``gather_with_grad=True``: the features' gradient is ``world_size x dL/dz``
  (open_clip's all-gather sums every rank's gradient), ``gradient='ddp'``;
  ``gather_with_grad=False``: ``dL/dz`` (open_clip puts the local features, with their
  gradient, into the gathered copies), ``gradient='exact'``.
* ``ClipLoss(local_loss=True)``: the rank's own loss, its image rows against all texts and
  its text rows against all images (two :func:`~contrastive.retrieval_loss` calls, the other
  ranks' rows as candidates). ``gather_with_grad=True``: the gathered rows carry gradient
  back to their owners (the gradient of the sum of the ranks' losses);
  ``gather_with_grad=False``: open_clip's deliberately partial gradient, through each
  direction's query rows only.
* ``SigLipLoss``: the rank's image rows against every rank's texts, divided by the local
  batch size. open_clip's four ``dist_impl`` exchanges (``'bidir'``, ``'shift'``,
  ``'reduce'``, ``'gather'``) compute the same loss and gradients; here all four gather the
  texts once (their gradient summed back to the owners) and run one engine pass.

The ``logit_scale`` and ``logit_bias`` gradients are the rank's own, as in open_clip.
``use_horovod=True`` is refused. In ``ClipLoss`` a ``logit_bias`` shifts every logit of every
softmax alike, so it changes neither the loss nor any gradient; its own gradient is 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import distributed, functional
from ..ops import validation as V
from ..ops.engine import run as run_engine
from ..ops.siglip import SigLIPObjective
from ..ops.tiles import check_block_size

__all__ = ["ClipLoss", "SigLipLoss"]

DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


def _temperature(logit_scale: Any, ref: torch.Tensor) -> float | torch.Tensor:
    """1 / logit_scale (a tensor keeps its graph), after checking that it is a positive finite scalar."""
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1 or not logit_scale.dtype.is_floating_point:
            raise ValueError(
                f"logit_scale must be a float or a floating scalar tensor (model.logit_scale.exp()), "
                f"got shape {tuple(logit_scale.shape)} and dtype {logit_scale.dtype}"
            )
        value = float(logit_scale.detach())
    elif isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        value = float(logit_scale)
    else:
        raise TypeError(f"logit_scale must be a float or a scalar tensor, got {type(logit_scale).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"logit_scale must be positive and finite (it is already exponentiated: "
            f"model.logit_scale.exp()), got {value}"
        )
    if isinstance(logit_scale, torch.Tensor):
        V.check_temperature_device(logit_scale, ref, "logit_scale")
        scale = logit_scale.reshape(())
        if scale.device.type != "mps":  # the reciprocal in float64: 1 / (1 / s) gives s back
            scale = scale.to(torch.float64)
        return scale.reciprocal()
    return 1.0 / value


def _features(image_features: Any, text_features: Any) -> None:
    V.check_tensor("image_features", image_features, 2)
    V.check_tensor("text_features", text_features, 2)
    V.check_same_device("image_features", image_features, "text_features", text_features)
    if image_features.dtype != text_features.dtype:
        raise TypeError(
            f"image_features are {image_features.dtype} and text_features {text_features.dtype}; "
            f"cast both to one dtype"
        )
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"image_features have dimension {image_features.shape[1]} and text_features "
            f"{text_features.shape[1]}; they must agree"
        )


def _process_group(rank: int, world_size: int, name: str) -> None:
    """Check that torch.distributed runs with the rank and world size the loss was built with."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{name}(world_size={world_size}) needs torch.distributed: call "
            f"torch.distributed.init_process_group first, or build the loss with world_size=1"
        )
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"{name} was built with rank={rank}, world_size={world_size} but this process is rank "
            f"{dist.get_rank()} of {dist.get_world_size()} in the default process group; pass "
            f"rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size()"
        )


def _gathered(x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(the other ranks' rows in rank order, all rows, this rank's row offset), gathered with or
    without gradient (with: the backward sums every rank's gradient of a row for its owner)."""
    if with_grad:
        every = distributed.all_gather_with_grad(x)  # (N, d); backward: sum over ranks
    else:
        with torch.no_grad():
            every = distributed.all_gather_with_grad(x.detach())
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, n)
    o = sum(int(c) for c in counts[: dist.get_rank()])
    return torch.cat([every[:o], every[o + x.shape[0] :]]), every, o


class ClipLoss(nn.Module):
    r"""open_clip's ``ClipLoss`` on the engine: the mean of the image-to-text and text-to-image
    cross-entropies over ``logit_scale * image_features @ text_features.T``.

    .. math::

        \mathcal L = \frac{1}{2N} \sum_i \Big(\log\sum_j e^{s\, x_i \cdot t_j} - s\, x_i \cdot t_i\Big)
            + \Big(\log\sum_j e^{s\, x_j \cdot t_i} - s\, x_i \cdot t_i\Big)

    with :math:`s` = ``logit_scale``: :func:`contrastive.clip_loss` at temperature ``1 / s``
    with ``normalize=False``, never holding the ``N x N`` logits. The distributed forms are
    those of open_clip (see the module docstring).

    Args:
        local_loss: each rank's loss over its own rows against the gathered columns (else the
            whole global batch on every rank).
        gather_with_grad: the gathered features carry gradient back to their ranks.
        cache_labels: accepted for compatibility (there are no labels to cache).
        rank, world_size: this process's rank and the number of ranks (``world_size > 1``
            needs an initialised default process group with these values).
        use_horovod: must be False (Horovod is not supported; use torch.distributed).

    Shape:
        image_features, text_features: ``(N, d)``; logit_scale, logit_bias: scalars; output: scalar.

    Raises:
        ValueError: ``use_horovod=True``; at call time, bad features, a non-positive
            ``logit_scale``, or a process group that does not match ``rank`` / ``world_size``.

    Examples:
        >>> import torch
        >>> from contrastive.integrations.open_clip import ClipLoss
        >>> x = torch.eye(3)
        >>> round(ClipLoss()(x, x, torch.tensor(1.0)).item(), 4)   # log(e + 2) - 1
        0.5514
        >>> sorted(ClipLoss()(x, x, 1.0, output_dict=True))
        ['contrastive_loss']
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
    ):
        super().__init__()
        if use_horovod:
            raise ValueError(
                "use_horovod=True is not supported by contrastive's ClipLoss; run the job with "
                "torch.distributed (torchrun) and pass rank and world_size"
            )
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.use_horovod = use_horovod
        self.prev_num_logits = 0  # open_clip's label cache, kept for code that reads it
        self.labels: dict[Any, torch.Tensor] = {}

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: float | torch.Tensor,
        logit_bias: float | torch.Tensor | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        _features(image_features, text_features)
        tau = _temperature(logit_scale, image_features)
        if logit_bias is not None:
            logit_bias = V.check_param("logit_bias", logit_bias, image_features, False)
        if self.world_size > 1:
            _process_group(self.rank, self.world_size, "ClipLoss")
            if self.local_loss:
                loss = self._local(image_features, text_features, tau)
            else:
                gradient = "ddp" if self.gather_with_grad else "exact"
                loss = distributed.clip_loss(
                    image_features, text_features, tau, normalize=False, gradient=gradient
                )
        else:
            V.check_same_shape("image_features", image_features, "text_features", text_features)
            loss = functional.clip_loss(image_features, text_features, tau, normalize=False)
        if isinstance(logit_bias, torch.Tensor):
            loss = loss + 0 * logit_bias.to(loss.dtype)  # cancels in every softmax: gradient 0
        return {"contrastive_loss": loss} if output_dict else loss

    def _local(self, img: torch.Tensor, txt: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
        """This rank's rows: images against all texts, texts against all images, averaged."""
        V.check_same_shape("image_features", img, "text_features", txt)
        grad = self.gather_with_grad
        txt_others, _, _ = _gathered(txt, grad)
        img_others, _, _ = _gathered(img, grad)
        # without gather_with_grad open_clip's gathered features carry no gradient at all, the
        # local ones included: each direction's gradient flows through its query rows only
        t_pos, i_pos = (txt, img) if grad else (txt.detach(), img.detach())
        neg_t = txt_others if txt_others.shape[0] else None
        neg_i = img_others if img_others.shape[0] else None
        i2t = functional.retrieval_loss(img, t_pos, neg_t, tau, normalize=False)
        t2i = functional.retrieval_loss(txt, i_pos, neg_i, tau, normalize=False)
        return 0.5 * (i2t + t2i)


class SigLipLoss(nn.Module):
    r"""open_clip's ``SigLipLoss`` (Zhai et al. 2023) on the engine: every image-text pair is
    a binary classification of ``logit_scale * x_i . t_j + logit_bias``.

    .. math::

        \mathcal L = -\frac1N \sum_{i} \sum_{j} \log \sigma\big(y_{ij} (s\, x_i \cdot t_j + b)\big),
        \qquad y_{ii} = 1,\; y_{ij} = -1\ (i \ne j)

    :func:`contrastive.siglip_loss` at temperature ``1 / s`` with ``normalize=False``: one pass,
    O(N d) memory where open_clip holds the ``N x N`` logits. With ``world_size > 1`` the
    loss is the rank's image rows against every rank's texts divided by the local ``N``, for
    every ``dist_impl`` (see the module docstring).

    Args:
        cache_labels: accepted for compatibility (unused, as in open_clip).
        rank, world_size: this process's rank and the number of ranks.
        dist_impl: ``None`` (``'bidir'``), ``'bidir'``, ``'shift'``, ``'reduce'`` or ``'gather'``;
            all four give open_clip's loss and gradients here.

    Shape:
        image_features, text_features: ``(N, d)``; logit_scale, logit_bias: scalars; output: scalar.

    Raises:
        ValueError: an unknown ``dist_impl``; at call time, bad features, a non-positive
            ``logit_scale``, a non-finite ``logit_bias``, or a process group that does not match.

    Examples:
        >>> import torch
        >>> from contrastive.integrations.open_clip import SigLipLoss
        >>> x = torch.eye(2)
        >>> round(SigLipLoss()(x, x, 1.0, 0.0).item(), 4)   # softplus(-1) + softplus(0)
        1.0064
    """

    def __init__(
        self,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dist_impl: str | None = None,
    ):
        super().__init__()
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.dist_impl = dist_impl or "bidir"
        if self.dist_impl not in DIST_IMPLS:
            raise ValueError(f"dist_impl must be None or one of {DIST_IMPLS}, got {dist_impl!r}")
        self.prev_num_logits = 0
        self.labels: dict[Any, torch.Tensor] = {}

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: float | torch.Tensor,
        logit_bias: float | torch.Tensor | None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        _features(image_features, text_features)
        tau = _temperature(logit_scale, image_features)
        bias = 0.0 if logit_bias is None else V.check_param("logit_bias", logit_bias, image_features, False)
        if self.world_size > 1:
            _process_group(self.rank, self.world_size, "SigLipLoss")
            loss = self._gathered_loss(image_features, text_features, tau, bias)
        else:
            V.check_same_shape("image_features", image_features, "text_features", text_features)
            loss = functional.siglip_loss(image_features, text_features, tau, bias, normalize=False)
        return {"contrastive_loss": loss} if output_dict else loss

    @staticmethod
    def _gathered_loss(
        img: torch.Tensor, txt: torch.Tensor, tau: float | torch.Tensor, bias: float | torch.Tensor
    ) -> torch.Tensor:
        """The local image rows against all texts (positives at the rank's own columns)."""
        V.check_same_shape("image_features", img, "text_features", txt)
        for name, x in (("image_features", img), ("text_features", txt)):
            V.check_finite(name, x)
        _, every, offset = _gathered(txt, True)  # (N, d), gradient summed back to the owners
        bs = check_block_size(None, max(every.shape[0], 1), img.device)

        def build(zs, inv_temp, b, needs):
            return SigLIPObjective(zs, inv_temp, b, needs, bs, offset=offset)

        return run_engine(build, [img, every], tau, bias=bias, normalize=False, reduction="mean")
