"""Accuracy of every objective and back-end against float64, on the GPU: the table of docs/gpu.md.

For each objective (info_nce, info_nce decoupled, clip_loss, supcon_loss, retrieval_loss with
one hard negative per anchor, siglip_loss), back-end (the Triton kernels where they exist, the
torch engine) and input dtype (float32, bfloat16, float16), one forward+backward with a
learnable temperature (and SigLIP's bias) against the float64 torch engine on the *same
rounded inputs*, so the figures measure the computation, not the rounding of the inputs:

* ``loss``: relative error of the mean loss (as returned, i.e. rounded to the input dtype);
* ``rows``: ||l - l64|| / ||l64|| over the per-row losses (``reduction='none'``);
* ``grad``: ||g - g64|| / ||g64|| over all input gradients;
* ``param``: relative error of the temperature gradient (the largest of temperature and bias).

The float64 torch engine is itself checked against naive float64 autograd on the device by the
CUDA tests (tests/cuda). Writes a CSV and a markdown table.

    python benchmarks/gpu_accuracy.py --csv benchmarks/results/gpu_check/accuracy.csv
    python benchmarks/gpu_accuracy.py --dry-run          # CPU, Triton interpreter, tiny N
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

OBJECTIVES = ("info_nce", "info_nce_decoupled", "clip_loss", "supcon_loss", "retrieval_loss", "siglip_loss")
DTYPES = ("float32", "bfloat16", "float16")
KEYS = [
    "device",
    "objective",
    "backend",
    "dtype",
    "N",
    "d",
    "status",
    "loss",
    "rows",
    "grad",
    "param",
    "seconds",
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=None, help="rows per tower (default 65536; dry run 16)")
    ap.add_argument("--d", type=int, default=None, help="feature dimension (default 128; dry run 16)")
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    ap.add_argument(
        "--csv",
        default=None,
        help="output CSV (default: a temp file in the dry run, else benchmarks/results/gpu_accuracy.csv)",
    )
    ap.add_argument("--table", default=None, help="markdown table (default: the CSV's path with .md)")
    ap.add_argument("--dry-run", action="store_true", help="CPU + Triton interpreter at tiny N")
    return ap.parse_args(argv)


def problem(name, N, d, dtype, rounded, device, tau, seed=0):
    """(fn(*inputs, *params, reduction), inputs in ``dtype`` rounded through ``rounded``, params)."""
    import torch

    import contrastive as C

    def x(*shape, s=0):
        g = torch.Generator(device=device).manual_seed(seed + s)
        return torch.randn(shape, generator=g, dtype=torch.float64, device=device).to(rounded).to(dtype)

    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    t = torch.tensor(tau, dtype=pdt, device=device)
    if name in ("info_nce", "info_nce_decoupled"):
        dec = name.endswith("decoupled")
        return (
            (
                lambda z, t_, r, **kw: (
                    C.nt_xent(z, t_, reduction=r, **kw)
                    if not dec
                    else C.info_nce(z[: N // 2], z[N // 2 :], t_, reduction=r, decoupled=True, **kw)
                )
            ),
            [x(N, d)],
            [t],
        )
    if name == "clip_loss":
        return (
            (lambda a, b, t_, r, **kw: C.clip_loss(a, b, t_, reduction=r, **kw)),
            [x(N, d), x(N, d, s=1)],
            [t],
        )
    if name == "supcon_loss":
        labels = torch.arange(N, device=device) % max(1, N // 4)  # 4 rows per class
        return (lambda z, t_, r, **kw: C.supcon_loss(z, labels, t_, reduction=r, **kw)), [x(N, d)], [t]
    if name == "retrieval_loss":
        B = N // 2
        return (
            lambda a, p, n, t_, r, **kw: C.retrieval_loss(a, p, n, t_, reduction=r, **kw),
            [x(B, d), x(B, d, s=1), x(B, 1, d, s=2)],
            [t],
        )
    bias = torch.tensor(-10.0, dtype=pdt, device=device)
    return (
        lambda a, b, t_, b_, r, **kw: C.siglip_loss(a, b, t_, b_, reduction=r, **kw),
        [x(N, d), x(N, d, s=1)],
        [t, bias],
    )


def evaluate(fn, inputs, params, **kw):
    """Mean loss, per-row losses, input gradients and parameter gradients of one call."""
    import torch

    ins = [v.detach().clone().requires_grad_() for v in inputs]
    ps = [p.detach().clone().requires_grad_() for p in params]
    loss = fn(*ins, *ps, "mean", **kw)
    loss.backward()
    with torch.no_grad():
        rows = fn(*inputs, *params, "none", **kw)
    return loss.detach(), rows, [v.grad for v in ins], [p.grad for p in ps]


def rel(a, b) -> float:
    a, b = a.double().flatten(), b.double().flatten().to(a.device)
    den = b.norm().item()
    return (a - b).norm().item() / den if den > 0 else (a - b).norm().item()


def markdown(rows) -> str:
    if not rows:
        return ""
    r0 = rows[0]
    out = [
        f"Device: {r0['device']}; N = {r0['N']} rows per tower, d = {r0['d']}; relative errors "
        f"against the float64 torch engine on the same rounded inputs.",
        "",
        "| objective | back-end | dtype | loss | per-row losses | gradients | temperature (bias) gradient |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"| {r['objective']} | {r['backend']} | {r['dtype']} | {r['status']} | | | |")
            continue
        out.append(
            f"| {r['objective']} | {r['backend']} | {r['dtype']} | {r['loss']:.1e} | {r['rows']:.1e} | "
            f"{r['grad']:.1e} | {r['param']:.1e} |"
        )
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("no CUDA device: nothing measured; pass --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    N = args.N or (65536 if cuda else 16)
    d = args.d or (128 if cuda else 16)
    out_path = (
        Path(args.csv)
        if args.csv
        else (
            Path("/tmp/gpu_accuracy_dryrun.csv")
            if args.dry_run
            else Path(__file__).resolve().parent / "results" / "gpu_accuracy.csv"
        )
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dev_name = torch.cuda.get_device_name(device) if cuda else "cpu, dry run"
    rows = []
    table_path = Path(args.table) if args.table else out_path.with_suffix(".md")
    with open(out_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=KEYS)
        w.writeheader()
        for name in args.objectives:
            backends = ["triton", "torch"] if name in ("info_nce", "clip_loss") else ["torch"]
            for dname in args.dtypes:
                dtype = getattr(torch, dname)
                ref = None
                for backend in backends:
                    row = dict(device=dev_name, objective=name, backend=backend, dtype=dname, N=N, d=d)
                    t0 = time.monotonic()
                    try:
                        if ref is None:
                            fn64, ins64, ps64 = problem(
                                name, N, d, torch.float64, dtype, device, args.temperature
                            )
                            ref = evaluate(fn64, ins64, ps64, backend="torch")
                        fn, ins, ps = problem(name, N, d, dtype, dtype, device, args.temperature)
                        kw = dict(backend=backend)
                        if backend == "triton" and dtype == torch.float16:
                            kw["block_size"] = 128  # skips fp16 autotuning (compile time)
                        got = evaluate(fn, ins, ps, **kw)
                        row.update(
                            status="ok",
                            loss=rel(got[0], ref[0]),
                            rows=rel(got[1], ref[1]),
                            grad=rel(
                                torch.cat([g.flatten().double() for g in got[2]]),
                                torch.cat([g.flatten() for g in ref[2]]),
                            ),
                            param=max(rel(a, b) for a, b in zip(got[3], ref[3])),
                        )
                    except Exception as e:  # record, keep going
                        row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    row["seconds"] = round(time.monotonic() - t0, 2)
                    rows.append(row)
                    w.writerow(row)
                    f.flush()
                    table_path.write_text(markdown(rows))  # a run cut short keeps its table
                    print(
                        f"{name:19s} {backend:6s} {dname:8s} "
                        + (
                            f"loss {row['loss']:.1e} rows {row['rows']:.1e} grad {row['grad']:.1e} "
                            f"param {row['param']:.1e}"
                            if row["status"] == "ok"
                            else row["status"]
                        ),
                        flush=True,
                    )
    table = markdown(rows)
    print(f"wrote {out_path} and {table_path}\n")
    print(table)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
