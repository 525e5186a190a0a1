"""Per-update metrics: a CSV in the run directory (always) and TensorBoard (when installed).

Names are namespaced and stable (`loss/policy`, `grpo/clip_fraction`, `eval/success_rate`, ...) so
`vla-rl plot` and dashboards read the same columns.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from vla_rl_ros.data.atomic import writing

METRICS_FILE = "metrics.csv"
STEP_COLUMN = "update"


class MetricsWriter:
    """Appends one row per call; a new metric name widens the CSV (rewritten once, atomically), so
    rows logged before the name existed show an empty cell for it. `truncate` drops the rows of
    updates a resumed learner does again, so each update keeps one row (in TensorBoard too)."""

    def __init__(self, run_dir: Path | str, *, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f), [])
        self._tb_dir = Path(run_dir) / "tensorboard"
        self._tb = self._tensorboard() if tensorboard else None

    def _tensorboard(self, purge_step: int | None = None) -> Any:
        """A TensorBoard SummaryWriter, or None where tensorboard is not installed (it is optional; the
        CSV is the record). `purge_step`: TensorBoard hides the points of this step on that earlier
        writers of the directory logged."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self._tb_dir), purge_step=purge_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {STEP_COLUMN: step, **metrics}
        new = [k for k in row if k not in self.columns]
        if new:
            rows = read_metrics(self.path) if self.path.exists() else []
            self.columns = [STEP_COLUMN, *sorted((set(self.columns) | set(new)) - {STEP_COLUMN})]
            self._rewrite(rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def truncate(self, last_step: int) -> None:
        """Drop the rows of steps after `last_step`: a learner resumed from the checkpoint of update k
        had logged the updates after k before it died, and logs them again as it redoes them. The
        TensorBoard event files keep the old points, marked for TensorBoard to hide (purge_step)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = self._tensorboard(purge_step=last_step + 1)
        if not self.path.exists():
            return
        rows = read_metrics(self.path)
        kept = [row for row in rows if float(row[STEP_COLUMN]) <= last_step]
        if len(kept) < len(rows):
            self._rewrite(kept)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """Replace the CSV with these rows under the current columns, atomically."""
        with writing(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)


def read_metrics(path: Path | str) -> list[dict[str, str]]:
    """Rows of a metrics CSV as dicts of strings (empty string where a metric was not logged)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
