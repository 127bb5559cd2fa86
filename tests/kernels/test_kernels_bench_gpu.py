"""The GPU benchmark script: graceful without CUDA, and its logic runs (--dry-run, interpreter)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_info_nce_gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine would run the real sweep")
def test_without_cuda_it_says_so_and_exits_2():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_writes_a_csv(tmp_path):
    pytest.importorskip("triton", minversion="3.7")
    out = tmp_path / "dry.csv"
    r = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dry-run",
            "--N",
            "32",
            "--d",
            "16",
            "--providers",
            "triton",
            "naive",
            "inf-cl",
            "--modes",
            "fwd+bwd",
            "--csv",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert {(row["form"], row["provider"]) for row in rows} == {
        (f, p) for f in ("single", "clip") for p in ("triton", "naive", "inf-cl")
    }
    by = {(row["form"], row["provider"]): row for row in rows}
    for form in ("single", "clip"):
        assert by[(form, "triton")]["status"] == "ok" and by[(form, "naive")]["status"] == "ok"
        assert abs(float(by[(form, "triton")]["loss"]) - float(by[(form, "naive")]["loss"])) < 2e-2
    assert by[("single", "inf-cl")]["status"].startswith("unavailable")
    assert all(row["dry_run"] == "1" for row in rows)
