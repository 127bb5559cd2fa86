"""``make gpu-check``: the GPU proof in one command, in stages with their own time limits.

Stages (each a subprocess with its own timeout, its log under the results folder, so a hang in
one still leaves the others' results):

1. ``env``       versions: Python, torch, CUDA, Triton, the GPU, the driver, inf-cl;
2. ``tests``     the CUDA correctness tests, ``pytest -m cuda tests/cuda`` (junit XML);
3. ``accuracy``  ``benchmarks/gpu_accuracy.py``: every objective and back-end against float64;
4. ``bench``     ``benchmarks/bench_info_nce_gpu.py`` on a sweep sized to the budget (CSV, PNG,
                 markdown table: time, TFLOP/s, % of a bf16 GEMM of the same run, peak memory);
5. ``kernels``   the older kernel tests' CUDA cases (``tests/kernels -k cuda``) in the time left;
6. ``pack``      ``summary.md``; with ``$OUT`` set (the device tool), a tar of the results
                 folder plus the summary and the plot in ``$OUT`` (the tool returns at most 8
                 files, 2 folders deep).

Without CUDA, ``env`` says so and the same stages run as a dry run on CPU: the tests at tiny
sizes (``CONTRASTIVE_GPU_CHECK_DRY_RUN=1``, Triton under its interpreter), the scripts with
``--dry-run``. ``benchmarks/gpu_check.sh`` (what the Makefile calls) chooses the Python and
installs the wheels carried in ``.whl/`` first.

    bash benchmarks/gpu_check.sh                        # GPU: results in benchmarks/results/gpu_check/
    bash benchmarks/gpu_check.sh --dry-run --results /tmp/gc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "gpu_check"
# (stage, seconds on a GPU, seconds in the dry run, seconds kept back for the stages after it)
PLAN = [
    ("env", 40, 60, 330),
    ("tests", 170, 240, 160),
    ("accuracy", 60, 60, 100),
    ("bench", 210, 60, 10),
    ("kernels", 10_000, 0, 5),
]
BENCH_N = (16384, 65536, 262144, 1048576)
BENCH_D = (128, 512)

ENV_SCRIPT = r"""
import json, platform, shutil, subprocess, sys
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    sms=p.multi_processor_count, gpus=torch.cuda.device_count())
except Exception as e:
    info.update(torch=f"not importable: {e}", cuda=False)
from importlib import metadata
for mod, dist in (("triton", "triton"), ("numpy", "numpy"), ("inf_cl", "inf-cl"), ("matplotlib", "matplotlib"),
                  ("pytest", "pytest")):
    try:
        __import__(mod)
        info[mod] = metadata.version(dist)
    except Exception as e:
        info[mod] = f"absent ({type(e).__name__})"
if shutil.which("nvidia-smi"):
    q = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw"
    r = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True)
    info["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
print(json.dumps(info, indent=1))
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dry-run", action="store_true", help="CPU: tiny sizes, Triton interpreter (also without CUDA)"
    )
    ap.add_argument(
        "--results",
        default=None,
        help=f"results folder (default {DEFAULT_RESULTS.relative_to(ROOT)} "
        f"on a GPU, a temporary folder in the dry run)",
    )
    ap.add_argument("--out", default=os.environ.get("OUT"), help="pack folder (default $OUT; none: no pack)")
    ap.add_argument(
        "--budget",
        type=float,
        default=float(os.environ.get("GPU_CHECK_BUDGET", 470)),
        help="seconds for all stages (default 470, or $GPU_CHECK_BUDGET)",
    )
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=[s for s, *_ in PLAN], help="stages to leave out"
    )
    return ap.parse_args(argv)


def run_stage(name, cmd, log_path, timeout, env):
    """Run cmd in its own process group, teeing its output to log_path; kill the group at timeout."""
    t0 = time.monotonic()
    shown = " ".join(str(c) if len(str(c)) < 80 else "<script>" for c in cmd)
    print(f"\n=== {name}: {shown} (limit {timeout:.0f} s)", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def pump():
            for line in proc.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(line)
                sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(timeout, 1))
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            status = f"timed out after {timeout:.0f} s"
        reader.join(timeout=5)
    secs = time.monotonic() - t0
    print(f"=== {name}: {status} in {secs:.1f} s", flush=True)
    return status, secs


