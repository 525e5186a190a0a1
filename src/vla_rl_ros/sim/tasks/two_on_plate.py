"""two_on_plate: put two named objects on the plate, one after the other (the two-step task: the
longest horizon, and the policy must remember which object is already done from the image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE, OBJECT_SLOTS, PLATE_RADIUS, PLATE_TOP
from vla_rl_ros.sim.tasks.base import (
    Placement,
    TaskSpec,
    TaskState,
    object_placement,
    pick_objects,
    scatter,
)
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS
from vla_rl_ros.sim.tasks.pick_place import PickPlaceConfig, resting_on_plate
from vla_rl_ros.sim.tasks.skills import place, resting_on, retreat


@dataclass(frozen=True)
class TwoOnPlateConfig(PickPlaceConfig):
    max_distractors: ClassVar[int] = len(OBJECT_SLOTS) - 2  # the roles take two objects

    max_steps: int = 160  # the expert needs 80-100
    distractors: int = 1
    slot_offset: float = field(default=0.04, metadata={"help": "expert: the objects go this far (m) either side "
                                                               "of the plate centre along x, across the "
                                                               "fingers' opening direction so they miss each other"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slot_offset + self.inside_margin >= PLATE_RADIUS or self.slot_offset < OBJECT_HALF_SIZE:
            raise ValueError(f"TwoOnPlateConfig.slot_offset={self.slot_offset} must keep both objects apart "
                             f"(>= {OBJECT_HALF_SIZE}) and inside the plate's rim")


def sample(rng: np.random.Generator, cfg: TwoOnPlateConfig) -> tuple[Placement, ...]:
    objects = pick_objects(rng, 2 + cfg.distractors)
    xy = scatter(rng, [PLATE_RADIUS] + [OBJECT_RADIUS] * len(objects))
    placed = [object_placement(slot, colour, p, rng) for (slot, colour), p in zip(objects, xy[1:], strict=True)]
    plate = Placement(name="plate", body="plate", x=float(xy[0, 0]), y=float(xy[0, 1]))
    return (placed[0], placed[1], plate, *placed[2:])


def on_plate(state: TaskState, i: int, cfg: TwoOnPlateConfig) -> bool:
    return resting_on_plate(state.object_pos[i], state.object_pos[2], cfg.inside_margin, cfg.rest_tolerance)


def success(state: TaskState, cfg: TwoOnPlateConfig) -> bool:
    return on_plate(state, 0, cfg) and on_plate(state, 1, cfg) and state.gripper < cfg.released_closure


def expert(state: TaskState, cfg: TwoOnPlateConfig) -> np.ndarray:
    plate = state.object_pos[2]
    for i, side in ((0, -1.0), (1, 1.0)):  # the first object on the near half, the second on the far half
        if not on_plate(state, i, cfg):
            goal = np.array([plate[0] + side * cfg.slot_offset, plate[1], resting_on(PLATE_TOP)])
            return place(state, i, goal, cfg.expert)
    return retreat(state, cfg.expert)


SPEC = TaskSpec(
    name="two_on_plate",
    description="put both named objects on the plate",
    templates=("put the {object} and the {second} on the plate", "place the {object} and the {second} on "
               "the plate", "move the {object} and then the {second} onto the plate"),
    roles=("object", "second", "plate"),
    config=TwoOnPlateConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
