"""reach: move the open gripper just above the named object (the easiest task: no contact)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.tasks.base import TaskSpec, TaskState, object_placement, pick_objects, scatter
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS, TaskConfig
from vla_rl_ros.sim.tasks.skills import OPEN, ee_action, toward


@dataclass(frozen=True)
class ReachConfig(TaskConfig):
    max_steps: int = 40  # the expert needs about 15
    distractors: int = 2
    hover_height: float = field(default=0.07, metadata={"help": "goal TCP height above the object's centre (m)"})
    tolerance: float = field(default=0.04, metadata={"help": "success radius around the goal point (m)"})


def sample(rng: np.random.Generator, cfg: ReachConfig):
    objects = pick_objects(rng, 1 + cfg.distractors)
    xy = scatter(rng, [OBJECT_RADIUS] * len(objects))
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
