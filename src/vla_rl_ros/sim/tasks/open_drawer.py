"""open_drawer: grasp the drawer's handle and pull the drawer out (an articulated object: the
motion is constrained to the drawer's slide, and the grasp must hold while pulling)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from vla_rl_ros.sim.scene import DRAWER_OPENING, HANDLE_OFFSET
from vla_rl_ros.sim.tasks.base import (
    SPAWN_GAP,
    SPAWN_X,
    SPAWN_Y,
    Placement,
    TaskSpec,
    TaskState,
    object_placement,
    pick_objects,
)
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS, TaskConfig
from vla_rl_ros.sim.tasks.skills import CLOSED, ee_action, grasp, is_held, retreat, toward

CABINET_HALF_WIDTH = 0.13  # m, along y (sim/tabletop.xml)


@dataclass(frozen=True)
class OpenDrawerConfig(TaskConfig):
    max_distractors: ClassVar[int] = 1  # one object fits beside the cabinet

    max_steps: int = 80  # the expert needs about 35
    open_distance: float = field(default=0.1, metadata={"help": "how far (m) the drawer must be pulled out"})
    front_x: tuple[float, float] = field(default=(0.5, 0.56), metadata={"help": "range of the cabinet front's x (m)"})
    offset_y: tuple[float, float] = field(default=(0.06, 0.12), metadata={
        "help": "range of |y| (m) of the cabinet's centre; its side (left or right) is drawn per seed"})
    expert_open: float = field(default=0.13, metadata={"help": "expert: opening (m) it pulls to before letting go"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.open_distance < self.expert_open:
            raise ValueError(f"OpenDrawerConfig.expert_open={self.expert_open} must exceed open_distance="
                             f"{self.open_distance}, or the expert stops short of success")


def sample(rng: np.random.Generator, cfg: OpenDrawerConfig) -> tuple[Placement, ...]:
    side = float(rng.choice([-1.0, 1.0]))
    cabinet_y = side * rng.uniform(*cfg.offset_y)
    cabinet = Placement(name="drawer", body="cabinet", x=float(rng.uniform(*cfg.front_x)), y=float(cabinet_y))
    placements = [cabinet]
    for slot, colour in pick_objects(rng, cfg.distractors):
        # on the other side of y = 0, clear of the housing's edge (which reaches past y = 0) by a gap
        edge = CABINET_HALF_WIDTH - abs(cabinet_y)
        y = -side * rng.uniform(edge + OBJECT_RADIUS + SPAWN_GAP, SPAWN_Y[1])
        placements.append(object_placement(slot, colour, np.array([rng.uniform(*SPAWN_X), y]), rng))
    return tuple(placements)


def handle_position(state: TaskState) -> np.ndarray:
    """The handle's centre (3,): the cabinet origin, the closed-drawer offset, minus the opening."""
    return state.object_pos[0] + np.array(HANDLE_OFFSET) - np.array([state.values[DRAWER_OPENING], 0.0, 0.0])


def success(state: TaskState, cfg: OpenDrawerConfig) -> bool:
    return bool(state.values[DRAWER_OPENING] > cfg.open_distance)


def expert(state: TaskState, cfg: OpenDrawerConfig) -> np.ndarray:
    opening = state.values[DRAWER_OPENING]
    if opening >= cfg.expert_open:
        return retreat(state, cfg.expert)
    handle = handle_position(state)
    if not is_held(state, handle, cfg.expert):
        return grasp(state, handle, cfg.expert)
    pull = np.array([opening - cfg.expert_open - cfg.expert.xy_tolerance, 0.0, 0.0])
    return ee_action(toward(state, handle + pull, cfg.expert), CLOSED)


SPEC = TaskSpec(
    name="open_drawer",
    description="grasp the drawer's handle and pull the drawer open",
    templates=("open the drawer", "pull the drawer open", "pull out the drawer"),
    roles=("drawer",),
    config=OpenDrawerConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
