"""Benchmark InfoNCE / NT-Xent (and the two-tower CLIP loss) on the CPU.

Providers (single tower, SimCLR's NT-Xent over N = 2B rows, self excluded):
  contrastive      this library's blockwise engine (the default path of info_nce)
  dense            this library's dense path (holds the N x N logits, analytic backward)
  naive            plain PyTorch autograd of the dense formula
  pml              pytorch-metric-learning's NTXentLoss (labels pair row i with i + B)
  gemm2            two plain N x N x d GEMMs, S = Z Z^T and S Z: the 4 N^2 d flops floor
Two towers (--objective clip): contrastive (blockwise clip_loss), dense, naive, and
info-nce-pytorch's InfoNCE (one direction only: half of CLIP's work, shown for reference).

Every configuration runs in a fresh process (memory capped with RLIMIT_AS, time capped),
takes the median of several runs after a warm-up, and records peak RSS. A provider that
runs out of memory or time is recorded as such. Output: CSV in benchmarks/results/, a PNG
plot (time and memory against N, log-log) and a Markdown table on stdout.

    python benchmarks/bench_info_nce.py                    # the README's configuration
    python benchmarks/bench_info_nce.py --quick            # a small smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TAU = 0.5


# ---------------------------------------------------------------- worker side


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _make(objective: str, provider: str, N: int, d: int):
    import torch
    import torch.nn.functional as F

    import contrastive

    B = N // 2
    if objective == "clip":
        if provider == "contrastive":
            return lambda a, b: contrastive.clip_loss(a, b, TAU)
        if provider == "dense":
            return lambda a, b: contrastive.clip_loss(a, b, TAU, backend="dense")
        if provider == "naive":

            def naive_clip(a, b):
                S = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / TAU
                t = torch.arange(S.shape[0])
                return 0.5 * (F.cross_entropy(S, t) + F.cross_entropy(S.T, t))

            return naive_clip
        if provider == "info-nce-pytorch":
            from info_nce import InfoNCE

            crit = InfoNCE(temperature=TAU)
            return lambda a, b: crit(a, b)
        raise ValueError(provider)
    if provider == "contrastive":
        return lambda z: contrastive.nt_xent(z, TAU)
    if provider == "dense":
        return lambda z: contrastive.nt_xent(z, TAU, backend="dense")
    if provider == "naive":

        def naive(z):
            z = F.normalize(z, dim=1)
            S = z @ z.T / TAU
            S = S.masked_fill(torch.eye(S.shape[0], dtype=torch.bool), float("-inf"))
            p = (torch.arange(S.shape[0]) + B) % S.shape[0]
            return F.cross_entropy(S, p)

        return naive
    if provider == "pml":
        from pytorch_metric_learning.losses import NTXentLoss

        crit = NTXentLoss(temperature=TAU)
        labels = torch.arange(B).repeat(2)
        return lambda z: crit(z, labels)
    if provider == "gemm2":
        return lambda z: torch.mm(torch.mm(z, z.T), z)
    raise ValueError(provider)


def worker(args) -> None:
    mem_cap = int(args.mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))
    import torch

    torch.manual_seed(0)
    N, d = args.n, args.d
    fn = _make(args.objective, args.provider, N, d)
    two = args.objective == "clip"
    inputs = [torch.randn(N, d) for _ in range(2 if two else 1)]
    measure(fn, inputs, args.mode == "fwd+bwd" and args.provider != "gemm2", args)


def measure(fn, inputs, backward: bool, args) -> None:
    """Time ``fn(*inputs)`` (and its backward): the median of ``args.repeats`` calls after an
    optional warm-up; print one JSON line with the time and the process's peak RSS."""
    import torch

    base = _rss_mib()

    def once():
        xs = [x.detach().requires_grad_(backward) for x in inputs]
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = fn(*xs)
            if backward:
                out.backward()
        return time.perf_counter() - t0

    times = []
    deadline = time.perf_counter() + args.budget_s
    if args.warmup:
        once()
    while len(times) < args.repeats and (not times or time.perf_counter() < deadline):
        times.append(once())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "time_s": statistics.median(times),
                "runs": len(times),
                "peak_rss_mib": peak,
                "base_rss_mib": base,
            }
        )
    )


# ---------------------------------------------------------------- driver side


# the measurement columns every worker row has (after the benchmark's own key column)
MEASURED = ["mode", "d", "N", "provider", "status", "time_s", "runs", "peak_rss_mib", "base_rss_mib"]


def result_text(r: dict) -> str:
    """A measured row as printed while the sweep runs: its time and peak, or its status."""
    return f"{r['time_s']:.3f} s, peak {r['peak_rss_mib']:.0f} MiB" if r["status"] == "ok" else r["status"]


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (dicts; keys outside ``fields`` ignored) as a CSV with ``fields`` as header."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def run_one(objective, provider, N, d, mode, a) -> dict:
    big = N >= 65536 or (provider == "pml" and N >= 1024)  # one timed call, no warm-up
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--objective",
        objective,
        "--provider",
        provider,
        "--n",
        str(N),
        "--d",
        str(d),
        "--mode",
        mode,
        "--mem-gib",
        str(a.mem_gib),
        "--repeats",
        str(1 if big else a.repeats),
        "--budget-s",
        str(a.timeout_s / 3),
    ]
    if not big:
        cmd.append("--warmup")
    row = {"objective": objective, "provider": provider, "N": N, "d": d, "mode": mode}
    return run_worker(cmd, row, a.timeout_s)


