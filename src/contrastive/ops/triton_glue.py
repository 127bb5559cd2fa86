"""The Triton back-end of the engine (``backend='triton'``): objectives whose passes are the
Triton kernels of :mod:`contrastive.kernels`, run through the same contract
(:class:`.engine.EngineFn`) as the torch engine.

The contract does the normalisation (float32) and its chain rule, the reductions, the 'none'
recompute and the temperature gradient; these objectives only hand the kernels the unit rows
in the input dtype (the kernels accumulate in float32) and return the kernels' losses,
gradients with respect to z, and d/d(inv_temp). Triton is imported only when a kernel runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import Blocks
from .engine import Build, Grads, Objective, present, whole


class TritonInfoNCEObjective(Objective):
    """Two-view InfoNCE of stacked z (N, d) on :func:`contrastive.kernels.info_nce_triton`."""

    def __init__(
        self,
        zs: Sequence[Blocks | None],
        inv_temp: float,
        exclude_self: bool,
        bs: int | None,
        kernel_dtype: torch.dtype,
    ):
        self.zk = whole(present(zs[0])).to(kernel_dtype).contiguous()  # (N, d) kernel input
        self.n = self.zk.shape[0]
        self.inv_temp, self.exclude_self, self.bs = inv_temp, exclude_self, bs
        self.lse: torch.Tensor | None = None

    def losses(self) -> torch.Tensor:
        from ..kernels import info_nce_triton

        loss, _, _, self.lse = info_nce_triton(
            self.zk, self.inv_temp, self.exclude_self, None, False, self.bs, return_lse=True
        )
        return loss

    def losses_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, Grads]:
        from ..kernels import info_nce_triton

        loss, g, d_inv = info_nce_triton(self.zk, self.inv_temp, self.exclude_self, w, True, self.bs)
        return loss, ([g], d_inv, None)

    def grad(self, w: torch.Tensor) -> Grads:
        from ..kernels import info_nce_triton

        _, g, d_inv = info_nce_triton(
            self.zk, self.inv_temp, self.exclude_self, w.float(), True, self.bs, lse=self.lse
        )
        return [g], d_inv, None


class TritonClipObjective(Objective):
    """Two-tower loss of a, b (N, d) on :func:`contrastive.kernels.clip_triton`."""

    def __init__(
        self, zs: Sequence[Blocks | None], inv_temp: float, bs: int | None, kernel_dtype: torch.dtype
    ):
        self.ak = whole(present(zs[0])).to(kernel_dtype).contiguous()
        self.bk = whole(present(zs[1])).to(kernel_dtype).contiguous()
        self.n = self.ak.shape[0]
        self.inv_temp, self.bs = inv_temp, bs
        self.lse: torch.Tensor | None = None

    def losses(self) -> torch.Tensor:
        from ..kernels import clip_triton

        loss, _, _, _, self.lse = clip_triton(
            self.ak, self.bk, self.inv_temp, None, False, self.bs, return_lse=True
        )
        return loss

    def losses_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, Grads]:
        from ..kernels import clip_triton

        loss, ga, gb, d_inv = clip_triton(self.ak, self.bk, self.inv_temp, w, True, self.bs)
        return loss, ([ga, gb], d_inv, None)

    def grad(self, w: torch.Tensor) -> Grads:
        from ..kernels import clip_triton

        _, ga, gb, d_inv = clip_triton(
            self.ak, self.bk, self.inv_temp, w.float(), True, self.bs, lse=self.lse
        )
        return [ga, gb], d_inv, None


def triton_info_nce_objective(exclude_self: bool, bs: int | None, kernel_dtype: torch.dtype) -> Build:
    """The engine's ``build`` for two-view InfoNCE on the Triton kernels."""

    def build(
        zs: Sequence[Blocks | None], inv_temp: float, bias: float | None, needs: Sequence[bool]
    ) -> Objective:
        return TritonInfoNCEObjective(zs, inv_temp, exclude_self, bs, kernel_dtype)

    return build


def triton_clip_objective(bs: int | None, kernel_dtype: torch.dtype) -> Build:
    """The engine's ``build`` for the two-tower loss on the Triton kernels."""

    def build(
        zs: Sequence[Blocks | None], inv_temp: float, bias: float | None, needs: Sequence[bool]
    ) -> Objective:
        return TritonClipObjective(zs, inv_temp, bs, kernel_dtype)

    return build
