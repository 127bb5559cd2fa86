"""``make gpu-check`` cannot rot: its dry run (every stage on CPU at tiny sizes, the Triton
kernels under the interpreter, the same file layout and pack) runs in the normal test suite.
Without CUDA this is exactly what ``make gpu-check`` does, after saying that there is no GPU."""

import csv
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_dry_run_runs_every_stage_and_packs(tmp_path):
    pytest.importorskip("triton", minversion="3.7")
    pytest.importorskip("matplotlib")
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {
        k: v for k, v in os.environ.items() if k not in ("CONTRASTIVE_GPU_CHECK_DRY_RUN", "TRITON_INTERPRET")
    }
    env.update(GPU_CHECK_PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    cmd = ["bash", str(SCRIPT), "--results", str(tmp_path / "res")]
    if torch.cuda.is_available():
        cmd.append("--dry-run")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    if not torch.cuda.is_available():
        assert "no CUDA device here" in r.stdout
    res = tmp_path / "res"
    summary = (res / "summary.md").read_text()
    assert "DRY RUN" in summary and "| tests | ok |" in summary and "| bench | ok |" in summary

    suite = ET.parse(res / "tests_cuda.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    assert int(suite.get("tests")) >= 50
    assert int(suite.get("failures")) == int(suite.get("errors")) == int(suite.get("skipped")) == 0

    acc = list(csv.DictReader((res / "accuracy.csv").open()))
    assert {row["objective"] for row in acc} >= {"info_nce", "clip_loss", "supcon_loss", "siglip_loss"}
    assert all(row["status"] == "ok" and float(row["grad"]) < 2e-2 for row in acc)

    bench = {
        (row["form"], row["provider"]): row for row in csv.DictReader((res / "bench_info_nce_gpu.csv").open())
    }
    for form in ("single", "clip"):
        assert bench[(form, "triton")]["status"] == bench[(form, "naive")]["status"] == "ok"
        assert abs(float(bench[(form, "triton")]["loss"]) - float(bench[(form, "naive")]["loss"])) < 2e-2
    assert bench[("clip", "inf-cl")]["status"].startswith("unavailable")
    assert "| triton |" in (res / "bench_info_nce_gpu.md").read_text()

    names = set(tarfile.open(tmp_path / "out" / "gpu_check.tar.gz").getnames())
    assert {
        f"gpu_check/{n}"
        for n in (
            "summary.md",
            "env.json",
            "tests_cuda.xml",
            "accuracy.csv",
            "accuracy.md",
            "bench_info_nce_gpu.csv",
            "bench_info_nce_gpu.png",
            "bench.log",
        )
    } <= names
    assert (tmp_path / "out" / "summary.md").read_text() == summary


def test_bench_budget_skips_and_says_so(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # main() sets it; restored after
    path = SCRIPT.with_name("bench_info_nce_gpu.py")
    spec = importlib.util.spec_from_file_location("bench_info_nce_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "b.csv"
    rc = bench.main(
        [
            "--dry-run",
            "--N",
            "32",
            "--d",
            "16",
            "--providers",
            "naive",
            "--modes",
            "fwd",
            "--budget-seconds",
            "0",
            "--csv",
            str(out),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and all(r["status"] == "skipped: time budget spent" for r in rows)
    rc = bench.main(
        ["--dry-run", "--N", "32", "--d", "16", "--providers", "naive", "--modes", "fwd", "--csv", str(out)]
    )
    rows = list(csv.DictReader(out.open()))
    assert rc == 0 and all(r["status"] == "ok" for r in rows)
    assert "| naive |" in out.with_suffix(".md").read_text() and out.with_suffix(".png").exists()
