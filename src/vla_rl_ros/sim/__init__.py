"""MuJoCo tabletop simulation core (no ROS): the scene, the task suite and the env.

`make_env(task)` gives a `SimEnv`; `TASKS` lists the tasks. The arm's kinematics (`ArmModel`) are
control/kinematics.py, below this package, since the real-arm executor needs them without a sim.
Rendering defaults to EGL (headless: the package's __init__ sets it before anything imports mujoco);
set MUJOCO_GL to override.
"""

from __future__ import annotations

from vla_rl_ros.sim.clock import SimClock
from vla_rl_ros.sim.env import (
    ACTION_MODES,
    CAMERAS,
    JOINT_STATE_NAMES,
    STATE_NAMES,
    EnvConfig,
    Observation,
    SimEnv,
    StepResult,
    action_names,
    make_env,
)
from vla_rl_ros.sim.tasks import TASKS, TaskSpec, TaskState, get_task

__all__ = ["ACTION_MODES", "CAMERAS", "JOINT_STATE_NAMES", "STATE_NAMES", "TASKS", "EnvConfig",
           "Observation", "SimClock", "SimEnv", "StepResult", "TaskSpec", "TaskState",
           "action_names", "get_task", "make_env"]
