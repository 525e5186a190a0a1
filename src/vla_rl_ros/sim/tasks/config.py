"""What every task's config shares (`TaskConfig`) and the scene sizes the tasks' sampling shares;
each task module subclasses TaskConfig with its own thresholds and defaults, so a shared field or
its check is defined once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE, OBJECT_SLOTS
from vla_rl_ros.sim.tasks.skills import ExpertConfig

OBJECT_RADIUS = OBJECT_HALF_SIZE * np.sqrt(2)  # m, footprint of a cube at any yaw (spawn spacing)


@dataclass(frozen=True)
class TaskConfig:
    """Episode limits, distractors and the scripted expert's gains, common to all tasks. A task
    overrides a default by redeclaring the field with its value."""

    # How many distractor objects fit: the scene's object slots less those the task's roles take.
    max_distractors: ClassVar[int] = len(OBJECT_SLOTS) - 1

    max_steps: int = field(default=100, metadata={"help": "episode limit in 10 Hz control steps"})
    hold_steps: int = field(default=3, metadata={"help": "consecutive steps the predicate must hold"})
    distractors: int = field(default=1, metadata={"help": "other objects on the table"})
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        for key in ("max_steps", "hold_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{key}={value!r} must be a positive integer")
        if not 0 <= self.distractors <= self.max_distractors:
            raise ValueError(f"{type(self).__name__}.distractors={self.distractors} must be "
                             f"0..{self.max_distractors}: no more fit beside the task's own objects")
