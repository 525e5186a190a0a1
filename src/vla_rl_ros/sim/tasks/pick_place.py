"""pick_place: put the named object on the plate (grasp, carry, place, release)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.scene import PLATE_RADIUS, PLATE_TOP
from vla_rl_ros.sim.tasks.base import (
    Placement,
    TaskSpec,
    TaskState,
    object_placement,
    pick_objects,
    scatter,
)
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS, TaskConfig
from vla_rl_ros.sim.tasks.skills import place, resting_on, retreat


@dataclass(frozen=True)
class PickPlaceConfig(TaskConfig):
    """Also two_on_plate's base: its objects rest on the plate and are let go by the same thresholds."""

    # the expert needs 45-60 of the default max_steps
    distractors: int = 2
    inside_margin: float = field(default=0.03, metadata={"help": "how far (m) inside the plate's rim an "
                                                                 "object's centre must be"})
    rest_tolerance: float = field(default=0.015, metadata={"help": "object centre height above resting on "
                                                                   "the plate (m) still counted as placed"})
    released_closure: float = field(default=0.1, metadata={"help": "measured gripper closure under which the "
                                                                   "object counts as let go"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.inside_margin < PLATE_RADIUS:
            raise ValueError(f"PickPlaceConfig.inside_margin={self.inside_margin} must be in [0, {PLATE_RADIUS})")


def sample(rng: np.random.Generator, cfg: PickPlaceConfig) -> tuple[Placement, ...]:
    objects = pick_objects(rng, 1 + cfg.distractors)
    xy = scatter(rng, [OBJECT_RADIUS, PLATE_RADIUS] + [OBJECT_RADIUS] * cfg.distractors)
    placed = [object_placement(slot, colour, p, rng) for (slot, colour), p in zip(objects, xy[[0, *range(2, len(xy))]],
                                                                                   strict=True)]
    plate = Placement(name="plate", body="plate", x=float(xy[1, 0]), y=float(xy[1, 1]))
    return (placed[0], plate, *placed[1:])


def resting_on_plate(obj: np.ndarray, plate: np.ndarray, inside_margin: float, rest_tolerance: float) -> bool:
    """An object centre obj (3,) rests on the plate at plate (3,): inside the rim by inside_margin and
    no higher than rest_tolerance above resting."""
    inside = np.linalg.norm(obj[:2] - plate[:2]) < PLATE_RADIUS - inside_margin
    return bool(inside and obj[2] < resting_on(PLATE_TOP) + rest_tolerance)


def on_plate(state: TaskState, cfg: PickPlaceConfig) -> bool:
    return resting_on_plate(state.object_pos[0], state.object_pos[1], cfg.inside_margin, cfg.rest_tolerance)


def success(state: TaskState, cfg: PickPlaceConfig) -> bool:
    return on_plate(state, cfg) and state.gripper < cfg.released_closure


def expert(state: TaskState, cfg: PickPlaceConfig) -> np.ndarray:
    if on_plate(state, cfg):
        return retreat(state, cfg.expert)
    plate = state.object_pos[1]
    return place(state, 0, np.array([plate[0], plate[1], resting_on(PLATE_TOP)]), cfg.expert)


SPEC = TaskSpec(
    name="pick_place",
    description="pick up the named object and put it on the plate",
    templates=("put the {object} on the plate", "place the {object} on the plate",
               "pick up the {object} and put it on the plate"),
    roles=("object", "plate"),
    config=PickPlaceConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
