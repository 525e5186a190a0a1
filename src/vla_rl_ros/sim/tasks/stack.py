"""stack: put the named object on top of another named object (two objects to attend to, and a
placement on a small, movable support)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE, OBJECT_SLOTS
from vla_rl_ros.sim.tasks.base import (
    Placement,
    TaskSpec,
    TaskState,
    object_placement,
    pick_objects,
    scatter,
)
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS, TaskConfig
from vla_rl_ros.sim.tasks.skills import place, retreat


@dataclass(frozen=True)
class StackConfig(TaskConfig):
    max_distractors: ClassVar[int] = len(OBJECT_SLOTS) - 2  # the roles take two objects

    # the expert needs 45-60 of the default max_steps
    xy_tolerance: float = field(default=0.02, metadata={"help": "top-to-base centre offset (m) still stacked"})
    z_tolerance: float = field(default=0.012, metadata={"help": "deviation (m) from resting exactly on the base"})
    released_closure: float = field(default=0.1, metadata={"help": "measured gripper closure under which the "
                                                                   "object counts as let go"})


def sample(rng: np.random.Generator, cfg: StackConfig) -> tuple[Placement, ...]:
    objects = pick_objects(rng, 2 + cfg.distractors)
    xy = scatter(rng, [OBJECT_RADIUS] * len(objects))
    return tuple(object_placement(slot, colour, p, rng) for (slot, colour), p in zip(objects, xy, strict=True))


def stacked(state: TaskState, cfg: StackConfig) -> bool:
    top, base = state.object_pos[0], state.object_pos[1]
    return bool(np.linalg.norm(top[:2] - base[:2]) < cfg.xy_tolerance
                and abs(top[2] - base[2] - 2 * OBJECT_HALF_SIZE) < cfg.z_tolerance
                and base[2] < OBJECT_HALF_SIZE + cfg.z_tolerance)


def success(state: TaskState, cfg: StackConfig) -> bool:
    return stacked(state, cfg) and state.gripper < cfg.released_closure


def expert(state: TaskState, cfg: StackConfig) -> np.ndarray:
    if stacked(state, cfg):
        return retreat(state, cfg.expert)
    base = state.object_pos[1]
    return place(state, 0, base + np.array([0.0, 0.0, 2 * OBJECT_HALF_SIZE]), cfg.expert)


SPEC = TaskSpec(
    name="stack",
    description="put the first named object on top of the second",
    templates=("stack the {object} on the {base}", "put the {object} on top of the {base}",
               "place the {object} on the {base}"),
    roles=("object", "base"),
    config=StackConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
