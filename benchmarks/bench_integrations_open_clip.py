"""Benchmark open_clip's ClipLoss and SigLipLoss against contrastive's drop-ins on the CPU.

One loss call, forward and backward, on N random unit image and text features of dimension
d (float32), ``logit_scale = 1 / 0.07`` and ``logit_bias = -10``, for N from 1024 to 65536:
open-clip-torch 3.3.0's ``open_clip/loss.py`` (loaded by file path: importing the package would
need torchvision; ``make install`` installs it with ``--no-deps``) against
``contrastive.integrations.open_clip``. open_clip holds the N x N logits (and, for SigLIP, the
N x N labels and the sigmoid's saved tensors); ours runs on the blockwise engine, O(N d).

Every figure runs in a fresh process with its address space capped (``--mem-gib``, 8 by
default) and its wall time capped, so a configuration that does not fit is recorded as "out of
memory" rather than dropped. Output: a CSV (and a PNG when matplotlib is installed) in
benchmarks/results/, a Markdown table with the speed-up and memory ratio on stdout. Timings
are only meaningful on a quiet machine.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_integrations_open_clip.py            # N = 1024 .. 65536
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_integrations_open_clip.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from bench_info_nce import MEASURED, machine, measure, plot, result_text, run_worker, write_csv  # noqa: E402  (shared by every benchmark)

LOSSES = ("clip", "siglip")
PROVIDERS = ("open_clip", "contrastive")
SIZES = (1024, 4096, 16384, 65536)
SCALE, BIAS = 1 / 0.07, -10.0


def open_clip_loss_module():
    """open_clip/loss.py of the installed open-clip-torch, as a module of its own."""
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise SystemExit("open-clip-torch is not installed: pip install --no-deps open-clip-torch==3.3.0")
    path = Path(spec.origin).parent / "loss.py"
    mod_spec = importlib.util.spec_from_file_location("_open_clip_loss", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def _make(loss: str, provider: str):
    import torch

    if provider == "open_clip":
        oc = open_clip_loss_module()
        crit = oc.ClipLoss() if loss == "clip" else oc.SigLipLoss()
    else:
        from contrastive.integrations import open_clip as ours

        crit = ours.ClipLoss() if loss == "clip" else ours.SigLipLoss()
    scale, bias = torch.tensor(SCALE), torch.tensor(BIAS)
    return lambda img, txt: crit(img, txt, scale, bias)


def worker(args) -> None:
    mem_cap = int(args.mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    fn = _make(args.loss, args.provider)
    inputs = [F.normalize(torch.randn(args.n, args.d), dim=1) for _ in range(2)]
    measure(fn, inputs, True, args)


def run_one(loss: str, provider: str, N: int, a) -> dict:
    big = N >= 16384  # one timed call, no warm-up
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--loss",
        loss,
        "--provider",
        provider,
        "--n",
        str(N),
        "--d",
        str(a.d),
        "--mem-gib",
        str(a.mem_gib),
        "--repeats",
        str(1 if big else a.repeats),
        "--budget-s",
        str(a.timeout_s / 3),
    ]
    if not big:
        cmd.append("--warmup")
    row = {"loss": loss, "provider": provider, "N": N, "d": a.d, "mode": "fwd+bwd"}
    return run_worker(cmd, row, a.timeout_s)


def _cell(by: dict, p: str, key: str, fmt: str) -> str:
    """One provider's figure (or its status, for the time column) in a table cell."""
    r = by.get(p)
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"] if key == "time_s" else ""
    return fmt.format(r[key] * (1e3 if key == "time_s" else 1))


def table(rows: list[dict]) -> str:
    out = [
        "| loss | N | d | open_clip (ms) | ours (ms) | speed-up | open_clip peak RSS (MiB) | ours (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for loss in LOSSES:
        for N in sorted({r["N"] for r in rows if r["loss"] == loss}):
            by = {r["provider"]: r for r in rows if r["loss"] == loss and r["N"] == N}
            ok = all(by.get(p, {}).get("status") == "ok" for p in PROVIDERS)
            ratio = f"{by['open_clip']['time_s'] / by['contrastive']['time_s']:.2f}x" if ok else ""
            d = next(iter(by.values()))["d"]
            out.append(
                f"| {loss} | {N} | {d} | {_cell(by, 'open_clip', 'time_s', '{:.1f}')} | "
                f"{_cell(by, 'contrastive', 'time_s', '{:.1f}')} | {ratio} | "
                f"{_cell(by, 'open_clip', 'peak_rss_mib', '{:.0f}')} | "
                f"{_cell(by, 'contrastive', 'peak_rss_mib', '{:.0f}')} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--loss", default="clip", choices=LOSSES)
    ap.add_argument("--provider", default="contrastive", choices=PROVIDERS)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="N values of the sweep")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", action="store_true")
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--mem-gib", type=float, default=8.0, help="address-space cap per configuration")
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true", help="N = 64 and 256, d = 16: a smoke run")
    ap.add_argument("--out", default=None, help="CSV name under benchmarks/results/ (no extension)")
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    if a.quick:
        a.sizes, a.d, a.repeats = [64, 256], 16, 1
    rows = []
    for loss in LOSSES:
        for N in a.sizes:
            for provider in PROVIDERS:
                r = run_one(loss, provider, N, a)
                rows.append(r)
                print(f"{loss:7s} N={N:6d} d={a.d:4d} {provider:12s} {result_text(r)}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    name = a.out or ("bench_integrations_open_clip_quick" if a.quick else "bench_integrations_open_clip")
    fields = ["loss", *MEASURED]
    write_csv(RESULTS / f"{name}.csv", fields, rows)
    try:
        for loss in LOSSES:
            plot(
                [r for r in rows if r["loss"] == loss],
                RESULTS / f"{name}_{loss}.png",
                f"open_clip {'ClipLoss' if loss == 'clip' else 'SigLipLoss'} vs contrastive, "
                f"fwd+bwd, d = {a.d}\n{machine()}",
            )
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
    print(f"\n{machine()}\n\n" + table(rows))


if __name__ == "__main__":
    main()
