"""Success must hold for k consecutive control steps (the tasks' hold_steps, SimpleVLA-RL's LIBERO
checks success at the end of each step; holding guards against momentary contact).

Here with the tasks that define hold_steps, so the sim env needs nothing from success/ (which sits
above sim/); the success detector and classifier training import it from here."""

from __future__ import annotations


class HoldFilter:
    """Counts consecutive raw successes; reports success from the k-th one on."""

    def __init__(self, hold_steps: int) -> None:
        if hold_steps < 1:
            raise ValueError(f"hold_steps={hold_steps} must be at least 1")
        self.hold_steps = hold_steps
        self.count = 0

    def reset(self, hold_steps: int | None = None) -> None:
        if hold_steps is not None:
            if hold_steps < 1:
                raise ValueError(f"hold_steps={hold_steps} must be at least 1")
            self.hold_steps = hold_steps
        self.count = 0

    def update(self, raw: bool) -> bool:
        self.count = self.count + 1 if raw else 0
        return self.count >= self.hold_steps
