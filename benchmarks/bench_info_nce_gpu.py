"""GPU benchmark of InfoNCE implementations: time, achieved TFLOP/s against a bf16 GEMM, memory.

Providers (each skipped with a recorded reason where it cannot run):

* ``triton``        the Triton kernels (:mod:`contrastive.kernels`), single tower and CLIP form;
* ``torch-engine``  ``contrastive.info_nce`` / ``clip_loss`` with ``backend='torch'`` (the
                    blockwise torch engine), or the API default where there is no backend switch;
* ``dense``         the dense torch path with the analytic backward (``backend='dense'``, or
                    ``DenseInfoNCEFn`` for the single tower);
* ``naive``         plain PyTorch autograd of ``cross_entropy(Z Z^T / tau)``;
* ``inf-cl``        ``inf_cl.cal_inf_loss`` (two-tower form only, ``(loss(a, b) + loss(b, a)) / 2``;
                    it computes in float32 whatever the input dtype).

Every provider gets unit-norm rows (no normalisation inside the timed region), the same
temperature and the mean reduction. Modes: ``fwd`` (under ``torch.no_grad``; the Triton
kernels with ``compute_grad=False``) and ``fwd+bwd``. Nominal flops, whatever an
implementation does: the single tower ``2 N^2 d`` forward and ``4 N^2 d`` forward+backward
(``S = Z Z^T`` and ``(G + G^T) Z``: the "engine's 4 N^2 d" of the issue), the two-tower form
``2 N^2 d`` and ``6 N^2 d`` (``S``, ``K B``, ``K^T A``). ``pct_gemm`` compares the achieved
rate with a bf16 ``(M x d) @ (d x M)`` GEMM (M = 16384) timed in the same run. Peak memory
is ``torch.cuda.max_memory_allocated`` minus what was allocated before the call (inputs).

    python benchmarks/bench_info_nce_gpu.py                          # the full sweep (CUDA)
    python benchmarks/bench_info_nce_gpu.py --N 65536 --d 128 --providers triton inf-cl
    python benchmarks/bench_info_nce_gpu.py --dry-run                # CPU, Triton interpreter, tiny N

Without a CUDA device the script says so and exits with status 2, unless ``--dry-run``:
then every code path runs on CPU at tiny N (kernels under ``TRITON_INTERPRET=1``) and the
CSV is marked ``dry_run=1``; its times measure the interpreter, not a GPU.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROVIDERS = ("triton", "torch-engine", "dense", "naive", "inf-cl")
FORMS = ("single", "clip")
MODES = ("fwd", "fwd+bwd")
DEFAULT_N = (16384, 32768, 65536, 131072, 262144, 524288, 1048576)
DEFAULT_D = (128, 256, 512)
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, nargs="+", default=None, help=f"batch rows (default {DEFAULT_N})")
    ap.add_argument("--d", type=int, nargs="+", default=None, help=f"feature dims (default {DEFAULT_D})")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    ap.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--reps", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (autotuning, compilation)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="a provider slower than this for one run skips the larger N")
    ap.add_argument("--csv", default=None, help="output CSV (default benchmarks/results/info_nce_gpu.csv)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU + Triton interpreter at tiny N: checks the script, measures nothing real")
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------ providers
def _api_accepts_backend(fn) -> bool:
    try:
        return "backend" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def make_single(provider, z, temperature, mode):
    """A zero-argument callable running one loss (and its backward for fwd+bwd), or a reason string."""
    import torch
    import torch.nn.functional as F

    N = z.shape[0]
    inv_t = 1.0 / temperature
    grad = mode == "fwd+bwd"
    if provider == "triton":
        from contrastive.kernels import info_nce_triton

        return lambda: info_nce_triton(z, inv_t, True, compute_grad=grad)[0].mean()
    if provider == "inf-cl":
        return "two-tower form only"
    leaf = z.detach().clone().requires_grad_(grad)

    def run(loss_fn):
        def call():
            if grad:
                leaf.grad = None
                loss = loss_fn()
                loss.backward()
                return loss.detach()
            with torch.no_grad():
                return loss_fn()
        return call

    if provider == "torch-engine":
        import contrastive

        kw = dict(temperature=temperature, exclude_self=True, normalize=False)
        if _api_accepts_backend(contrastive.info_nce):
            kw["backend"] = "torch"
        return run(lambda: contrastive.info_nce(leaf[: N // 2], leaf[N // 2:], **kw))
    if provider == "dense":
        import contrastive

        if _api_accepts_backend(contrastive.info_nce):
            return run(lambda: contrastive.info_nce(leaf[: N // 2], leaf[N // 2:], temperature=temperature,
                                                    exclude_self=True, normalize=False, backend="dense"))
        from contrastive.ops.info_nce_dense import DenseInfoNCEFn

        return run(lambda: DenseInfoNCEFn.apply(leaf, temperature, True, False).mean())
    if provider == "naive":
        labels = (torch.arange(N, device=z.device) + N // 2) % N
        eye = torch.eye(N, dtype=torch.bool, device=z.device)

        def naive():
            S = (leaf @ leaf.T).float() * inv_t                         # (N, N)
            return F.cross_entropy(S.masked_fill(eye, float("-inf")), labels)
        return run(naive)
    raise ValueError(provider)


def make_clip(provider, a, b, temperature, mode):
    import torch
    import torch.nn.functional as F

    N = a.shape[0]
    inv_t = 1.0 / temperature
    grad = mode == "fwd+bwd"
    if provider == "triton":
        from contrastive.kernels import clip_triton

        return lambda: clip_triton(a, b, inv_t, compute_grad=grad)[0].mean()
    la = a.detach().clone().requires_grad_(grad)
    lb = b.detach().clone().requires_grad_(grad)

    def run(loss_fn):
        def call():
            if grad:
                la.grad = lb.grad = None
                loss = loss_fn()
                loss.backward()
                return loss.detach()
            with torch.no_grad():
                return loss_fn()
        return call

    if provider in ("torch-engine", "dense"):
        import contrastive

        fn = getattr(contrastive, "clip_loss", None)
        if fn is None:
            return "contrastive.clip_loss not in this version"
        kw = dict(temperature=temperature, normalize=False)
        if _api_accepts_backend(fn):
            kw["backend"] = "torch" if provider == "torch-engine" else "dense"
        elif provider == "dense":
            return "no dense backend in this version"
        return run(lambda: fn(la, lb, **kw))
    if provider == "naive":
        labels = torch.arange(N, device=a.device)

        def naive():
            S = (la @ lb.T).float() * inv_t                             # (N, N)
            return 0.5 * (F.cross_entropy(S, labels) + F.cross_entropy(S.T, labels))
        return run(naive)
    if provider == "inf-cl":
        if a.device.type != "cuda":
            return "needs CUDA"
        try:
            from inf_cl import cal_inf_loss
        except Exception as e:  # not installed or broken
            return f"inf_cl not importable ({type(e).__name__})"
        d = a.shape[1]
        head = math.gcd(d, 256)
        if head not in (16, 32, 64, 128, 256):
            return f"inf-cl needs d divisible by 16 (got {d})"
        scale = torch.tensor(inv_t, device=a.device)
        return run(lambda: 0.5 * (cal_inf_loss(la, lb, scale=scale, head_dim=head)
                                  + cal_inf_loss(lb, la, scale=scale, head_dim=head)))
    raise ValueError(provider)


# ------------------------------------------------------------------------------ measuring
def naive_bytes(provider, form, N, mode):
    """Rough peak of the N x N paths (bytes), to skip what cannot fit instead of thrashing."""
    if provider not in ("naive", "dense"):
        return 0
    per = {"naive": 14, "dense": 12}[provider]
    if mode == "fwd":
        per = 6
    return per * N * N * (1.5 if form == "clip" else 1.0)


def timed(fn, reps, warmup, cuda):
    import torch

    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def gemm_tflops(d, dtype, device, M, reps, cuda):
    import torch

    A = torch.randn(M, d, dtype=dtype, device=device)
    B = torch.randn(d, M, dtype=dtype, device=device)
    ms, _ = timed(lambda: torch.mm(A, B), reps, 2, cuda)
    return 2.0 * M * M * d / (ms * 1e-3) / 1e12


def report(row):
    ok = row.get("status") == "ok"
    extra = (f" {row['time_ms']:.2f} ms {row['tflops']:.1f} TFLOP/s ({row['pct_gemm']:.0f}% GEMM) "
             f"peak +{row.get('peak_mib_beyond_inputs', 'n/a')} MiB loss {row['loss']:.5f}") if ok else ""
    print(f"{row['form']:6s} {row['mode']:7s} {row['provider']:12s} N={row['N']:<8d} d={row['d']:<4d} "
          f"{row.get('status')}{extra}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"                            # before any Triton import
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("no CUDA device: nothing measured. Run this on a GPU, or pass --dry-run to check the "
              "script on CPU (Triton interpreter, tiny N).", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    Ns = args.N or ((32, 48) if args.dry_run else DEFAULT_N)
    ds = args.d or ((16,) if args.dry_run else DEFAULT_D)
    if args.dry_run:
        args.reps, args.warmup = 1, 1
    out_path = Path(args.csv) if args.csv else (
        Path(tempfile.gettempdir()) / "info_nce_gpu_dryrun.csv" if args.dry_run else RESULTS / "info_nce_gpu.csv")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "absent"
    dev_name = torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or 'unknown'}), dry run"
    print(f"device: {dev_name}; torch {torch.__version__}; triton {triton_version}; dtype {args.dtype}", flush=True)

    rows = []
    too_slow = set()
    for d in ds:
        gemm_M = 256 if args.dry_run else 16384
        gemm = gemm_tflops(d, dtype, device, gemm_M, args.reps, cuda)
        print(f"d={d}: bf16-class GEMM ({gemm_M}x{d})@({d}x{gemm_M}): {gemm:.1f} TFLOP/s", flush=True)
        for N in Ns:
            g = torch.Generator(device="cpu").manual_seed(N + d)
            z = torch.nn.functional.normalize(torch.randn(N, d, generator=g), dim=1).to(device=device, dtype=dtype)
            a = z
            b = torch.nn.functional.normalize(torch.randn(N, d, generator=g), dim=1).to(device=device, dtype=dtype)
            for form in args.forms:
                for mode in args.modes:
                    for provider in args.providers:
                        row = dict(device=dev_name, form=form, provider=provider, mode=mode, N=N, d=d,
                                   dtype=args.dtype, torch=torch.__version__, triton=triton_version,
                                   gemm_tflops=round(gemm, 2), dry_run=int(args.dry_run))
                        rows.append(row)
                        key = (form, provider, mode, d)
                        if key in too_slow:
                            row["status"] = f"skipped: slower than {args.max_seconds}s at a smaller N"
                            report(row)
                            continue
                        if cuda:
                            free, _ = torch.cuda.mem_get_info(device)
                            need = naive_bytes(provider, form, N, mode)
                            if need > 0.9 * free:
                                row["status"] = f"skipped: needs ~{need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"
                                report(row)
                                continue
                        try:
                            fn = (make_single(provider, z, args.temperature, mode) if form == "single"
                                  else make_clip(provider, a, b, args.temperature, mode))
                            if isinstance(fn, str):
                                row["status"] = f"unavailable: {fn}"
                                report(row)
                                continue
                            if cuda:
                                torch.cuda.synchronize()
                                torch.cuda.empty_cache()
                                base = torch.cuda.memory_allocated(device)
                                torch.cuda.reset_peak_memory_stats(device)
                            ms, loss = timed(fn, args.reps, args.warmup, cuda)
                            flops = (2 if mode == "fwd" else (4 if form == "single" else 6)) * N * N * d
                            tf = flops / (ms * 1e-3) / 1e12
                            row.update(status="ok", time_ms=round(ms, 3), tflops=round(tf, 2),
                                       pct_gemm=round(100 * tf / gemm, 1), loss=float(loss))
                            if cuda:
                                row["peak_mib_beyond_inputs"] = round(
                                    (torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
                            if ms > args.max_seconds * 1e3:
                                too_slow.add(key)
                        except torch.cuda.OutOfMemoryError:
                            row["status"] = "out of memory"
                            too_slow.add(key)
                        except Exception as e:  # record, keep going
                            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                        finally:
                            fn = None
                            if cuda:
                                torch.cuda.empty_cache()
                        report(row)
            del z, a, b
    keys = ["device", "form", "provider", "mode", "N", "d", "dtype", "status", "time_ms", "tflops",
            "gemm_tflops", "pct_gemm", "peak_mib_beyond_inputs", "loss", "torch", "triton", "dry_run"]
    with open(out_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out_path} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
