"""The way home between episodes of a real arm: the robot config's home pose, gripper open, reached
one command per control step inside the executor's own limits."""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_rl_ros.control.command import Command, Commander, make_kinematics
from vla_rl_ros.control.robot import RobotConfig


class Homing:
    """Commands that bring the arm to its home pose inside the executor's limits, gripper open."""

    def __init__(self, robot: RobotConfig, tolerance: float) -> None:
        # The executor's Commander in joint_position mode: the home pose is a joint target, limited
        # exactly as a policy's joint_position action would be (joint limits, per-step cap, workspace box).
        self.commander = Commander(dataclasses.replace(robot, action_mode="joint_position"), make_kinematics(robot))
        self.home = self.commander.home  # (J,) rad
        self.tolerance = tolerance

    def at_home(self, q_meas: np.ndarray) -> bool:
        return bool(np.max(np.abs(np.asarray(q_meas, dtype=float) - self.home)) <= self.tolerance)

    def command(self, q_meas: np.ndarray) -> Command:
        """The next step towards home from the measured joints (J,) rad."""
        return self.commander.command(q_meas, np.append(self.home, 0.0))  # closure 0: gripper open
