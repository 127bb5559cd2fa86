"""What a training run logs and shows: the metrics files (``metrics.jsonl`` and ``metrics.csv``,
one record per epoch with the evaluation metrics where evaluated; optionally TensorBoard),
the progress bar, the final table, and the error that stops a run whose loss is not finite.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._optional import needs
from .checkpoint import atomic_write

__all__ = ["MetricsLog", "NonFiniteLossError", "Progress", "format_table"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; training stopped and the last good checkpoint was kept."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends records to ``metrics.jsonl``, rewrites ``metrics.csv`` (all keys as columns) and,
    when asked, mirrors numbers to TensorBoard (imported only then)."""

    def __init__(self, run_dir, tensorboard: bool = False):
        self.run_dir = Path(run_dir)
        self.jsonl, self.csv = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        self.records: list[dict[str, Any]] = self.read(self.run_dir) if self.jsonl.exists() else []
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    f"run.tensorboard=true needs the tensorboard package: pip install tensorboard ({err})"
                ) from None
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    @staticmethod
    def read(run_dir) -> list[dict[str, Any]]:
        """The records of ``run_dir/metrics.jsonl``."""
        path = Path(run_dir) / "metrics.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found; is {str(run_dir)!r} a run directory?")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate(self, epoch: int) -> None:
        """Drop records after ``epoch`` (a resumed run repeats them)."""
        self.records = [r for r in self.records if r.get("epoch", 0) <= epoch]
        self._rewrite()

    def log(self, record: dict[str, Any]) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self.records.append(record)
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self._write_csv()
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(k, v, record.get("epoch", 0))
            self.writer.flush()

    def _rewrite(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        atomic_write(self.jsonl, lambda tmp: Path(tmp).write_text(text))
        self._write_csv()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for r in self.records:
            keys.extend(k for k in r if k not in keys)

        def write(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys)
                w.writeheader()
                w.writerows(self.records)

        atomic_write(self.csv, write)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar over all training steps showing epoch, loss, learning rate and samples/s
    (silent when disabled)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.bar = None
        if enabled:
            with needs("train", "the progress bar"):
                from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
            )

    def update(self, epoch: int, loss: float, lr: float, samples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"epoch {epoch} loss {loss:.4f} lr {lr:.2e} {samples_per_s:,.0f} samples/s", refresh=False
            )
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_table(
    rows: Sequence[tuple[str, dict[str, float | None]]], columns: Sequence[tuple[str, str]]
) -> str:
    """A plain-text table; ``rows`` are ``(label, metrics)``, ``columns`` ``(key, header)``;
    fractions are shown as percentages.

    Examples:
        >>> print(format_table([("raw", {"knn_accuracy": 0.97})], [("knn_accuracy", "kNN %")]))
        features  kNN %
        --------  -----
        raw       97.00
    """
    head = ["features"] + [h for _, h in columns]
    body = [
        [label] + [("-" if m.get(k) is None else f"{100 * m[k]:.2f}") for k, _ in columns]
        for label, m in rows
    ]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
