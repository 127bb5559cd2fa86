"""Loading, tile configurations and launching for the Triton InfoNCE kernels.

The device code (``_device.py``) is loaded once per kind (interpreted for CPU tensors under
``TRITON_INTERPRET=1``, compiled for CUDA); each kernel launches either with an explicit
tile size or through ``triton.autotune`` over H100-minded candidates that compile for sm_90
without spilling (``benchmarks/triton_compile_report.py`` checks them). Column splits give
small batches enough programs to fill the GPU. Triton is imported only inside functions.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import torch

from .dispatch import interpret_enabled


# ----------------------------------------------------------------------------- loading
def _triton_importable() -> bool:
    """Whether ``import triton`` succeeds (False when missing or broken); the public check,
    which also asks for CUDA or ``TRITON_INTERPRET=1``, is :func:`contrastive.kernels.available`.
    """
    try:
        import triton  # noqa: F401
    except Exception:  # not installed, or a broken install
        return False
    return True


_MODULES: dict = {}
_TUNED: dict = {}


def _device_module(interpret: bool):
    """The device code, loaded once per kind: interpreted (CPU) or compiled (CUDA).

    ``triton.jit`` decides at decoration time from ``TRITON_INTERPRET``; loading ``_device.py``
    under a private name with the variable forced keeps both kinds apart in one process.
    This works because the kernels call none of ``triton.language``'s own ``@jit`` helpers
    (``tl.sum``, ``tl.max``, ``tl.zeros``, ``tl.cdiv``), whose kind was fixed when
    ``triton.language`` was first imported; ``_device.py`` defines its own.
    """
    mod = _MODULES.get(interpret)
    if mod is None:
        try:
            import triton  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "the Triton kernels need the triton package: pip install 'contrastive[triton]'"
            ) from e
        name = f"contrastive.kernels._device_{'interpreted' if interpret else 'compiled'}"
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_device.py"))
        mod = importlib.util.module_from_spec(spec)
        old = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
        try:
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        finally:
            if old is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = old
        _MODULES[interpret] = mod
    return mod


def _interpret_for(x: torch.Tensor) -> bool:
    if x.is_cuda:
        return False
    if x.device.type == "cpu" and interpret_enabled():
        return True
    raise ValueError(
        f"the Triton kernels run on CUDA tensors, got a tensor on {x.device}; use the torch "
        f"engine (backend='torch'), or set TRITON_INTERPRET=1 to run them on CPU under the "
        f"Triton interpreter (slow: meant for tests)"
    )


# ----------------------------------------------------------------------------- configs
def _pow2(n: int) -> int:
    return max(16, 1 << (int(n) - 1).bit_length())


def _configs(name: str, D: int, interpret: bool, esize: int = 2, prec: str = "tf32"):
    """Autotuning candidates (H100-minded) for one kernel, feature dimension and element size.

    Pass 1 holds one fp32 S tile per program; pass 2 also holds the (BLOCK_M, BLOCK_DV) fp32
    accumulator. Candidates whose two fp32 tiles need more than 128 values per thread, or
    whose pipelined tiles exceed ~200 KiB of shared memory, are left out: compiled for sm_90
    (``benchmarks/triton_compile_report.py``) the remaining ones neither spill nor overflow
    shared memory. D > 128 is cut into BLOCK_DV chunks when a whole-row accumulator would not
    fit (each chunk then recomputes S). Float32 inputs with 3xTF32 dots (``prec='tf32x3'``,
    the default unless torch allows TF32) split each operand in two, which takes about twice
    the registers and shared memory: they get small tiles only. Under the interpreter a
    single small configuration.
    """
    import triton

    dp = _pow2(D)
    C = triton.Config
    if interpret:
        bk = min(dp, 64)
        if name == "p1_sums_kernel":
            return [C(dict(BLOCK=16, BLOCK_K=bk), num_warps=4, num_stages=1)]
        kw = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=bk)
        if name == "p2_rows_kernel":
            kw["BLOCK_DV"] = bk if bk >= D else min(dp, 32)
        return [C(kw, num_warps=4, num_stages=1)]
    if prec == "tf32x3":  # float32 kept accurate
        bk = dp if dp <= 128 else 32  # more K chunks spill
        if name == "p1_sums_kernel":
            return [C(dict(BLOCK=64, BLOCK_K=bk), num_warps=4, num_stages=2)]
        if name == "p1_rows_kernel":
            return [C(dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=min(bk, 64)), num_warps=4, num_stages=2)]
        return [C(dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=bk, BLOCK_DV=min(dp, 64)), num_warps=4, num_stages=2)]
    bks = [dp] if dp <= 256 else [128]
    smem_max = 200 * 1024
    out = []

    def add(meta, warps, stages, bm, bn, bk, acc=0, ytile=0):
        """acc: fp32 accumulator columns; ytile: extra pipelined Y columns (pass 2 without reuse)."""
        regs = (bm * bn + bm * acc) / (32 * warps)  # fp32 values per thread
        smem = (stages * bn * (bk + ytile) + bm * bk) * esize  # pipelined Y tiles + the X tile
        if regs <= 128 and smem <= smem_max:
            out.append(C(meta, num_warps=warps, num_stages=stages))

    if name == "p1_sums_kernel":
        shapes = ((64, 4), (128, 8)) if dp >= 256 else ((64, 4), (128, 4), (128, 8))
        for block, warps in shapes:
            for bk in bks:
                for stages in (2, 3):
                    add(dict(BLOCK=block, BLOCK_K=bk), warps, stages, block, block, bk)
    elif name == "p1_rows_kernel":
        for bm, bn, warps in ((64, 64, 4), (128, 64, 8), (128, 128, 8)):
            for bk in bks:
                for stages in (2, 3):
                    add(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk), warps, stages, bm, bn, bk)
    else:
        if dp <= 128:
            kd = [(dp, dp)]
        elif dp == 256:
            kd = [(256, 256), (256, 128)]
        else:
            kd = [(128, 128), (128, 256)]
        for bm, bn, warps in ((64, 32, 4), (64, 64, 4), (64, 32, 8), (64, 64, 8), (128, 64, 8)):
            for bk, bdv in kd:
                reuse = bk >= D and bdv == bk  # Y tile serves both dots
                for stages in (2, 3):
                    add(
                        dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_DV=bdv),
                        warps,
                        stages,
                        bm,
                        bn,
                        bk,
                        acc=bdv,
                        ytile=0 if reuse else bdv,
                    )
    return out


def _manual_config(name: str, D: int, block: int | None, tile):
    """Launch options for an explicit ``block_size`` (square tiles) or a test-only
    ``tile=(BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_DV)``; ``p1_sums_kernel`` uses BLOCK = BLOCK_M."""
    dp = _pow2(D)
    if tile is not None:
        bm, bn, bk, bdv = tile
    else:
        bm = bn = block
        bk = dp if dp <= 256 else 128
        bdv = dp if dp <= 128 else 128
    for v, what in ((bm, "block_size"), (bn, "BLOCK_N"), (bk, "BLOCK_K"), (bdv, "BLOCK_DV")):
        if v < 16 or v & (v - 1):
            raise ValueError(f"{what} must be a power of two >= 16, got {v}")
    if name == "p1_sums_kernel":
        kw = dict(BLOCK=bm, BLOCK_K=bk)
    else:
        kw = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    if name == "p2_rows_kernel":
        kw["BLOCK_DV"] = bdv
    return kw, dict(num_warps=4 if bm <= 64 else 8, num_stages=2)


class _Launcher:
    """Launches one kernel: autotuned, or with the explicit block size."""

    def __init__(self, name, D, interpret, block_size, tile, esize, prec):
        self.name, self.D, self.interpret, self.esize, self.prec = name, D, interpret, esize, prec
        self.fn = getattr(_device_module(interpret), name)
        self.manual = None
        if block_size is not None or tile is not None:
            self.manual = _manual_config(name, D, block_size, tile)

    def __call__(self, grid, *args, **kwargs):
        if self.manual is not None:
            meta, opts = self.manual
            return self.fn[grid](*args, **kwargs, **meta, **opts)
        key = (self.interpret, self.name, self.D, self.esize, self.prec)
        tuned = _TUNED.get(key)
        if tuned is None:
            import triton

            reset = {"p1_sums_kernel": ["rrow_ptr", "rcol_ptr"], "p2_rows_kernel": ["dinv_ptr"]}.get(
                self.name
            )
            configs = _configs(self.name, self.D, self.interpret, self.esize, self.prec)
            tuned = triton.autotune(
                configs=configs,
                key=["N_BUCKET"],
                reset_to_zero=reset,
                do_bench=_tuning_bench,
                cache_results=True,
            )(self.fn)
            _TUNED[key] = tuned
        return tuned[grid](*args, **kwargs)


def _tuning_bench(fn, quantiles=None):
    """The autotuner's timer: Triton's ``do_bench`` for short launches, 3 timed runs for long ones.

    At N ~ 2^20 one launch takes around a second; ``do_bench`` (about 8 launches at least per
    configuration) would make the first call of a new size bucket last minutes.
    """
    import triton.testing

    fn()  # compile and warm up
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    first = start.elapsed_time(end)  # ms
    if first < 20.0:
        return triton.testing.do_bench(fn, warmup=10, rep=50, quantiles=quantiles)
    times = [first]
    for _ in range(2):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return [times[1], times[0], times[2]] if quantiles else times[1]


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _split_rows(N: int, device: torch.device, split: int | None) -> int:
    """Column splits for the row-block kernels: enough programs to fill the GPU at small N.

    With 128-row blocks, N = 16384 gives 128 programs for 132 SMs; splitting the column
    range in 3 gives 384. Each split writes its own gradient slice (summed afterwards), so
    the result stays deterministic; at N >= 2 * 128 * SMs there is no split and no slice.
    """
    if split is not None:
        return max(1, int(split))
    if device.type != "cuda":
        return 1
    return max(1, min(math.ceil(2 * _num_sms(device) / math.ceil(N / 128)), math.ceil(N / 64), 32))


def _split_sym(nb: int, sms: int) -> int:
    """Column splits for the atomic pass 1: about 4 programs per SM (capped by the block count)."""
    return max(1, min(nb, math.ceil(4 * sms / nb)))
