"""When a node publishes /diagnostics: a flood of rejected input must not become a flood of reports
(one per rejection was 270 messages/s), yet a fault that appears must not wait for the next period."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping


class DiagnosticsPacer:
    """`due(now, state, level, counts)`, called on every event and tick, says whether to publish now.

    - at once when `level` rises above the last reported one (a WARN or an ERROR appearing);
    - any other change of `state` (a hold that changes at the same level, a recovery) and any growth
      of `counts` (rejections by cause, cumulative) at most every `min_interval` s: under a flood
      about 1 / min_interval reports per second, each with the counts since the previous report;
    - every `period` s in any case.

    A level can only rise twice between two paced reports (OK -> WARN -> ERROR), so a state that
    flaps as fast as its input (a spoofed joint state in and out of the limits) is bounded too. The
    caller must call `due` again within a tick of `min_interval`, or a paced report waits for the
    next event. Times are seconds on a monotonic clock."""

    def __init__(self, period: float, min_interval: float) -> None:
        self.period, self.min_interval = period, min_interval
        self.reported_at: float | None = None
        self.state: Hashable = None
        self.level = 0
        self.counts: Counter[str] = Counter()  # as of the last report

    def due(self, now: float, state: Hashable, level: int, counts: Mapping[str, int]) -> dict[str, int] | None:
        """None when no report is due; else the report is taken as published and this returns the
        growth of each count since the previous report (empty if none grew)."""
        new = {cause: n - self.counts[cause] for cause, n in counts.items() if n > self.counts[cause]}
        since = float("inf") if self.reported_at is None else now - self.reported_at
        changed = state != self.state or bool(new)
        if level > self.level or since >= self.period or (changed and since >= self.min_interval):
            self.reported_at, self.state, self.level, self.counts = now, state, level, Counter(counts)
            return new
        return None
