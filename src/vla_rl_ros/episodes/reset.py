"""The reset protocol of a real arm (no ROS): send the arm home, then wait for the operator.

A simulator resets in one service call (ResetEpisode). A real arm cannot: between episodes the
episode manager sends it to the robot config's home pose, one command per control step with the
executor's own limits (`control.Commander`: joint limits, per-joint step cap from the velocity
limits, workspace box), then asks the operator to restore the layout and press r. A GRPO group is n
rollouts from the same initial state, so the operator is asked to restore the same layout n times,
and told which group and rollout comes next. After an abort or an e-stop the arm is the operator's:
nothing moves until they press r (the e-stop released first).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_rl_ros.control import Command, Commander, RobotConfig, make_arm
from vla_rl_ros.episodes.schedule import EpisodePlan


class Homing:
    """Commands that bring the arm to its home pose inside the executor's limits, gripper open."""

    def __init__(self, robot: RobotConfig, tolerance: float) -> None:
        # The executor's Commander in joint_position mode: the home pose is a joint target, limited
        # exactly as a policy's joint_position action would be.
        self.robot = robot
        self.commander = Commander(dataclasses.replace(robot, action_mode="joint_position"), make_arm(robot))
        self.home = self.commander.home  # (J,) rad
        self.tolerance = tolerance

    def at_home(self, q_meas: np.ndarray) -> bool:
        return bool(np.max(np.abs(np.asarray(q_meas, dtype=float) - self.home)) <= self.tolerance)

    def command(self, q_meas: np.ndarray) -> Command:
        """The next step towards home from the measured joints (J,) rad."""
        return self.commander.command(q_meas, np.append(self.home, 0.0))  # closure 0: gripper open

    def positions(self, command: Command) -> list[float]:
        """In the robot config's command_joints order (what its controller takes)."""
        return self.commander.positions(command).tolist()


def plan_label(plan: EpisodePlan) -> str:
    """Where an episode stands, for an operator: "group 3, rollout 5/8 (pick_place, layout 42)"."""
    kind = "evaluation round" if plan.evaluation else "group"
    return f"{kind} {plan.group_index}, rollout {plan.rollout + 1}/{plan.rollouts} ({plan.task}, layout {plan.seed})"


def layout_prompt(plan: EpisodePlan, instruction: str) -> str:
    """What the operator must do before `plan` can start."""
    if plan.rollout == 0 or plan.evaluation:
        todo = f"set up layout {plan.seed} for {instruction!r}"
    else:
        todo = f"restore the layout of rollout 1 ({instruction!r})"
    return f"{plan_label(plan)}: {todo}, then press r"
