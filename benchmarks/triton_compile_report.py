"""Compile every Triton kernel configuration for a GPU target without a GPU; report resources.

Ahead-of-time compiles (Triton's own ptxas, no driver needed) each autotuning candidate of
``contrastive.kernels._launch._configs`` for sm_90 (H100) by default and prints, per
kernel, variant and configuration: registers per thread, stack bytes (spills), dynamic
shared memory and compile time. A candidate that spills or needs more shared memory than
the SM has is a bad candidate. This checks that the kernels *compile* for the GPU, which
the interpreter tests cannot; it measures no speed.

    python benchmarks/triton_compile_report.py                       # D = 128, 256, 512, bf16
    python benchmarks/triton_compile_report.py --dims 128 --dtype fp32 --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PTR = {"x_ptr", "y_ptr"}
FLOAT_ARGS = {"k1", "out_scale", "inv_temp"}

# (kernel, variant name, constexpr flags other than tiles)
VARIANTS = [
    ("p1_sums_kernel", "sym-exclude", dict(SYM=True, EXCLUDE=True)),
    ("p1_sums_kernel", "two-tower", dict(SYM=False, EXCLUDE=False)),
    ("p1_rows_kernel", "online-exclude", dict(FIXED=False, EXCLUDE=True)),
    ("p1_rows_kernel", "fixed-noexclude", dict(FIXED=True, EXCLUDE=False)),
    ("p2_rows_kernel", "fixed-exclude", dict(FIXED=True, EXCLUDE=True)),
    ("p2_rows_kernel", "online-noexclude", dict(FIXED=False, EXCLUDE=False)),
    ("finalize_kernel", "", dict()),
]


def _compile_one(job):
    kernel, variant, flags, D, dtype, meta, warps, stages, arch = job
    os.environ["TRITON_DEFAULT_FP_FUSION"] = os.environ.get("TRITON_DEFAULT_FP_FUSION", "1")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from contrastive.kernels._launch import _device_module

    fn = getattr(_device_module(False), kernel)
    const = dict(D=D, **flags, **meta)
    if kernel != "finalize_kernel":
        const.setdefault("UPCAST", False)
        const.setdefault("PREC", "tf32" if dtype != "fp32" else "tf32x3")
    sig, attrs = {}, {}
    for i, n in enumerate(fn.arg_names):
        if n.endswith("_ptr") or n in (
            "N",
            "QSHIFT",
        ):  # as the JIT specialises 16-aligned pointers, N % 16 == 0
            attrs[(i,)] = [["tt.divisibility", 16]]
        if n in const:
            sig[n] = "constexpr"
        elif n in PTR:
            sig[n] = "*" + dtype
        elif n.endswith("_ptr"):
            sig[n] = "*fp32"
        elif n in FLOAT_ARGS:
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    t0 = time.time()
    row = dict(
        kernel=kernel,
        variant=variant,
        D=D,
        dtype=dtype,
        warps=warps,
        stages=stages,
        **{k: v for k, v in meta.items()},
    )
    try:
        k = triton.compile(
            ASTSource(fn, sig, const, attrs),
            target=GPUTarget("cuda", arch, 32),
            options=dict(num_warps=warps, num_stages=stages),
        )
    except Exception as e:  # report, do not stop the sweep
        row.update(status=f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        return row
    row["compile_s"] = round(time.time() - t0, 1)
    row["shared_bytes"] = k.metadata.shared
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        out = subprocess.run(
            [str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True
        ).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    row["regs"], row["stack_bytes"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    ptx = k.asm["ptx"]
    row["wgmma"] = ptx.count("wgmma.mma_async")
    row["status"] = "spills" if row["stack_bytes"] else "ok"
    if row["shared_bytes"] > 227 * 1024:
        row["status"] = "too much shared memory"
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (90 = H100)")
    ap.add_argument("--kernels", nargs="*", default=None, help="subset of kernel names")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    try:
        import triton
    except ImportError:
        print("triton is not installed: pip install 'contrastive[triton]'", file=sys.stderr)
        return 1

    from contrastive.kernels._launch import _configs, _pow2

    jobs = []
    for D in args.dims:
        for kernel, variant, flags in VARIANTS:
            if args.kernels and kernel not in args.kernels:
                continue
            if kernel == "finalize_kernel":  # fixed launch, as in _run_finalize
                cfgs = [triton.Config(dict(BLOCK=64, BLOCK_K=min(_pow2(D), 128)), num_warps=4, num_stages=2)]
            else:
                cfgs = _configs(
                    kernel,
                    D,
                    interpret=False,
                    esize=4 if args.dtype == "fp32" else 2,
                    prec="tf32x3" if args.dtype == "fp32" else "tf32",
                )
            for cfg in cfgs:
                jobs.append(
                    (
                        kernel,
                        variant,
                        flags,
                        D,
                        args.dtype,
                        dict(cfg.kwargs),
                        cfg.num_warps,
                        cfg.num_stages,
                        args.arch,
                    )
                )
    print(f"{len(jobs)} compilations for sm_{args.arch}, {args.dtype}", flush=True)
    rows = []
    with ProcessPoolExecutor(args.jobs) as ex:
        for row in ex.map(_compile_one, jobs):
            rows.append(row)
            tiles = "/".join(
                str(row.get(k)) for k in ("BLOCK", "BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_DV") if k in row
            )
            print(
                f"{row['kernel']:15s} {row['variant']:17s} D={row['D']:<4d} tiles={tiles:18s} "
                f"w={row['warps']} s={row['stages']} regs={row.get('regs')} stack={row.get('stack_bytes')} "
                f"smem={row.get('shared_bytes')} wgmma={row.get('wgmma')} {row.get('compile_s')}s {row['status']}",
                flush=True,
            )
    if args.csv:
        keys = sorted({k for r in rows for k in r})
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows) - len(bad)} ok, {len(bad)} not ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
