"""The gradient-caching benchmark script runs (one tiny configuration per mode, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gradcache.py"


def test_worker_reports_time_and_memory():
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    r = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--worker",
            "--model",
            "cnn",
            "--mode",
            "cached",
            "--batch",
            "6",
            "--chunk",
            "4",
            "--repeats",
            "1",
            "--min-time-s",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["steps"] == 1 and out["step_s"] > 0 and out["step_cpu_s"] > 0 and out["peak_rss_mib"] > 0
    assert out["loss"] == out["loss"]  # finite, not NaN
