"""train/runlog.py: the metrics files (JSONL and CSV, truncated on resume) and the final table."""

from __future__ import annotations

import csv

from contrastive.train.runlog import MetricsLog, format_table


def test_metrics_log_jsonl_csv_truncate(tmp_path):
    log = MetricsLog(tmp_path)
    log.log({"epoch": 1, "loss": 2.0})
    log.log({"epoch": 2, "loss": 1.5, "knn_accuracy": 0.9})
    log.log({"epoch": 3, "loss": float("nan")})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert list(rows[0]) == ["epoch", "loss", "knn_accuracy"] and rows[1]["knn_accuracy"] == "0.9"
    assert MetricsLog.read(tmp_path)[2]["loss"] == "nan"  # JSON has no NaN: kept as text
    reopened = MetricsLog(tmp_path)
    reopened.truncate(2)
    assert [r["epoch"] for r in MetricsLog.read(tmp_path)] == [1, 2]
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 2


def test_format_table_missing_values():
    text = format_table([("a", {"x": 0.5}), ("b", {})], [("x", "X %")])
    assert text.splitlines()[2].split() == ["a", "50.00"] and text.splitlines()[3].split() == ["b", "-"]
