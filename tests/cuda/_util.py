"""Helpers of the CUDA tests: sizes (GPU or dry run), inputs, one fwd+bwd run, relative errors."""

import os

import torch

DRY_RUN = os.environ.get("CONTRASTIVE_GPU_CHECK_DRY_RUN", "") == "1"
ON_GPU = torch.cuda.is_available() and not DRY_RUN
REDUCTIONS = ("mean", "sum", "none")
# ||out - ref|| / ||ref||, the project's tolerance table (DESIGN.md, testing tiers)
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}


def pick(gpu, dry):
    """The GPU size, or the dry run's tiny one."""
    return dry if not ON_GPU else gpu


def randn(shape, dtype, device, seed):
    """Standard normal entries drawn in float64 on the device (fast at 2^20 rows), then cast."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64, device=device).to(dtype)


def unit_rows(N, d, dtype, device, seed):
    """Unit rows rounded to ``dtype`` (normalised in float64 first)."""
    x = randn((N, d), torch.float64, device, seed)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


def run(fn, inputs, params, reduction, seed=0):
    """fn(*inputs, *params, reduction): value, input gradients, parameter gradients.

    'none' back-propagates non-uniform weights (drawn on CPU, the same for every device and
    dtype); 'mean'/'sum' back-propagate 2.5 (grad_output != 1).
    """
    ins = [None if x is None else x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    ps = [p.detach().clone().requires_grad_(True) if isinstance(p, torch.Tensor) else p for p in params]
    out = fn(*ins, *ps, reduction)
    if reduction == "none":
        w = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
        (out.double() * w.to(out.device)).sum().backward()
    else:
        (2.5 * out).backward()
    grads = [None if x is None or not x.requires_grad else x.grad for x in ins]
    pgrads = [p.grad if isinstance(p, torch.Tensor) else None for p in ps]
    return out.detach(), grads, pgrads


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (on out's device); inf when out is not finite."""
    out = out.detach().double()
    ref = ref.detach().double().to(out.device)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if not torch.isfinite(out).all():
        return float("inf")
    den = ref.norm().item()
    num = (out - ref).norm().item()
    return num / den if den > 0 else num


def compare(fast, ref, tol, what):
    """Every part of run()'s result within tol (relative norm); returns the errors by name."""
    errs = {"loss": rel_err(fast[0], ref[0])}
    for kind, i in (("grad", 1), ("param_grad", 2)):
        for k, (a, b) in enumerate(zip(fast[i], ref[i])):
            if b is None:
                assert a is None, f"{what}: {kind} {k} should be None"
                continue
            assert a is not None, f"{what}: {kind} {k} missing"
            errs[f"{kind}{k}"] = rel_err(a, b)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"{what}: relative errors above {tol:g}: {bad} (all: {errs})"
    return errs
