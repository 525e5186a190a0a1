"""push: slide the named object onto the black target square (contact without grasping)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE, TARGET_HALF_SIZE
from vla_rl_ros.sim.tasks.base import (
    Placement,
    TaskSpec,
    TaskState,
    object_placement,
    pick_objects,
    scatter,
)
from vla_rl_ros.sim.tasks.config import OBJECT_RADIUS, TaskConfig
from vla_rl_ros.sim.tasks.skills import CLOSED, ee_action, toward, via_travel_height

TARGET_RADIUS = TARGET_HALF_SIZE * np.sqrt(2)
PATH_TRIES = 100


@dataclass(frozen=True)
class PushConfig(TaskConfig):
    # the expert needs 30-75 of the default max_steps; distractors are kept off the push path
    min_distance: float = field(default=0.15, metadata={"help": "least object-to-target distance at reset (m)"})
    max_distance: float = field(default=0.25, metadata={"help": "largest object-to-target distance at reset (m)"})
    inside_margin: float = field(default=0.02, metadata={"help": "how far (m) inside the square's edge the "
                                                                 "object's centre must be"})
    on_table_tolerance: float = field(default=0.01, metadata={"help": "object centre height above resting (m) "
                                                                      "still counted as on the table"})
    push_height: float = field(default=0.025, metadata={"help": "expert: TCP height while pushing (m)"})
    approach_offset: float = field(default=0.075, metadata={"help": "expert: where it lowers the closed "
                                                                    "fingers, behind the object centre (m)"})
    contact_offset: float = field(default=0.045, metadata={"help": "expert: object centre to TCP when the "
                                                                   "fingers touch the object (m)"})
    push_advance: float = field(default=0.04, metadata={"help": "expert: how far ahead of contact it aims (m)"})
    lateral_tolerance: float = field(default=0.02, metadata={"help": "expert: off-line TCP offset (m) that "
                                                                     "makes it lift and re-approach"})
    done_radius: float = field(default=0.01, metadata={"help": "expert: stop pushing this close to the "
                                                               "target centre (m)"})
    path_clearance: float = field(default=0.09, metadata={"help": "distractor centres stay this far from "
                                                                  "the push path (m)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.min_distance < self.max_distance:
            raise ValueError(f"PushConfig needs 0 < min_distance ({self.min_distance}) < max_distance "
                             f"({self.max_distance})")
        if not 0 <= self.inside_margin < TARGET_HALF_SIZE:
            raise ValueError(f"PushConfig.inside_margin={self.inside_margin} must be in [0, {TARGET_HALF_SIZE})")


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def sample(rng: np.random.Generator, cfg: PushConfig) -> tuple[Placement, ...]:
    objects = pick_objects(rng, 1 + cfg.distractors)
    for _ in range(PATH_TRIES):
        xy = scatter(rng, [OBJECT_RADIUS, TARGET_RADIUS] + [OBJECT_RADIUS] * cfg.distractors,
                     min_first_distance=cfg.min_distance, max_first_distance=cfg.max_distance)
        u = (xy[1] - xy[0]) / np.linalg.norm(xy[1] - xy[0])
        start = xy[0] - u * cfg.approach_offset
        if all(_segment_distance(p, start, xy[1]) > cfg.path_clearance for p in xy[2:]):
            break
    else:
        raise RuntimeError(f"no push layout with clear paths after {PATH_TRIES} tries; lower path_clearance")
    target = Placement(name="target", body="target", x=float(xy[1, 0]), y=float(xy[1, 1]))
    placed = [object_placement(slot, colour, p, rng) for (slot, colour), p in zip(objects, xy[[0, *range(2, len(xy))]],
                                                                                   strict=True)]
    return (placed[0], target, *placed[1:])


def success(state: TaskState, cfg: PushConfig) -> bool:
    offset = np.abs(state.object_pos[0, :2] - state.object_pos[1, :2])
    on_table = state.object_pos[0, 2] < OBJECT_HALF_SIZE + cfg.on_table_tolerance
    return bool(np.all(offset < TARGET_HALF_SIZE - cfg.inside_margin) and on_table)


def expert(state: TaskState, cfg: PushConfig) -> np.ndarray:
    obj, tcp = state.object_pos[0, :2], state.ee_pos
    to_target = state.object_pos[1, :2] - obj
    dist = float(np.linalg.norm(to_target))
    if dist < cfg.done_radius:  # there: lift the fingers clear
        return ee_action(toward(state, np.array([*tcp[:2], cfg.expert.travel_height]), cfg.expert), CLOSED)
    u = to_target / dist
    rel = tcp[:2] - obj
    along = float(rel @ u)
    lateral = float(np.linalg.norm(rel - along * u))
    low = tcp[2] < cfg.push_height + cfg.expert.z_tolerance
    if low and lateral < cfg.lateral_tolerance and along < -OBJECT_HALF_SIZE:
        goal_xy = obj + u * (min(dist, cfg.push_advance) - cfg.contact_offset)
        return ee_action(toward(state, np.array([*goal_xy, cfg.push_height]), cfg.expert), CLOSED)
    start = np.array([*(obj - u * cfg.approach_offset), cfg.push_height])
    if np.linalg.norm(tcp[:2] - start[:2]) < 2 * cfg.expert.xy_tolerance:
        return ee_action(toward(state, start, cfg.expert), CLOSED)  # lower behind the object
    return ee_action(via_travel_height(state, start, cfg.expert), CLOSED)


SPEC = TaskSpec(
    name="push",
    description="push the named object onto the black target square",
    templates=("push the {object} onto the black square", "slide the {object} to the black square",
               "push the {object} to the target"),
    roles=("object", "target"),
    config=PushConfig(),
    sample_fn=sample,
    success_fn=success,
    expert_fn=expert,
)
