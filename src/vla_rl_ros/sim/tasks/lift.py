"""lift: grasp the named object and hold it up (adds contact and the gripper)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE
from vla_rl_ros.sim.tasks.base import TaskSpec, TaskState, object_placement, pick_objects, positive_int, scatter
from vla_rl_ros.sim.tasks.skills import CLOSED, ExpertConfig, ee_action, grasp, is_held, toward


@dataclass(frozen=True)
class LiftConfig:
    max_steps: int = field(default=60, metadata={"help": "episode limit in control steps (expert: about 30)"})
    hold_steps: int = field(default=3, metadata={"help": "consecutive steps the predicate must hold"})
    distractors: int = field(default=2, metadata={"help": "other objects on the table"})
    lift_height: float = field(default=0.08, metadata={"help": "how far (m) the object's bottom must be above "
                                                               "the table"})
    expert_height: float = field(default=0.16, metadata={"help": "TCP height (m) the expert lifts to"})
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        positive_int(type(self).__name__, max_steps=self.max_steps, hold_steps=self.hold_steps)
        if self.expert_height - OBJECT_HALF_SIZE <= self.lift_height:
            raise ValueError(f"LiftConfig.expert_height={self.expert_height} must lift the object's bottom "
                             f"above lift_height={self.lift_height}")


def sample(rng: np.random.Generator, cfg: LiftConfig):
    objects = pick_objects(rng, 1 + cfg.distractors)
    xy = scatter(rng, [OBJECT_HALF_SIZE * np.sqrt(2)] * len(objects))
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
