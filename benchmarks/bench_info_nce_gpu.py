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

Rows go to the CSV as they are measured (a killed run keeps them); at the end a markdown table
(``--table``, the README's) and a plot of TFLOP/s against N (``--plot``) are written beside it.
Shapes run d by d in the order given, N ascending; ``--budget-seconds`` skips a measurement whose predicted
time (the same provider at a smaller N, scaled by N^2) would overrun, and ``--rep-seconds``
caps the timed calls of a long one. ``make gpu-check`` runs this on its sweep.

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
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="a provider slower than this for one run skips the larger N",
    )
    ap.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="stop starting measurements predicted to end past this many seconds (rows say so)",
    )
    ap.add_argument(
        "--rep-seconds",
        type=float,
        default=3.0,
        help="at most this many seconds of timed calls per measurement (at least one call)",
    )
    ap.add_argument("--csv", default=None, help="output CSV (default benchmarks/results/info_nce_gpu.csv)")
    ap.add_argument("--table", default=None, help="markdown table (default: the CSV's path with .md)")
    ap.add_argument("--plot", default=None, help="PNG plot (default: the CSV's path with .png)")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU + Triton interpreter at tiny N: checks the script, measures nothing real",
    )
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
    inv_temp = 1.0 / temperature
    grad = mode == "fwd+bwd"
    if provider == "triton":
        from contrastive.kernels import info_nce_triton

        return lambda: info_nce_triton(z, inv_temp, True, compute_grad=grad)[0].mean()
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
        return run(lambda: contrastive.info_nce(leaf[: N // 2], leaf[N // 2 :], **kw))
    if provider == "dense":
        import contrastive

        if _api_accepts_backend(contrastive.info_nce):
            return run(
                lambda: contrastive.info_nce(
                    leaf[: N // 2],
                    leaf[N // 2 :],
                    temperature=temperature,
                    exclude_self=True,
                    normalize=False,
                    backend="dense",
                )
            )
        from contrastive.ops.info_nce_dense import DenseInfoNCEFn

        return run(lambda: DenseInfoNCEFn.apply(leaf, temperature, True, False).mean())
    if provider == "naive":
        labels = (torch.arange(N, device=z.device) + N // 2) % N
        eye = torch.eye(N, dtype=torch.bool, device=z.device)

        def naive():
            S = (leaf @ leaf.T).float() * inv_temp  # (N, N)
            return F.cross_entropy(S.masked_fill(eye, float("-inf")), labels)

        return run(naive)
    raise ValueError(provider)


def make_clip(provider, a, b, temperature, mode):
    import torch
    import torch.nn.functional as F

    N = a.shape[0]
    inv_temp = 1.0 / temperature
    grad = mode == "fwd+bwd"
    if provider == "triton":
        from contrastive.kernels import clip_triton

        return lambda: clip_triton(a, b, inv_temp, compute_grad=grad)[0].mean()
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
            S = (la @ lb.T).float() * inv_temp  # (N, N)
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
        scale = torch.tensor(inv_temp, device=a.device)
        return run(
            lambda: (
                0.5
                * (
                    cal_inf_loss(la, lb, scale=scale, head_dim=head)
                    + cal_inf_loss(lb, la, scale=scale, head_dim=head)
                )
            )
        )
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


def _once(fn, cuda):
    """(milliseconds, output) of one call: CUDA events on a GPU, the wall clock on CPU."""
    import torch

    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end), out
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def timed(fn, reps, warmup, cuda, rep_seconds=None):
    """Median milliseconds of ``reps`` calls after ``warmup`` untimed ones, and the last output.

    With ``rep_seconds``, fewer timed calls when one call is long: at most as many as fit in
    that many seconds (at least one), so that N = 2^20 does not eat the run's time budget.
    """
    out, last = None, None
    for _ in range(warmup):
        last, out = _once(fn, cuda)
    if rep_seconds is not None and last is not None:
        reps = max(1, min(reps, int(rep_seconds * 1e3 // max(last, 1e-3))))
    times = []
    for _ in range(reps):
        ms, out = _once(fn, cuda)
        times.append(ms)
    return statistics.median(times), out


def gemm_tflops(M, K, Ncols, dtype, device, reps, cuda):
    """Achieved TFLOP/s of a (M x K) @ (K x Ncols) product on random data."""
    import torch

    A = torch.randn(M, K, dtype=dtype, device=device)
    B = torch.randn(K, Ncols, dtype=dtype, device=device)
    ms, _ = timed(lambda: torch.mm(A, B), reps, 2, cuda)
    return 2.0 * M * K * Ncols / (ms * 1e-3) / 1e12


def report(row):
    ok = row.get("status") == "ok"
    extra = (
        (
            f" {row['time_ms']:.2f} ms {row['tflops']:.1f} TFLOP/s ({row['pct_gemm']:.0f}% GEMM) "
            f"peak +{row.get('peak_mib_beyond_inputs', 'n/a')} MiB loss {row['loss']:.5f}"
        )
        if ok
        else ""
    )
    print(
        f"{row['form']:6s} {row['mode']:7s} {row['provider']:12s} N={row['N']:<8d} d={row['d']:<4d} "
        f"{row.get('status')}{extra}",
        flush=True,
    )


def flops(form, mode, N, d):
    """Nominal flops: 2 N^2 d forward; 4 N^2 d (single) or 6 N^2 d (two towers) forward+backward."""
    return (2 if mode == "fwd" else (4 if form == "single" else 6)) * N * N * d


KEYS = [
    "device",
    "form",
    "provider",
    "mode",
    "N",
    "d",
    "dtype",
    "status",
    "time_ms",
    "tflops",
    "gemm_tflops",
    "pct_gemm",
    "gemm_d_tflops",
    "peak_mib_beyond_inputs",
    "loss",
    "torch",
    "triton",
    "dry_run",
]


# ------------------------------------------------------------------------------ outputs
def _cell(row):
    if row.get("status") != "ok":
        st = row.get("status", "")
        return "oom" if "memory" in st else "-" if st.startswith(("unavailable", "skipped")) else "error"
    mem = row.get("peak_mib_beyond_inputs")
    mem = f", +{float(mem) / 1024:.2f} GiB" if mem not in (None, "") else ""
    return f"{float(row['time_ms']):.2f} ms, {float(row['tflops']):.0f} TFLOP/s ({float(row['pct_gemm']):.0f} %){mem}"


def markdown_table(rows):
    """The README table: one block per (d, form, mode), providers by N; time, TFLOP/s, % GEMM, memory."""
    out = []
    if not rows:
        return ""
    g = rows[0].get("gemm_tflops")
    out.append(
        f"Device: {rows[0]['device']}; torch {rows[0]['torch']}; triton {rows[0]['triton']}; "
        f"{rows[0]['dtype']}. Cell: median time, nominal TFLOP/s (% of the {g} TFLOP/s square "
        f"bf16 GEMM measured in the same run), peak memory beyond the inputs."
    )
    groups = {}
    for r in rows:
        groups.setdefault((int(r["d"]), r["form"], r["mode"]), []).append(r)
    for (d, form, mode), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "single", kv[0][2])
    ):
        Ns = sorted({int(r["N"]) for r in rs})
        provs = list(dict.fromkeys(r["provider"] for r in rs))
        if all(r.get("status") != "ok" for r in rs):
            continue
        out.append("")
        out.append(
            f"{'NT-Xent (single tower)' if form == 'single' else 'CLIP (two towers)'}, {mode}, d = {d}"
        )
        out.append("")
        out.append("| provider | " + " | ".join(f"N = {n}" for n in Ns) + " |")
        out.append("| --- |" + " --- |" * len(Ns))
        for p in provs:
            cells = {int(r["N"]): _cell(r) for r in rs if r["provider"] == p}
            if all(c in ("-",) for c in cells.values()):
                continue
            out.append(f"| {p} | " + " | ".join(cells.get(n, "") for n in Ns) + " |")
    return "\n".join(out) + "\n"


def plot(rows, path):
    """TFLOP/s against N, one panel per d, one line per (form, provider, mode); the GEMM rate dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # no matplotlib: the CSV and the table still stand
        print(f"no plot ({type(e).__name__}: {e})")
        return False
    ok = [r for r in rows if r.get("status") == "ok"]
    ds = sorted({int(r["d"]) for r in rows}) or [0]
    fig, axes = plt.subplots(1, len(ds), figsize=(6 * len(ds), 4.5), squeeze=False)
    for ax, d in zip(axes[0], ds):
        lines = {}
        for r in ok:
            if int(r["d"]) == d:
                lines.setdefault((r["form"], r["provider"], r["mode"]), []).append(
                    (int(r["N"]), float(r["tflops"]))
                )
        for (form, prov, mode), pts in sorted(lines.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{prov} {form} {mode}")
        gemm = [float(r["gemm_tflops"]) for r in rows if r.get("gemm_tflops") not in (None, "")]
        if gemm:
            ax.axhline(gemm[0], linestyle="--", color="gray", label="bf16 GEMM (square)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (rows)")
        ax.set_ylabel("TFLOP/s (nominal)")
        ax.set_title(f"d = {d}, {rows[0]['dtype'] if rows else ''}")
        ax.legend(fontsize=7)
    fig.suptitle(f"InfoNCE on {rows[0]['device'] if rows else '?'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------ the sweep
def main(argv=None):
    args = parse_args(argv)
    t_start = time.monotonic()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before any Triton import
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print(
            "no CUDA device: nothing measured. Run this on a GPU, or pass --dry-run to check the "
            "script on CPU (Triton interpreter, tiny N).",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    Ns = args.N or ((32, 48) if args.dry_run else DEFAULT_N)
    ds = args.d or ((16,) if args.dry_run else DEFAULT_D)
    if args.dry_run:
        args.reps, args.warmup = 1, 1
    out_path = (
        Path(args.csv)
        if args.csv
        else (
            Path(tempfile.gettempdir()) / "info_nce_gpu_dryrun.csv"
            if args.dry_run
            else RESULTS / "info_nce_gpu.csv"
        )
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "absent"
    dev_name = (
        torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or 'unknown'}), dry run"
    )
    print(
        f"device: {dev_name}; torch {torch.__version__}; triton {triton_version}; dtype {args.dtype}",
        flush=True,
    )
    sq = 256 if args.dry_run else 8192
    gemm = gemm_tflops(sq, sq, sq, dtype, device, 3 if args.dry_run else 10, cuda)
    print(f"square GEMM {sq}^3 ({args.dtype}, random data): {gemm:.1f} TFLOP/s", flush=True)

    def left():
        return math.inf if args.budget_seconds is None else args.budget_seconds - (time.monotonic() - t_start)

    rows, too_slow, last = [], set(), {}
    gemm_d = {}
    f = open(out_path, "w", newline="")
    writer = csv.DictWriter(f, fieldnames=KEYS, extrasaction="ignore")
    writer.writeheader()
    # d in the order given, N ascending: a time budget cuts the last (largest) shapes of the last d
    for d, N in ((d, N) for d in ds for N in sorted(Ns)):
        if d not in gemm_d:
            M = 256 if args.dry_run else 16384
            gemm_d[d] = gemm_tflops(M, d, M, dtype, device, args.reps, cuda)
            print(f"d={d}: GEMM ({M}x{d})@({d}x{M}): {gemm_d[d]:.1f} TFLOP/s", flush=True)
        g = torch.Generator(device=device).manual_seed(N + d)  # drawn on the device: fast at 2^20
        z = torch.nn.functional.normalize(torch.randn(N, d, generator=g, device=device), dim=1).to(dtype)
        a = z
        b = torch.nn.functional.normalize(torch.randn(N, d, generator=g, device=device), dim=1).to(dtype)
        for form in args.forms:
            for mode in args.modes:
                for provider in args.providers:
                    row = dict(
                        device=dev_name,
                        form=form,
                        provider=provider,
                        mode=mode,
                        N=N,
                        d=d,
                        dtype=args.dtype,
                        torch=torch.__version__,
                        triton=triton_version,
                        gemm_tflops=round(gemm, 2),
                        gemm_d_tflops=round(gemm_d[d], 2),
                        dry_run=int(args.dry_run),
                    )
                    rows.append(row)
                    key = (form, provider, mode, d)
                    prev = last.get(key)
                    predicted = (
                        None if prev is None else prev[1] * (N / prev[0]) ** 2 * 2e-3
                    )  # s, warm-up + 1
                    fn = None
                    try:
                        if key in too_slow:
                            row["status"] = f"skipped: slower than {args.max_seconds}s at a smaller N"
                            continue
                        if predicted is not None and predicted > left():
                            row["status"] = (
                                f"skipped: ~{predicted:.0f} s predicted, {max(left(), 0):.0f} s left of the budget"
                            )
                            continue
                        if left() <= 0:
                            row["status"] = "skipped: time budget spent"
                            continue
                        if cuda:
                            free, _ = torch.cuda.mem_get_info(device)
                            need = naive_bytes(provider, form, N, mode)
                            if need > 0.9 * free:
                                row["status"] = (
                                    f"skipped: needs ~{need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"
                                )
                                continue
                        fn = (
                            make_single(provider, z, args.temperature, mode)
                            if form == "single"
                            else make_clip(provider, a, b, args.temperature, mode)
                        )
                        if isinstance(fn, str):
                            row["status"] = f"unavailable: {fn}"
                            continue
                        if cuda:
                            torch.cuda.synchronize()
                            torch.cuda.empty_cache()
                            base = torch.cuda.memory_allocated(device)
                            torch.cuda.reset_peak_memory_stats(device)
                        ms, loss = timed(fn, args.reps, args.warmup, cuda, args.rep_seconds)
                        tf = flops(form, mode, N, d) / (ms * 1e-3) / 1e12
                        row.update(
                            status="ok",
                            time_ms=round(ms, 3),
                            tflops=round(tf, 2),
                            pct_gemm=round(100 * tf / gemm, 1),
                            loss=float(loss),
                        )
                        if cuda:
                            row["peak_mib_beyond_inputs"] = round(
                                (torch.cuda.max_memory_allocated(device) - base) / 2**20, 1
                            )
                        last[key] = (N, ms)
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
                        writer.writerow(row)  # a killed run keeps its rows
                        f.flush()
        del z, a, b
    f.close()
    print(f"wrote {out_path} ({len(rows)} rows)")
    table = markdown_table(rows)
    table_path = Path(args.table) if args.table else out_path.with_suffix(".md")
    table_path.write_text(table)
    png = Path(args.plot) if args.plot else out_path.with_suffix(".png")
    if plot(rows, png):
        print(f"wrote {png}")
    print(f"wrote {table_path}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