def junit_counts(path: Path, log: Path) -> str:
    """Counts and failed tests from the junit XML, or from the -v log when pytest was cut short."""
    try:
        root = ET.parse(path).getroot()
    except Exception:
        if not log.exists():
            return "no report"
        text = log.read_text(errors="replace")
        n = {k: text.count(f" {k.upper()}") for k in ("passed", "failed", "error", "skipped")}
        failed = [
            ln.split(" ")[0]
            for ln in text.splitlines()
            if ln.startswith("tests") and (" FAILED" in ln or " ERROR" in ln)
        ]
        return (
            f"cut short, from the log: {n['passed']} passed, {n['failed']} failed, {n['error']} errors, "
            f"{n['skipped']} skipped" + "".join(f"\n    - {f}" for f in failed[:30])
        )
    suites = [root] if root.tag == "testsuite" else list(root)
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{c.get('classname')}::{c.get('name')}"
        for s in suites
        for c in s.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ]
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    text = f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"
    return text + "".join(f"\n    - {f}" for f in failed[:30])


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget
    py = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    src = str(ROOT / "src")
    if src not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.pop("TRITON_INTERPRET", None)

    # stage 1 decides between the GPU run and the dry run, so it writes to a scratch file first
    dry = args.dry_run
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"contrastive-gpu-check-env-{os.getpid()}.log"
    status, secs = run_stage("env", [py, "-c", ENV_SCRIPT], scratch, PLAN[0][2 if dry else 1], env)
    try:
        text = scratch.read_text()
        info = json.loads(text[text.index("{") : text.rindex("}") + 1])
    except Exception:
        info = {"cuda": False}
    if str(info.get("torch", "not importable")).startswith("not importable"):
        print(
            f"\ntorch is not importable with {py}: run make install first (it builds .venv), or point "
            f"GPU_CHECK_PYTHON at a Python that has torch.",
            flush=True,
        )
        return 1
    if not info.get("cuda") and not dry:
        print(
            "\nno CUDA device here: nothing can be measured. Running the same check as a dry run on CPU "
            "(tiny sizes, Triton interpreter) so that the check itself is tested.\n",
            flush=True,
        )
        dry = True
    R = (
        Path(args.results).resolve()
        if args.results
        else (
            Path(os.environ.get("TMPDIR", "/tmp")) / "contrastive-gpu-check-dry" if dry else DEFAULT_RESULTS
        )
    )
    R.mkdir(parents=True, exist_ok=True)
    for old in R.iterdir():  # a stale file must not pass as new
        if old.is_file() and old.suffix in (".log", ".xml", ".csv", ".md", ".png", ".txt", ".json"):
            old.unlink()
    shutil.move(str(scratch), R / "env.log")
    (R / "env.json").write_text(json.dumps(info, indent=1) + "\n")
    stages = {"env": (status, secs)}
    if dry:
        env["CONTRASTIVE_GPU_CHECK_DRY_RUN"] = "1"
    dry_flag = ["--dry-run"] if dry else []

    def limit(name):
        _, gpu_s, dry_s, keep = next(p for p in PLAN if p[0] == name)
        return min(dry_s if dry else gpu_s, deadline - time.monotonic() - keep)

    try:
        import pytest_timeout  # noqa: F401

        per_test = ["--timeout=150"] if not dry else []
    except ImportError:
        per_test = []
    commands = {
        # -v: one line per test in the log, so a stage cut by its time limit still shows its results
        "tests": [
            py,
            "-m",
            "pytest",
            "tests/cuda",
            "-m",
            "cuda",
            "-v",
            "-rfE",
            "--durations=15",
            "-p",
            "no:cacheprovider",
            f"--junitxml={R / 'tests_cuda.xml'}",
            *per_test,
        ],
        "accuracy": [
            py,
            "benchmarks/gpu_accuracy.py",
            *dry_flag,
            *(["--dtypes", "bfloat16"] if dry else []),
            "--csv",
            R / "accuracy.csv",
        ],
        "bench": [
            py,
            "benchmarks/bench_info_nce_gpu.py",
            *dry_flag,
            "--dtype",
            "bfloat16",
            "--N",
            *(("32",) if dry else BENCH_N),
            "--d",
            *(("16",) if dry else BENCH_D),
            "--providers",
            "triton",
            "torch-engine",
            "naive",
            "inf-cl",
            "--forms",
            "single",
            "clip",
            "--modes",
            "fwd+bwd",
            "--reps",
            "5",
            "--warmup",
            "1",
            "--rep-seconds",
            "3",
            "--csv",
            R / "bench_info_nce_gpu.csv",
        ],
        "kernels": [
            py,
            "-m",
            "pytest",
            "tests/kernels/test_kernels_info_nce.py",
            "-k",
            "cuda",
            "-v",
            "-rfE",
            "-p",
            "no:cacheprovider",
            f"--junitxml={R / 'tests_kernels_cuda.xml'}",
            *per_test,
        ],
    }
    for name in ("tests", "accuracy", "bench", "kernels"):
        t = limit(name)
        if name in args.skip or (name == "kernels" and dry):
            stages[name] = ("skipped" + (" (dry run)" if dry and name == "kernels" else ""), 0.0)
            continue
        if t < 10:
            stages[name] = (f"skipped: {max(t, 0):.0f} s left of the budget", 0.0)
            continue
        cmd = list(commands[name])
        if name == "bench":
            cmd += ["--budget-seconds", f"{max(t - 20, 10):.0f}"]  # the bench stops itself in time
        status, secs = run_stage(name, cmd, R / f"{name}.log", t, env)
        if name == "kernels" and status.startswith("timed out"):  # it only gets the time left
            status = "partial: stopped at the end of the budget"
        stages[name] = (status, secs)

    summary = write_summary(R, info, stages, dry, time.monotonic() - t_start)
    if args.out:
        pack(R, Path(args.out))
    print("\n" + summary, flush=True)
    return 0 if all(s == "ok" or s.startswith(("skipped", "partial")) for s, _ in stages.values()) else 1


