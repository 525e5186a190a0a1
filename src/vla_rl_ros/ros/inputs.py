"""Say when a node's input topics have publishers, and which still have none: a misnamed topic or a
camera that never came up otherwise looks like a node that silently records or does nothing."""

from __future__ import annotations

from typing import Any

QUIET_S = 10.0  # topics may lack a publisher this long after start (the others are still starting)


class InputWatch:
    """`check(elapsed_s)` (from a timer) logs when every subscription is matched with a publisher and,
    after QUIET_S, each change in the set of topics without one."""

    def __init__(self, logger: Any, subscriptions: list[Any]) -> None:
        self.logger = logger
        self.subscriptions = subscriptions
        self.missing: frozenset[str] | None = None  # as last logged

    def check(self, elapsed_s: float) -> None:
        missing = frozenset(s.topic_name for s in self.subscriptions if s.get_publisher_count() == 0)
        if missing == self.missing or (missing and elapsed_s < QUIET_S):
            return
        self.missing = missing
        if missing:
            self.logger.warning(f"no publisher on {', '.join(sorted(missing))} (after {elapsed_s:.0f} s): "
                                "check the topic names and that those nodes run")
        else:
            self.logger.info("every input topic has a publisher")