def run_worker(cmd, row: dict, timeout_s: float) -> dict:
    """Run one worker command; ``row`` plus its JSON result, or a status (out of memory, ...)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timeout (> {timeout_s:.0f} s)"}
    if p.returncode != 0:
        err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
        oom = any(
            k in p.stderr for k in ("MemoryError", "can't allocate", "DefaultCPUAllocator", "out of memory")
        )
        return {**row, "status": "out of memory" if oom else f"error: {err[:120]}"}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    return {**row, "status": "ok", **res}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def plot(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for prov in sorted({r["provider"] for r in rows}):
        pts = sorted((r["N"], r) for r in rows if r["provider"] == prov and r["status"] == "ok")
        if not pts:
            continue
        axes[0].plot([n for n, _ in pts], [r["time_s"] for _, r in pts], "o-", label=prov)
        axes[1].plot([n for n, _ in pts], [r["peak_rss_mib"] for _, r in pts], "o-", label=prov)
    for ax, lab in zip(axes, ["time per call (s)", "peak RSS (MiB)"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (rows)")
        ax.set_ylabel(lab)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows) -> str:
    out = [
        "| objective | mode | d | N | provider | time (ms) | speed-up vs naive | time / two GEMMs | peak RSS (MiB) | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def key(r):
        return (r["objective"], r["mode"], r["d"], r["N"])

    for r in rows:
        ref = {x["provider"]: x for x in rows if key(x) == key(r) and x["status"] == "ok"}
        ok = r["status"] == "ok"
        t = r.get("time_s")
        vs_naive = (
            f"{ref['naive']['time_s'] / t:.2f}x" if ok and "naive" in ref and r["provider"] != "naive" else ""
        )
        gem = [
            x
            for x in rows
            if x["provider"] == "gemm2" and x["N"] == r["N"] and x["d"] == r["d"] and x["status"] == "ok"
        ]
        vs_gemm = f"{t / gem[0]['time_s']:.2f}" if ok and gem and r["provider"] != "gemm2" else ""
        out.append(
            f"| {r['objective']} | {r['mode']} | {r['d']} | {r['N']} | {r['provider']} | "
            f"{t * 1e3:.1f} | {vs_naive} | {vs_gemm} | {r['peak_rss_mib']:.0f} | ok |"
            if ok
            else f"| {r['objective']} | {r['mode']} | {r['d']} | {r['N']} | {r['provider']} | | | | | {r['status']} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--objective", default="nt_xent", choices=["nt_xent", "clip"])
    ap.add_argument("--provider", default="contrastive")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--mode", default="fwd+bwd", choices=["fwd", "fwd+bwd"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", action="store_true")
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--mem-gib", type=float, default=20.0, help="address-space cap per configuration")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--quick", action="store_true", help="small N only, a smoke run")
    ap.add_argument("--plan", default="full", choices=["full", "main", "clip", "large"])
    ap.add_argument("--out", default=None, help="CSV name under benchmarks/results/")
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    single = ["contrastive", "dense", "naive", "pml", "gemm2"]
    configs = []
    if a.quick:
        for mode in ("fwd", "fwd+bwd"):
            configs += [("nt_xent", p, n, 64, mode) for n in (256, 1024) for p in single]
            configs += [("clip", p, 512, 64, mode) for p in ("contrastive", "dense", "naive")]
    else:
        if a.plan in ("full", "main"):
            for mode in ("fwd", "fwd+bwd"):
                for n in (1024, 4096, 16384):
                    configs += [("nt_xent", p, n, 128, mode) for p in single]
                configs += [("nt_xent", p, 16384, 512, mode) for p in ("contrastive", "naive", "gemm2")]
        if a.plan in ("full", "large"):
            for mode in ("fwd", "fwd+bwd"):
                configs += [("nt_xent", p, 65536, 128, mode) for p in ("contrastive", "naive")]
                configs += [("nt_xent", "contrastive", 262144, 128, mode)]
        if a.plan in ("full", "clip"):
            for n in (4096, 16384):
                configs += [
                    ("clip", p, n, 128, "fwd+bwd")
                    for p in ("contrastive", "dense", "naive", "info-nce-pytorch")
                ]
    rows = []
    for cfg in configs:
        r = run_one(*cfg, a)
        rows.append(r)
        print(
            f"{cfg[0]:8s} {cfg[4]:8s} N={cfg[2]:7d} d={cfg[3]:4d} {cfg[1]:17s} {result_text(r)}", flush=True
        )
    RESULTS.mkdir(exist_ok=True)
    name = a.out or ("bench_info_nce_quick" if a.quick else f"bench_info_nce_{a.plan}")
    fields = ["objective", *MEASURED]
    write_csv(RESULTS / f"{name}.csv", fields, rows)
    desc = machine()
    fb = [
        r
        for r in rows
        if r["objective"] == "nt_xent" and r["mode"] == "fwd+bwd" and r["d"] == (64 if a.quick else 128)
    ]
    if fb:
        plot(fb, RESULTS / f"{name}.png", f"NT-Xent forward+backward, float32, d = {fb[0]['d']}: {desc}")
    print(f"\nMachine: {desc}\n")
    print(table(rows))
    print(f"\nwrote {RESULTS / (name + '.csv')}")


if __name__ == "__main__":
    main()