def write_summary(R: Path, info: dict, stages: dict, dry: bool, total: float) -> str:
    lines = [
        f"# gpu-check{' (DRY RUN on CPU: nothing measured on a GPU)' if dry else ''}",
        "",
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; wall time {total:.0f} s.",
        "",
        "Environment: "
        + "; ".join(
            f"{k} {info.get(k)}"
            for k in ("gpu", "capability", "nvidia_smi", "python", "torch", "torch_cuda", "triton", "inf_cl")
            if info.get(k) is not None
        ),
        "",
        "| stage | status | seconds |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {k} | {s} | {t:.0f} |" for k, (s, t) in stages.items()]
    lines += ["", f"CUDA tests (tests/cuda, -m cuda): {junit_counts(R / 'tests_cuda.xml', R / 'tests.log')}"]
    if (R / "kernels.log").exists():
        lines += [
            "",
            "Kernel tests on CUDA (tests/kernels -k cuda): "
            + junit_counts(R / "tests_kernels_cuda.xml", R / "kernels.log"),
        ]
    for title, name in (("Accuracy against float64", "accuracy.md"), ("Benchmark", "bench_info_nce_gpu.md")):
        p = R / name
        lines += [
            "",
            f"## {title}",
            "",
            p.read_text().rstrip() if p.exists() else "(not produced: see the stage log)",
        ]
    text = "\n".join(lines) + "\n"
    (R / "summary.md").write_text(text)
    return text


def pack(R: Path, out: Path) -> None:
    """One tar of the results folder (to unpack under benchmarks/results/), plus summary and plot."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "gpu_check.tar.gz", "w:gz") as tar:
        tar.add(R, arcname="gpu_check")
    for name in ("summary.md", "bench_info_nce_gpu.png"):
        if (R / name).exists():
            shutil.copy(R / name, out / name)
    print(
        f"packed {R} into {out / 'gpu_check.tar.gz'} (unpack: tar xzf gpu_check.tar.gz -C benchmarks/results/)"
    )


if __name__ == "__main__":
    sys.exit(main())
