"""lift: grasp the named object and hold it up (adds contact and the gripper)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE
from vla_rl_ros.sim.tasks.base import TaskSpec, TaskState, object_placement, pick_objects, scatter
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS, TaskConfig
from vla_rl_ros.sim.tasks.skills import CLOSED, ee_action, grasp, is_held, toward


@dataclass(frozen=True)
class LiftConfig(TaskConfig):
    max_steps: int = 60  # the expert needs about 30
    distractors: int = 2
    lift_height: float = field(default=0.08, metadata={"help": "how far (m) the object's bottom must be above "
                                                               "the table"})
    expert_height: float = field(default=0.16, metadata={"help": "TCP height (m) the expert lifts to"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expert_height - OBJECT_HALF_SIZE <= self.lift_height:
            raise ValueError(f"LiftConfig.expert_height={self.expert_height} must lift the object's bottom "
                             f"above lift_height={self.lift_height}")


def sample(rng: np.random.Generator, cfg: LiftConfig):
    objects = pick_objects(rng, 1 + cfg.distractors)
    xy = scatter(rng, [OBJECT_RADIUS] * len(objects))
    return tuple(object_placement(slot, colour, p, rng) for (slot, colour), p in zip(objects, xy, strict=True))


def success(state: TaskState, cfg: LiftConfig) -> bool:
    return bool(state.object_pos[0, 2] - OBJECT_HALF_SIZE > cfg.lift_height)


def expert(state: TaskState, cfg: LiftConfig) -> np.ndarray:
    if not is_held(state, state.object_pos[0], cfg.expert):
        return grasp(state, state.object_pos[0], cfg.expert)
    return ee_action(toward(state, np.array([*state.ee_pos[:2], cfg.expert_height]), cfg.expert), CLOSED)


SPEC = TaskSpec(
    name="lift",
    description="grasp the named object and lift it off the table",
    templates=("pick up the {object}", "lift the {object}", "raise the {object} off the table"),
    roles=("object",),
    config=LiftConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
