"""The executor's core (no ROS): robot configs, chunk validation, limited joint commands, the loop.

`RobotConfig.load(yaml)` describes an arm; `Commander(robot, make_kinematics(robot))` turns action rows into
joint commands inside the workspace box and the joint/speed limits; `ExecutorCore` runs the control
loop of contracts.md on plain events, so the executor node only converts messages.
"""

from __future__ import annotations

from vla_rl_ros.control.chunks import MAX_CHUNK_SIZE, Chunk, ChunkIn, Rejection, RejectReason, validate_chunk
from vla_rl_ros.control.command import Command, Commander, make_kinematics
from vla_rl_ros.control.executor import (
    ERRORS,
    FAULTS,
    HOME,
    SENSOR_FAULTS,
    STEPPING,
    CommandOut,
    ExecutorConfig,
    ExecutorCore,
    Hold,
    Lockstep,
    RequestOut,
)
from vla_rl_ros.control.homing import Homing
from vla_rl_ros.control.robot import GripperConfig, RobotConfig, WorkspaceConfig

SIM_PANDA = "package://vla_rl_ros/config/robots/sim_panda.yaml"

__all__ = ["ERRORS", "FAULTS", "HOME", "MAX_CHUNK_SIZE", "SENSOR_FAULTS", "SIM_PANDA", "STEPPING", "Chunk", "ChunkIn",
           "Command", "CommandOut", "Commander", "ExecutorConfig", "ExecutorCore", "GripperConfig", "Hold", "Homing",
           "Lockstep", "RejectReason", "Rejection", "RequestOut", "RobotConfig", "WorkspaceConfig", "make_kinematics",
           "validate_chunk"]
