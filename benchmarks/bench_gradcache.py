"""Benchmark gradient caching (contrastive.GradCache) against the plain SimCLR step on the CPU.

One SimCLR training step on a batch of B samples: the two views stacked (2B float32 images,
random pixels; the augmentation is left out, it costs the same in both modes), encoder +
projection head of ``contrastive.train.models`` (the digits SmallCNN on 1 x 8 x 8, the CIFAR
ResNet-18 on 3 x 32 x 32), InfoNCE on the 2B projections (d = 128, tau = 0.5), backward,
an SGD step. ``plain`` embeds the whole batch with one graph; ``cached`` runs
``GradCache(model, chunk_size=256)`` (chunks of 256 images). Reported: time per sample (one
sample = its two views), as process CPU time (one torch thread: the steadier measure when
other jobs share the cores) and as wall time, and peak RSS.

Every configuration runs in a fresh process (address space capped with RLIMIT_AS, wall
time capped), so a plain step that does not fit is recorded as "out of memory" at that cap,
not dropped. The load average (``/proc/loadavg``) is recorded before each configuration:
the machine is shared. Output: CSV + PNG in benchmarks/results/, a Markdown table on stdout.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_gradcache.py               # the README's sweep
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_gradcache.py --quick       # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from bench_info_nce import machine, run_worker, write_csv  # noqa: E402  (shared by every benchmark)

MODELS = {"cnn": ("digits SmallCNN", (1, 8, 8), 32), "resnet18": ("CIFAR ResNet-18", (3, 32, 32), 64)}


# ---------------------------------------------------------------- worker side
def worker(a) -> None:
    cap = int(a.mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch
    from torch import nn

    import contrastive
    from contrastive.train.config import ModelConfig
    from contrastive.train.models import build_model

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    _, shape, width = MODELS[a.model]
    model = build_model(
        ModelConfig(encoder=a.model, width=width, proj_dim=128), shape, [0.5] * shape[0], [0.25] * shape[0]
    )

    class Project(nn.Module):  # x -> z (the loss needs only the projection)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)[1]

    net = Project(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def loss_fn(z):  # (2B, 128): views stacked, row i pairs with i + B
        return contrastive.nt_xent(z, 0.5)  # = info_nce(z[:B], z[B:]) without concatenating them

    cache = contrastive.GradCache(net, chunk_size=a.chunk)

    def step(x):
        opt.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        if a.mode == "plain":
            loss = loss_fn(net(x))
            loss.backward()
        else:
            loss = cache.step(loss_fn, x)
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0, float(loss.detach())

    if a.model == "cnn":  # warm-up (a ResNet step takes a minute)
        step(torch.rand(min(2 * a.batch, 2 * a.chunk), *shape))
    x = torch.rand(2 * a.batch, *shape)  # (2B, C, H, W) float32
    times, cpu, losses = [], [], []
    deadline = time.perf_counter() + a.min_time_s
    while len(times) < a.repeats and (not times or time.perf_counter() < deadline):
        t, c, loss = step(x)
        times.append(t)
        cpu.append(c)
        losses.append(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "step_s": statistics.median(times),
                "step_cpu_s": statistics.median(cpu),
                "steps": len(times),
                "peak_rss_mib": peak,
                "loss": losses[-1],
            }
        )
    )


# ---------------------------------------------------------------- driver side
def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_one(model: str, mode: str, batch: int, a) -> dict:
    row = {
        "model": model,
        "mode": mode,
        "batch": batch,
        "chunk": a.chunk if mode == "cached" else "",
        "threads": a.threads,
        "mem_cap_gib": a.mem_gib,
        "load_before": loadavg(),
    }
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--model",
        model,
        "--mode",
        mode,
        "--batch",
        str(batch),
        "--chunk",
        str(a.chunk),
        "--threads",
        str(a.threads),
        "--mem-gib",
        str(a.mem_gib),
        "--repeats",
        str(a.repeats),
        "--min-time-s",
        str(a.min_time_s),
    ]
    t0 = time.perf_counter()
    r = run_worker(cmd, row, a.timeout_s)
    if r["status"].startswith("timeout"):
        return r
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    if r["status"] == "out of memory":
        r["status"] = f"out of memory (cap {a.mem_gib:g} GiB)"
    if r["status"] != "ok":
        return r
    return {
        **r,
        "us_per_sample": r["step_s"] / batch * 1e6,
        "cpu_us_per_sample": r["step_cpu_s"] / batch * 1e6,
    }


def plot(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in MODELS:
        for mode, style in (("plain", "o--"), ("cached", "s-")):
            pts = sorted((r["batch"], r) for r in rows if r["model"] == model and r["mode"] == mode)
            ok = [(b, r) for b, r in pts if r["status"] == "ok"]
            if not pts:
                continue
            label = f"{MODELS[model][0]}, {mode}"
            line = axes[0].plot(
                [b for b, _ in ok], [r["cpu_us_per_sample"] / 1e3 for _, r in ok], style, label=label
            )[0]
            axes[1].plot(
                [b for b, _ in ok], [r["peak_rss_mib"] for _, r in ok], style, color=line.get_color()
            )
            for b, r in pts:
                if r["status"].startswith("out of memory"):
                    for ax in axes:
                        ax.axvline(b, color=line.get_color(), ls=":", alpha=0.6)
                    axes[1].annotate(
                        "plain OOM",
                        (b, axes[1].get_ylim()[1]),
                        fontsize=7,
                        color=line.get_color(),
                        ha="center",
                        va="top",
                    )
    for ax, lab in zip(axes, ["CPU time per sample (ms; 1 sample = 2 views)", "peak RSS (MiB)"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch B (samples)")
        ax.set_ylabel(lab)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ms(r, key):
    return f"{r[key] / 1e3:.3f}" if r.get("status") == "ok" else (r.get("status") or "not run")


def table(rows) -> str:
    out = [
        "| encoder | batch B | plain ms/sample (CPU) | cached ms/sample (CPU) | cached / plain (CPU) | "
        "cached / plain (wall) | plain peak RSS (MiB) | cached peak RSS (MiB) | load avg (plain; cached) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        for b in sorted({r["batch"] for r in rows if r["model"] == model}):
            cell = {r["mode"]: r for r in rows if r["model"] == model and r["batch"] == b}
            p, c = cell.get("plain", {}), cell.get("cached", {})
            both = p.get("status") == "ok" and c.get("status") == "ok"

            def ratio(k: str, c: dict = c, p: dict = p, both: bool = both) -> str:
                return f"{c[k] / p[k]:.2f}x" if both else ""

            def mem(r: dict) -> str:
                return f"{r['peak_rss_mib']:.0f}" if r.get("status") == "ok" else ""

            out.append(
                f"| {MODELS[model][0]} | {b} | {_ms(p, 'cpu_us_per_sample')} | {_ms(c, 'cpu_us_per_sample')} | "
                f"{ratio('cpu_us_per_sample')} | {ratio('us_per_sample')} | {mem(p)} | {mem(c)} | "
                f"{p.get('load_before', '')}; {c.get('load_before', '')} |"
            )
    return "\n".join(out)


FIELDS = [
    "model",
    "mode",
    "batch",
    "chunk",
    "status",
    "step_s",
    "step_cpu_s",
    "steps",
    "us_per_sample",
    "cpu_us_per_sample",
    "peak_rss_mib",
    "loss",
    "wall_s",
    "threads",
    "mem_cap_gib",
    "load_before",
]


def read_csv(path: Path) -> list:
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            r["batch"] = int(r["batch"])
            for k in ("step_s", "step_cpu_s", "us_per_sample", "cpu_us_per_sample", "peak_rss_mib"):
                r[k] = float(r[k]) if r.get(k) else None
            rows.append(r)
    return rows


def report(rows, name: str, a) -> None:
    desc = f"{machine()}, {a.threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    plot(rows, RESULTS / f"{name}.png", f"SimCLR step, plain vs GradCache (chunk {a.chunk}), float32: {desc}")
    print(f"\nMachine: {desc}; load average now {loadavg()}\n")
    print(table(rows))
    print(f"\nwrote {RESULTS / (name + '.png')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="cnn", choices=list(MODELS))
    ap.add_argument("--mode", default="cached", choices=["plain", "cached"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per configuration")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps at most (median)")
    ap.add_argument("--min-time-s", type=float, default=20.0, help="stop repeating after this long")
    ap.add_argument("--mem-gib", type=float, default=8.0, help="address-space cap per configuration")
    ap.add_argument("--timeout-s", type=float, default=1800.0)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--cnn-batches", type=int, nargs="*", default=[256, 1024, 4096, 16384, 65536])
    ap.add_argument("--resnet-batches", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--quick", action="store_true", help="B = 256 and 512 on the CNN only")
    ap.add_argument("--out", default="bench_gradcache", help="CSV/PNG name under benchmarks/results/")
    ap.add_argument(
        "--report",
        nargs="*",
        default=None,
        metavar="CSV",
        help="no runs: merge these CSVs into --out (CSV, PNG) and print the table",
    )
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    RESULTS.mkdir(exist_ok=True)
    if a.report is not None:
        rows = [r for path in a.report for r in read_csv(Path(path))]
        write_csv(RESULTS / f"{a.out}.csv", FIELDS, rows)
        return report(rows, a.out, a)
    if a.quick:
        a.models, a.cnn_batches, a.out = ["cnn"], [256, 512], a.out + "_quick"
    plan = [(m, b) for m in a.models for b in (a.cnn_batches if m == "cnn" else a.resnet_batches)]
    rows = []
    with open(RESULTS / f"{a.out}.csv", "w", newline="") as f:  # rows written as they come
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        plain_oom = {m: False for m in MODELS}
        for model, b in plan:
            for mode in ("plain", "cached"):
                if mode == "plain" and plain_oom[model]:
                    r = {
                        "model": model,
                        "mode": mode,
                        "batch": b,
                        "status": "skipped (plain ran out of memory below)",
                    }
                else:
                    r = run_one(model, mode, b, a)
                    plain_oom[model] |= mode == "plain" and r["status"].startswith("out of memory")
                rows.append(r)
                w.writerow(r)
                f.flush()
                msg = (
                    f"{r['cpu_us_per_sample'] / 1e3:.3f} ms/sample CPU, {r['us_per_sample'] / 1e3:.3f} wall, peak "
                    f"{r['peak_rss_mib']:.0f} MiB, {r['steps']} step(s)"
                    if r["status"] == "ok"
                    else r["status"]
                )
                print(f"{model:8s} B={b:6d} {mode:6s} {msg}  [load {r.get('load_before', '')}]", flush=True)
    report(rows, a.out, a)


if __name__ == "__main__":
    main()
