"""The engine contract, written once: every blockwise objective runs through :class:`EngineFn`.

An objective is a small class (:class:`Objective`) built from the prepared inputs: it runs its
tile passes (:mod:`.sym_tiles`, :mod:`.rect_tiles`, or its own single pass) and its O(N d)
positive terms. Everything around them lives here and nowhere else:

* the compute dtype (float64 stays, everything else float32) and the cast back of every
  gradient to its input's dtype;
* the exact L2 normalisation z = u / |u| and its chain rule grad_u = (I - z z^T) grad_z / |u|
  (:mod:`.common`);
* reductions. For 'mean' / 'sum' the weights w of sum_i w_i loss_i are known in forward, so
  the gradient is computed there (one call, no graph kept) and backward only multiplies it by
  grad_output. For 'none' the weights are grad_output itself, known only in backward, which
  then runs the gradient pass with them (pass 2 recomputes the tiles; nothing N x N is saved);
* the temperature and bias gradients: the objective returns d/d(inv_temp) and d/d(bias) of
  sum_i w_i loss_i; with tau = 1 / inv_temp, d/d(tau) = -inv_temp^2 d/d(inv_temp).

One name for the inverse temperature throughout ops/: ``inv_temp`` = 1 / tau.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

import torch

from .common import Blocks, Rows, chain_normalize_, compute_dtype, scalar

Grads = tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor | None]


class Objective:
    """One objective's passes on prepared inputs (compute dtype, normalised when asked).

    Subclasses set ``n`` (the number of per-row losses) in ``__init__`` and implement
    :meth:`losses` and :meth:`grad`; one-pass objectives (SigLIP) override
    :meth:`losses_and_grad`.
    """

    n: int

    def losses(self) -> torch.Tensor:
        """Per-row losses, ``(n,)``."""
        raise NotImplementedError

    def grad(self, w: torch.Tensor) -> Grads:
        """Gradient of sum_i w_i loss_i: one tensor per input (``None`` where not needed),
        d/d(inv_temp) and d/d(bias) (``None`` without a bias), inputs taken as free vectors."""
        raise NotImplementedError

    def losses_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, Grads]:
        return self.losses(), self.grad(w)

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        """The weights of ``reduction='mean'``: 1/n for each row unless the objective says."""
        return like.new_full((self.n,), 1.0 / self.n)


class OnePassObjective(Objective):
    """An objective whose loss and gradient come out of one walk (SigLIP: a per-entry sigmoid,
    no normaliser to accumulate first). Subclasses implement :meth:`_pass`."""

    def _pass(self, w: torch.Tensor | None) -> tuple[torch.Tensor, Grads | None]:
        """Per-row losses, and with weights ``w`` the gradient of sum_i w_i loss_i."""
        raise NotImplementedError

    def losses(self) -> torch.Tensor:
        return self._pass(None)[0]

    def losses_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, Grads]:
        losses, grads = self._pass(w)
        assert grads is not None  # weights given: gradients made
        return losses, grads

    def grad(self, w: torch.Tensor) -> Grads:
        grads = self._pass(w)[1]
        assert grads is not None  # weights given: gradients made
        return grads


@overload
def present(x: torch.Tensor | None) -> torch.Tensor: ...  # type: ignore[overload-overlap]
@overload
def present(x: Rows | None) -> Rows: ...
@overload
def present(x: Blocks | None) -> Blocks: ...


def present(x: Blocks | None) -> Blocks:
    """What an objective requires at this input position (``None`` is a caller bug)."""
    if x is None:
        raise ValueError("this objective needs a tensor at this input, got None")
    return x


def whole(x: Blocks) -> torch.Tensor:
    """The rows as one tensor (back-ends that need it: Triton kernels, collectives)."""
    return x.full() if isinstance(x, Rows) else x


Build = Callable[[list[Rows | None], float, float | None, Sequence[bool]], Objective]


def _finish(grads: Grads, zs: Sequence[Rows | None], inv_temp: float, needs: Sequence[bool]) -> Grads:
    """Chain the normalisation (in place: the objective's gradients are its own fresh tensors),
    turn d/d(inv_temp) into d/d(tau)."""
    gs, d_inv, d_bias = grads
    out: list[torch.Tensor | None] = []
    for g, z, need in zip(gs, zs, needs):
        if g is None or not need:
            out.append(None)
            continue
        z = present(z)
        if z.norms is None:
            out.append(g)
        else:
            out.append(chain_normalize_(g.to(z.dtype), z, z.norms))  # (I - z z^T) g / |u|
    d_temperature = -d_inv * (inv_temp * inv_temp)  # d/dtau = -inv_temp^2 d/d(inv_temp)
    return out, d_temperature, d_bias


class EngineFn(torch.autograd.Function):
    """The contract: ``EngineFn.apply(build, normalize, reduction, want_grad, temperature,
    bias, *inputs)`` returns the reduced loss (or per-row losses) in the compute dtype.
    ``build(zs, inv_temp, bias, needs)`` makes the :class:`Objective`; ``needs[k]`` says whether
    input k needs a gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        build: Build,
        normalize: bool,
        reduction: str,
        want_grad: bool,
        temperature: float | torch.Tensor,
        bias: float | torch.Tensor | None,
        *inputs: torch.Tensor | None,
    ) -> torch.Tensor:
        ct = compute_dtype(present(inputs[0]).dtype)
        # the objectives read z block by block: the normalised (or compute-dtype) rows are
        # never held next to the inputs
        zs = [None if x is None else Rows(x, ct, normalize) for x in inputs]  # (n, d) each
        inv_temp = 1.0 / float(scalar(temperature))  # type: ignore[arg-type]
        needs = tuple(ctx.needs_input_grad[6:])
        obj = build(zs, inv_temp, scalar(bias), needs)
        ctx.meta = (
            reduction,
            inv_temp,
            [None if x is None else x.dtype for x in inputs],
            getattr(temperature, "dtype", None),
            getattr(bias, "dtype", None),
        )
        if reduction == "none":
            ctx.obj, ctx.zs = obj, zs
            return obj.losses()
        ref = next(z for z in zs if z is not None)
        like = ref.new_empty(0)  # the compute dtype and device
        w = obj.mean_weights(like) if reduction == "mean" else ref.new_ones(obj.n)
        if want_grad:
            losses, grads = obj.losses_and_grad(w)
            gs, d_temperature, d_bias = _finish(grads, zs, inv_temp, needs)
            # saved (not ctx attributes): autograd frees them as soon as the backward is done
            # with them, so the gradient it returns moves into .grad instead of being copied
            ctx.layout = ([g is not None for g in gs], d_bias is not None)
            ctx.save_for_backward(
                d_temperature, *(g for g in gs if g is not None), *([d_bias] if d_bias is not None else [])
            )
        else:
            losses = obj.losses()
        return (w * losses).sum()  # sum_i w_i loss_i

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        reduction, inv_temp, in_dtypes, temperature_dtype, b_dtype = ctx.meta
        needs = ctx.needs_input_grad
        if reduction == "none":
            zs = ctx.zs
            w = g_out.to(next(z for z in zs if z is not None).dtype)  # the upstream weights
            gs, d_temperature, d_bias = _finish(ctx.obj.grad(w), zs, inv_temp, needs[6:])
            scale: float | torch.Tensor = 1.0
        else:
            has_g, has_bias = ctx.layout
            d_temperature, *rest = ctx.saved_tensors
            d_bias = rest.pop() if has_bias else None
            it = iter(rest)
            gs = [next(it) if h else None for h in has_g]
            scale = g_out.to(d_temperature.dtype)
            if bool(scale == 1):  # loss.backward(): hand the saved gradients on as they are
                scale = 1.0
        grad_temperature = (d_temperature * scale).to(temperature_dtype) if needs[4] else None
        grad_b = (d_bias * scale).to(b_dtype) if needs[5] and d_bias is not None else None
        grad_in = [
            None if g is None else (g if isinstance(scale, float) else g * scale).to(dt)
            for g, dt in zip(gs, in_dtypes)
        ]
        return (None, None, None, None, grad_temperature, grad_b, *grad_in)


def run(
    build: Build,
    inputs: Sequence[torch.Tensor | None],
    temperature: float | torch.Tensor,
    *,
    bias: float | torch.Tensor | None = None,
    normalize: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Apply the contract to validated inputs; the result in the dtype of ``inputs[0]``.

    Examples:
        >>> import torch
        >>> from contrastive.ops.info_nce import info_nce_objective
        >>> z = torch.ones(4, 3)
        >>> round(float(run(info_nce_objective(True, False, 2), [z], 0.5)), 5)   # log(N - 1) = log 3
        1.09861
    """
    tensors = [x for x in inputs if x is not None]
    params = [p for p in (temperature, bias) if isinstance(p, torch.Tensor)]
    want_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors + params)
    out = EngineFn.apply(build, bool(normalize), reduction, want_grad, temperature, bias, *inputs)
    return out.to(tensors[0].dtype)
