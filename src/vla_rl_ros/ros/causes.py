"""Log each cause of dropped input once, and count every occurrence, so garbage cannot flood the log."""

from __future__ import annotations

from collections import Counter
from typing import Any


class DropLog:
    """`drop(cause, detail)` logs the first time a cause is seen (with the detail) and counts every time."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.counts: Counter[str] = Counter()

    def drop(self, cause: str, detail: str) -> None:
        self.counts[cause] += 1
        if self.counts[cause] == 1:
            self.logger.warning(f"dropped input: {cause}: {detail} (further drops for this cause are counted)")
