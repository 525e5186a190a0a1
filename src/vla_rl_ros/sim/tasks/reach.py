"""reach: move the open gripper just above the named object (the easiest task: no contact)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE
from vla_rl_ros.sim.tasks.base import TaskSpec, TaskState, object_placement, pick_objects, positive_int, scatter
from vla_rl_ros.sim.tasks.skills import OPEN, ExpertConfig, ee_action, toward


@dataclass(frozen=True)
class ReachConfig:
    max_steps: int = field(default=40, metadata={"help": "episode limit in 10 Hz control steps (the expert "
                                                         "needs about 15)"})
    hold_steps: int = field(default=3, metadata={"help": "consecutive steps the predicate must hold"})
    distractors: int = field(default=2, metadata={"help": "other objects on the table"})
    hover_height: float = field(default=0.07, metadata={"help": "goal TCP height above the object's centre (m)"})
    tolerance: float = field(default=0.04, metadata={"help": "success radius around the goal point (m)"})
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        positive_int(type(self).__name__, max_steps=self.max_steps, hold_steps=self.hold_steps)
        if not 0 <= self.distractors <= 3:
            raise ValueError(f"ReachConfig.distractors={self.distractors} must be 0..3 (4 objects in the scene)")


def sample(rng: np.random.Generator, cfg: ReachConfig):
    objects = pick_objects(rng, 1 + cfg.distractors)
    xy = scatter(rng, [OBJECT_HALF_SIZE * np.sqrt(2)] * len(objects))
    return tuple(object_placement(slot, colour, p, rng) for (slot, colour), p in zip(objects, xy, strict=True))


def goal(state: TaskState, cfg: ReachConfig) -> np.ndarray:
    return state.object_pos[0] + np.array([0.0, 0.0, cfg.hover_height])


def success(state: TaskState, cfg: ReachConfig) -> bool:
    return bool(np.linalg.norm(state.ee_pos - goal(state, cfg)) < cfg.tolerance)


def expert(state: TaskState, cfg: ReachConfig) -> np.ndarray:
    return ee_action(toward(state, goal(state, cfg), cfg.expert), OPEN)


SPEC = TaskSpec(
    name="reach",
    description="move the open gripper just above the named object",
    templates=("reach the {object}", "move to the {object}", "go to the {object}"),
    roles=("object",),
    config=ReachConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
