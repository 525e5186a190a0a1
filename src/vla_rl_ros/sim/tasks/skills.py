"""Building blocks of the scripted experts: proportional moves and grasp / carry / place skills.

Experts read only the privileged TaskState and keep no memory, so they can take over from any
state (after a policy's actions too). Moves are proportional to the remaining error with one cap on
the vector's length, not per axis: LEARNING_PROBE.md found that per-axis saturation (one axis at
zero early, the others at the clip) teaches a small policy only the label average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_HALF_SIZE
from vla_rl_ros.sim.tasks.base import TaskState

OPEN, CLOSED = 0.0, 1.0


@dataclass(frozen=True)
class ExpertConfig:
    """Gains and tolerances shared by the scripted experts."""

    gain: float = field(default=0.5, metadata={"help": "fraction of the remaining TCP error commanded per step"})
    max_step: float = field(default=0.04, metadata={"help": "cap on the commanded translation's length (m/step)"})
    travel_height: float = field(default=0.13, metadata={"help": "TCP height (m) for moves across the table"})
    xy_tolerance: float = field(default=0.006, metadata={"help": "TCP-object xy error (m) under which to descend: "
                                                                 "the open fingers clear a 6 cm cube by 3.5 mm"})
    z_tolerance: float = field(default=0.012, metadata={"help": "TCP height error (m) under which a grasp closes"})
    held_offset: float = field(default=0.02, metadata={"help": "object-TCP offset (m, per xy and z) within "
                                                                "which closed fingers count as holding it"})
    held_closure: float = field(default=0.12, metadata={"help": "measured closure above which closed fingers "
                                                                "count as holding (open 0, 6 cm object 0.25)"})
    released_closure: float = field(default=0.05, metadata={"help": "measured closure under which the fingers "
                                                                    "count as open"})
    place_clearance: float = field(default=0.006, metadata={"help": "gap (m) under an object when it is let go"})

    def __post_init__(self) -> None:
        if not 0 < self.gain <= 1:
            raise ValueError(f"ExpertConfig.gain={self.gain} must be in (0, 1] (try 0.5)")
        if self.max_step <= 0:
            raise ValueError(f"ExpertConfig.max_step={self.max_step} must be > 0 m (try 0.04)")
        if not self.released_closure < self.held_closure:
            raise ValueError("ExpertConfig.released_closure must be below held_closure")


def ee_action(delta: np.ndarray, gripper: float) -> np.ndarray:
    """(4,) [dx, dy, dz, gripper] as float32."""
    return np.array([*delta, gripper], dtype=np.float32)


def toward(state: TaskState, goal: np.ndarray, cfg: ExpertConfig) -> np.ndarray:
    """Proportional TCP step (3,) towards goal, its length capped at cfg.max_step."""
    delta = cfg.gain * (np.asarray(goal, dtype=float) - state.ee_pos)
    norm = float(np.linalg.norm(delta))
    return delta * (cfg.max_step / norm) if norm > cfg.max_step else delta


def via_travel_height(state: TaskState, goal: np.ndarray, cfg: ExpertConfig) -> np.ndarray:
    """Step towards a point above `goal` at travel height, rising first when low and far away so
    the hand (and what it carries) never sweeps through other objects."""
    far = np.linalg.norm(state.ee_pos[:2] - goal[:2]) > 2 * cfg.xy_tolerance
    if far and state.ee_pos[2] < cfg.travel_height - 2 * cfg.z_tolerance:
        return toward(state, np.array([*state.ee_pos[:2], cfg.travel_height]), cfg)
    return toward(state, np.array([goal[0], goal[1], max(goal[2], cfg.travel_height)]), cfg)


def is_held(state: TaskState, target: np.ndarray, cfg: ExpertConfig) -> bool:
    """What is at target (3,) (an object's or a handle's centre) sits between closed fingers."""
    offset = target - state.ee_pos
    return (state.gripper > cfg.held_closure and np.linalg.norm(offset[:2]) < cfg.held_offset
            and abs(offset[2]) < cfg.held_offset)


def grasp(state: TaskState, obj: np.ndarray, cfg: ExpertConfig) -> np.ndarray:
    """Approach obj (3,), an object's or a handle's centre, from above with the gripper open,
    descend, and close on it."""
    xy_err = np.linalg.norm(state.ee_pos[:2] - obj[:2])
    if xy_err < 2 * cfg.xy_tolerance and abs(state.ee_pos[2] - obj[2]) < cfg.z_tolerance:
        return ee_action(toward(state, obj, cfg), CLOSED)
    descending = state.ee_pos[2] < cfg.travel_height - 2 * cfg.z_tolerance
    if xy_err < cfg.xy_tolerance or (descending and xy_err < 2 * cfg.xy_tolerance):
        return ee_action(toward(state, obj, cfg), OPEN)  # descend, still centring
    return ee_action(via_travel_height(state, obj, cfg), OPEN)


def place(state: TaskState, i: int, goal: np.ndarray, cfg: ExpertConfig) -> np.ndarray:
    """Pick object i up if needed, carry it above goal (the resting centre (3,) it should end at),
    lower it until it almost touches, then open and rise."""
    obj = state.object_pos[i]
    if not is_held(state, obj, cfg):
        return grasp(state, obj, cfg)
    above = np.array([goal[0], goal[1], goal[2] + cfg.place_clearance])
    tcp_goal = above + (state.ee_pos - obj)  # keep the grip offset
    if np.linalg.norm(obj[:2] - goal[:2]) > cfg.xy_tolerance:
        return ee_action(via_travel_height(state, tcp_goal, cfg), CLOSED)
    if obj[2] - above[2] > cfg.z_tolerance / 2:
        return ee_action(toward(state, tcp_goal, cfg), CLOSED)
    return ee_action(np.zeros(3), OPEN)


def retreat(state: TaskState, cfg: ExpertConfig) -> np.ndarray:
    """Open and rise to travel height above where the TCP is (after a successful place)."""
    if state.gripper > cfg.released_closure:
        return ee_action(np.zeros(3), OPEN)
    return ee_action(toward(state, np.array([*state.ee_pos[:2], cfg.travel_height]), cfg), OPEN)


def resting_on(lower_top: float) -> float:
    """Centre height (m) of an object resting on a surface at height lower_top."""
    return lower_top + OBJECT_HALF_SIZE
