"""One control step: an action row -> joint targets for the arm's controller, inside every limit.

ee_delta actions go through the IK of control/kinematics.py's `ArmModel` (the sim's too, so sim and real turn a
delta into joints alike) from the CURRENT measured joints; joint_position actions are targets as
they are. Then, in this order: the Cartesian target is clipped to the workspace box (before IK), the
joints to their position limits, and each joint's motion to min(velocity limit x period,
max_joint_step) from the measured position. A check then holds the arm if the command's TCP would
still end up outside the box (IK is approximate). The step limit comes last, for a hold too, so no
command ever moves a joint by more than it; a joint measured inside its limits is thus commanded
inside them, and one that overshot a limit (by at most the executor's joint_limit_margin) is brought
back towards it by at most one step, never sent further out (in a hold, only if that does not move
the TCP further out of the box; else the hold is the measured position itself). A 4-D ee_delta action turns the TCP
towards the home orientation by at most max_rotation per step (an arm started elsewhere comes round
gradually). A measured state far outside the limits is the executor's business
(`Commander.outside_limits`): it commands nothing from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from vla_rl_ros.control.kinematics import ARM_JOINTS, ArmModel
from vla_rl_ros.control.robot import RobotConfig

# Names of the limits that acted on a command (reported on /diagnostics).
CLAMP_TRANSLATION = "translation"
CLAMP_ROTATION = "rotation"
CLAMP_WORKSPACE = "workspace"
CLAMP_JOINT_LIMITS = "joint_limits"
CLAMP_JOINT_STEP = "joint_step"
HOLD_WORKSPACE = "workspace_hold"  # the command would leave the box: the arm holds instead


@dataclass(frozen=True)
class Command:
    """Joint targets for one control step, and which limits changed them."""

    arm: np.ndarray  # (J,) rad, in RobotConfig.joints order
    gripper: float  # gripper joint position (m or rad)
    clamped: frozenset[str]



def make_kinematics(robot: RobotConfig) -> ArmModel:
    """The arm's kinematic model from the robot config's model file (MJCF or URDF), its speed limits the
    config's (applied by Commander).

    The config's joint names (the ROS side) map to the model's arm joints by order: `model_joints`, else the
    config's own names where the model has them (a URDF of the arm), else the Panda model's joint1..joint7
    (so a Panda's driver may say panda_joint1 for the model's joint1)."""
    model = mujoco.MjModel.from_xml_path(str(robot.model_path()))
    own = all(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j) >= 0 for j in robot.joints)
    names = robot.model_joints or (robot.joints if own else ARM_JOINTS)
    if len(robot.joints) != len(names):
        raise ValueError(f"robot {robot.name!r}: {len(robot.joints)} joints {robot.joints} for a model with "
                         f"{len(names)} arm joints {names}; list one name per model joint, base to tip (or name "
                         "the model's in model_joints)")
    try:
        return ArmModel(model, joint_names=names, tcp=robot.tcp, tcp_offset=robot.tcp_offset or (0.0, 0.0, 0.0),
                        home=robot.home, velocity_limits=robot.velocity_limits)
    except ValueError as exc:
        raise ValueError(f"robot {robot.name!r}, model {robot.model}: {exc}") from None


class Commander:
    """Turns action rows into limited joint commands for one robot."""

    def positions(self, command: Command) -> np.ndarray:
        """The command's positions in RobotConfig.command_joints order (arm joints, gripper if owned)."""
        return np.append(command.arm, command.gripper) if self.robot.gripper.in_trajectory else command.arm

    def __init__(self, robot: RobotConfig, kinematics: ArmModel) -> None:
        self.robot = robot
        self.kinematics = kinematics
        lower = np.asarray(robot.joint_lower or kinematics.lower, dtype=float)
        upper = np.asarray(robot.joint_upper or kinematics.upper, dtype=float)
        self.lower = np.maximum(lower, kinematics.lower)  # (J,) rad: the tighter of config and model
        self.upper = np.minimum(upper, kinematics.upper)
        if np.any(self.lower >= self.upper):
            raise ValueError(f"robot {robot.name!r}: joint limits [{self.lower}, {self.upper}] are empty where the "
                             f"config's and the model's ranges do not overlap")
        gripper, travel = robot.gripper, kinematics.finger_travel  # None: the model has no Panda fingers
        ends = (gripper.open, gripper.closed)
        if travel is not None and (min(ends) < 0.0 or max(ends) > travel):
            raise ValueError(f"robot {robot.name!r}: gripper open={gripper.open} and closed={gripper.closed} must "
                             f"lie in the model's finger range [0, {travel}] m (per finger, not "
                             "the width)")
        # (J,) rad per command: what the speed limits allow in one period, capped by max_joint_step
        self.max_step = np.minimum(np.asarray(robot.velocity_limits) * robot.period, robot.max_joint_step)
        self.home = np.asarray(robot.home or kinematics.home, dtype=float)  # (J,) rad
        if np.any(self.home < self.lower) or np.any(self.home > self.upper):
            raise ValueError(f"robot {robot.name!r}: home {self.home.tolist()} is outside the joint limits")
        # A 4-D ee_delta action holds the home pose's TCP orientation (the sim core: gripper pointing down).
        self.home_quat = kinematics.fk(self.home)[1]
        self.box_low = np.asarray(robot.workspace.low, dtype=float)
        self.box_high = np.asarray(robot.workspace.high, dtype=float)

    def command(self, q_meas: np.ndarray, action: np.ndarray) -> Command:
        """The limited command for action (A,) from the measured joints q_meas (J,).

        The action must be finite and of a valid length for the robot's mode (validated chunks are).
        """
        clamped: set[str] = set()
        q_meas = np.asarray(q_meas, dtype=float)
        action = np.asarray(action, dtype=float)
        closure = float(np.clip(action[-1], 0.0, 1.0))
        ee = self.robot.action_mode == "ee_delta"
        q_target = self._ik_target(q_meas, action, clamped) if ee else action[:-1]
        q_cmd = self._limited(q_meas, q_target, clamped)
        outside, tolerance = self._outside_box(q_cmd), self.robot.workspace.tolerance
        if outside > tolerance and outside > (measured := self._outside_box(q_meas)):  # FK of q_meas only then
            # hold: never move the TCP further out of the box; stay where the arm is (a joint that
            # overshot a limit steps back towards it, unless that too takes the TCP further out: then
            # the command is the measured position itself, no motion at all)
            q_cmd = self._limited(q_meas, q_meas, clamped)
            if self._outside_box(q_cmd) > max(tolerance, measured):
                q_cmd = q_meas.copy()
            clamped.add(HOLD_WORKSPACE)
        return Command(arm=q_cmd, gripper=self.robot.gripper.position(closure), clamped=frozenset(clamped))

    def outside_limits(self, q_meas: np.ndarray, margin: float) -> str:
        """Why the measured joints (J,) must not be commanded from: a joint more than margin (rad) outside
        its limits is a spoofed message or a faulty driver (one publishing degrees), not an overshoot;
        "" when every joint is within its limits give or take margin."""
        q_meas = np.asarray(q_meas, dtype=float)
        excess = np.maximum(self.lower - q_meas, q_meas - self.upper)  # (J,) rad beyond a limit, < 0 inside
        j = int(np.argmax(excess))
        if excess[j] <= margin:
            return ""
        return (f"{self.robot.joints[j]} measured at {q_meas[j]:.4g} rad, {excess[j]:.4g} rad outside its limits "
                f"[{self.lower[j]:.4f}, {self.upper[j]:.4f}] (joint_limit_margin {margin:g} rad)")

    def _outside_box(self, q: np.ndarray) -> float:
        """How far (m) the TCP at joints q (J,) lies outside the workspace box."""
        return self.robot.workspace.distance(self.kinematics.fk(q)[0])

    def _limited(self, q_meas: np.ndarray, q_target: np.ndarray, clamped: set[str]) -> np.ndarray:
        """q_target (J,) clipped to the joint limits, then to one step from q_meas: every command's last
        stage, so the step limit holds even for a joint measured past a limit (within the margin)."""
        within = np.clip(q_target, self.lower, self.upper)
        if np.any(within != q_target):
            clamped.add(CLAMP_JOINT_LIMITS)
        q_cmd = np.clip(within, q_meas - self.max_step, q_meas + self.max_step)
        if np.any(q_cmd != within):
            clamped.add(CLAMP_JOINT_STEP)
        return q_cmd

    def _ik_target(self, q_meas: np.ndarray, action: np.ndarray, clamped: set[str]) -> np.ndarray:
        limit_t, limit_r = self.robot.max_translation, self.robot.max_rotation
        delta = np.clip(action[:3], -limit_t, limit_t)
        if np.any(delta != action[:3]):
            clamped.add(CLAMP_TRANSLATION)
        rotation = None
        if len(action) == 7:
            rotation = np.clip(action[3:6], -limit_r, limit_r)
            if np.any(rotation != action[3:6]):
                clamped.add(CLAMP_ROTATION)
        if self.robot.workspace.distance(self.kinematics.fk(q_meas)[0] + delta) > 0:
            clamped.add(CLAMP_WORKSPACE)
        return self.kinematics.ee_delta_target(q_meas, delta, rotation=rotation, hold_quat=self.home_quat,
                                               max_turn=limit_r, box=(self.box_low, self.box_high))
