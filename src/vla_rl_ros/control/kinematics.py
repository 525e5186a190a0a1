"""The arm's kinematic model: joint names, limits, home pose, forward and inverse kinematics, and
joint trajectories that respect the velocity limits.

Loaded from an MJCF (the Panda in sim/panda.xml, or any scene that includes it). It lives in control/,
below sim/, because the executor runs the same IK against a real arm's joint states with no simulator;
the sim env imports it for its end-effector action mode, so sim and real turn a delta into joints alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

ARM_JOINTS: tuple[str, ...] = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS: tuple[str, ...] = ("finger_joint1", "finger_joint2")
ARM_ACTUATORS: tuple[str, ...] = ARM_JOINTS
FINGER_ACTUATORS: tuple[str, ...] = ("finger1", "finger2")
TCP_SITE = "tcp"
HOME_KEY = "home"
# Franka Emika "Limits for Panda", maximum joint velocity (rad/s), joints 1..7
# (https://frankaemika.github.io/docs/control_parameters.html).
PANDA_VELOCITY_LIMITS: tuple[float, ...] = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)


GRIPPER_THRESHOLD = 0.5  # a binary gripper closes for actions above it


def gripper_command(action: float, binary: bool) -> float:
    """The closure 0 (open) .. 1 (closed) a gripper action commands, clipped. `binary`, as OpenVLA and
    SimpleVLA-RL's LIBERO set-up execute it: fully closed above GRIPPER_THRESHOLD, else fully open, so
    a sampled action near the middle cannot half-close the gripper on an object and let it slip."""
    if binary:
        return 1.0 if action > GRIPPER_THRESHOLD else 0.0
    return float(np.clip(action, 0.0, 1.0))


@dataclass(frozen=True)
class IKConfig:
    """Damped least squares (Levenberg-Marquardt) on the MuJoCo site Jacobian."""

    damping: float = field(default=0.05, metadata={"help": "DLS damping lambda (m, rad): larger is "
                                                          "steadier near singularities, slower to converge"})
    iterations: int = field(default=4, metadata={"help": "Newton iterations per solve; a 10 Hz step "
                                                        "moves a few cm, which 3-4 iterations resolve"})
    nullspace_gain: float = field(default=0.1, metadata={"help": "pull of the redundant (7th) DoF "
                                                                "towards the home posture per iteration"})
    tolerance: float = field(default=1e-4, metadata={"help": "stop early below this pose error (m, rad)"})

    def __post_init__(self) -> None:
        if self.damping <= 0:
            raise ValueError(f"IKConfig.damping={self.damping} must be > 0 (try 0.05)")
        if self.iterations < 1:
            raise ValueError(f"IKConfig.iterations={self.iterations} must be >= 1 (try 4)")
        if not 0 <= self.nullspace_gain <= 1:
            raise ValueError(f"IKConfig.nullspace_gain={self.nullspace_gain} must be in [0, 1] (try 0.1)")


@dataclass(frozen=True)
class JointTrajectory:
    """Straight line in joint space at constant velocity (what a joint_trajectory controller gets)."""

    times: np.ndarray  # (N,) s from the start; times[-1] is the duration
    positions: np.ndarray  # (N, J) rad, the last row is the goal
    velocities: np.ndarray  # (N, J) rad/s, constant along the segment


class ArmModel:
    """Kinematics of the arm in an MJCF (or URDF) model, with every id looked up once by name.

    The defaults are the Panda of sim/panda.xml, which the sim drives (its finger joints and actuators);
    another arm names its joints, its tool centre point (a site, or a body plus `tcp_offset` in its frame:
    MuJoCo's URDF import has no sites) and, without a `home` keyframe, its home pose. Holds its own
    scratch `MjData`, so IK never disturbs a simulation sharing the model.
    """

    def __init__(self, model: mujoco.MjModel, *, ik: IKConfig | None = None,
                 velocity_limits: tuple[float, ...] = PANDA_VELOCITY_LIMITS, joint_names: tuple[str, ...] = ARM_JOINTS,
                 tcp: str = TCP_SITE, tcp_offset: tuple[float, ...] = (0.0, 0.0, 0.0),
                 home: tuple[float, ...] = ()) -> None:
        self.model = model
        self.ik_config = ik or IKConfig()
        self.joint_names = tuple(joint_names)
        try:
            joints = [model.joint(name) for name in self.joint_names]
        except KeyError as exc:
            names = [model.joint(i).name for i in range(model.njnt)]
            raise ValueError(f"the model has no joint {exc}; its joints are {names}") from None
        # A site (the Panda's), else a body of that name (a URDF's link), the TCP tcp_offset from its origin.
        self.tcp_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, tcp)  # -1: a body
        self._tcp_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, tcp)
        if self.tcp_site < 0 and self._tcp_body < 0:
            raise ValueError(f"the model has no site or body {tcp!r} for the tool centre point (robot config `tcp`)")
        self._tcp_offset = np.asarray(tcp_offset, dtype=float)
        # The sim's Panda hand: finger joints and actuators (an executor's model needs neither).
        has = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) >= 0 for n in FINGER_JOINTS]
        fingers = [model.joint(name) for name in FINGER_JOINTS] if all(has) else []
        self.finger_joint_names = FINGER_JOINTS if fingers else ()
        self.finger_travel = float(fingers[0].range[1]) if fingers else None  # m per finger, fully open
        self.finger_qpos_adr = np.array([j.qposadr[0] for j in fingers], dtype=int)
        self.finger_dof_adr = np.array([j.dofadr[0] for j in fingers], dtype=int)
        actuators = (*ARM_ACTUATORS, *FINGER_ACTUATORS)
        drives = all(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) >= 0 for n in actuators)
        # None where the model has none (an executor's URDF): only the sim drives the arm through them.
        self.actuator_ids = np.array([model.actuator(n).id for n in ARM_ACTUATORS]) if drives else None
        self.finger_actuator_ids = np.array([model.actuator(n).id for n in FINGER_ACTUATORS]) if drives else None
        self.qpos_adr = np.array([j.qposadr[0] for j in joints])  # (J,)
        self.dof_adr = np.array([j.dofadr[0] for j in joints])  # (J,)
        self.lower = np.array([j.range[0] for j in joints])  # (J,) rad
        self.upper = np.array([j.range[1] for j in joints])  # (J,) rad
        self.velocity_limits = np.asarray(velocity_limits, dtype=float)  # (J,) rad/s
        if self.velocity_limits.shape != (self.dof,) or np.any(self.velocity_limits <= 0):
            raise ValueError(f"velocity_limits={velocity_limits} must be {self.dof} positive rad/s")
        home_key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, HOME_KEY)
        if home:
            self.home = np.asarray(home, dtype=float)  # (J,) rad
        elif home_key >= 0:
            self.home = model.key_qpos[home_key, self.qpos_adr].copy()
        else:
            raise ValueError(f"the model has no {HOME_KEY!r} keyframe: give the arm's home pose (robot config `home`)")
        self._data = mujoco.MjData(model)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    @classmethod
    def from_mjcf(cls, path: str | Path, **kwargs) -> ArmModel:
        """Load the arm from an MJCF file (a robot config's model, or the sim's `scene_path()`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no MJCF at {path}; pass the path of sim/panda.xml or a scene including it")
        return cls(mujoco.MjModel.from_xml_path(str(path)), **kwargs)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) m and orientation quaternion (4,) wxyz in the base frame for joints q (J,)."""
        self._set(q)
        return self._tcp_pose()

    def ik(self, q_start: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray) -> np.ndarray:
        """Joints (J,) that put the TCP at target_pos (3,) with orientation target_quat (4,) wxyz,
        starting from q_start and clamped to the joint limits (the best reachable pose when the
        target is out of reach)."""
        cfg = self.ik_config
        q = np.clip(np.asarray(q_start, dtype=float), self.lower, self.upper)
        target_quat = np.asarray(target_quat, dtype=float)
        err = np.zeros(6)
        err_quat = np.zeros(4)
        tcp_conj = np.zeros(4)
        damp = cfg.damping**2 * np.eye(6)
        for _ in range(cfg.iterations):
            self._set(q)
            pos, quat = self._tcp_pose()
            err[:3] = target_pos - pos
            # world-frame rotation error: target * conj(current), as a rotation vector
            mujoco.mju_negQuat(tcp_conj, quat)
            mujoco.mju_mulQuat(err_quat, target_quat, tcp_conj)
            mujoco.mju_quat2Vel(err[3:], err_quat, 1.0)
            if np.linalg.norm(err) < cfg.tolerance:
                break
            self._tcp_jacobian(pos)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])  # (6, J)
            jac_pinv = jac.T @ np.linalg.solve(jac @ jac.T + damp, np.eye(6))  # (J, 6)
            null = np.eye(self.dof) - jac_pinv @ jac
            q = q + jac_pinv @ err + null @ (cfg.nullspace_gain * (self.home - q))
            q = np.clip(q, self.lower, self.upper)
        return q

    def ee_delta_target(self, q_now: np.ndarray, translation: np.ndarray, *, rotation: np.ndarray | None = None,
                        hold_quat: np.ndarray | None = None, max_turn: float | None = None,
                        box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Joint target (J,) that moves the TCP from its pose at q_now by translation (3,) m in the base
        frame, and either turns it by rotation (3,) rad (roll, pitch, yaw about the base axes) or
        holds the orientation hold_quat (4,) wxyz (the current one if neither is given), turning
        towards it by at most max_turn rad if given; the position target is clipped to box =
        (low (3,), high (3,)) first. The sim env's end-effector action mode and the executor node both
        turn deltas into joints here."""
        pos, quat = self.fk(q_now)
        if rotation is not None:
            quat = rotate_quat(quat, rotation)
        elif hold_quat is not None:
            quat = turn_towards(quat, np.asarray(hold_quat, dtype=float), max_turn)
        target = pos + np.asarray(translation, dtype=float)
        if box is not None:
            target = np.clip(target, box[0], box[1])
        return self.ik(q_now, target, quat)

    def clamp(self, q_from: np.ndarray, q_target: np.ndarray, dt: float) -> np.ndarray:
        """q_target (J,) clipped to the joint limits and to what the velocity limits allow in dt s."""
        step = self.velocity_limits * dt
        q_target = np.clip(q_target, self.lower, self.upper)
        return np.clip(q_target, q_from - step, q_from + step)

    def trajectory(self, q_start: np.ndarray, q_goal: np.ndarray, duration: float, *,
                   points: int) -> JointTrajectory:
        """`points` waypoints from q_start (excluded) to q_goal (clamped to the limits), evenly spaced
        in time; the duration is stretched if needed so no joint exceeds its velocity limit."""
        if points < 1 or duration <= 0:
            raise ValueError(f"trajectory needs points >= 1 (got {points}) and duration > 0 (got {duration})")
        q_start = np.asarray(q_start, dtype=float)
        q_goal = np.clip(np.asarray(q_goal, dtype=float), self.lower, self.upper)
        dq = q_goal - q_start
        duration = max(duration, float(np.max(np.abs(dq) / self.velocity_limits)))
        frac = np.arange(1, points + 1) / points  # (N,)
        positions = q_start + frac[:, None] * dq  # (N, J)
        velocities = np.broadcast_to(dq / duration, positions.shape).copy()
        return JointTrajectory(times=frac * duration, positions=positions, velocities=velocities)

    def gripper_targets(self, closure: float) -> np.ndarray:
        """Finger position targets (2,) m for a gripper command 0 (open) .. 1 (closed)."""
        return np.full(2, self.finger_travel * (1.0 - float(np.clip(closure, 0.0, 1.0))))

    def proprio(self, q: np.ndarray, closure: float) -> np.ndarray:
        """The policy's proprioception (P,) float32: joints (J,) rad, TCP position (3,) m, gripper
        closure 0..1, in STATE_NAMES order; the sim env and the policy node (from joint_states) both use it."""
        return np.array([*q, *self.fk(q)[0], closure], dtype=np.float32)

    def gripper_closure(self, finger_q: np.ndarray) -> float:
        """Measured closure 0 (open) .. 1 (closed) from the finger positions (2,) m."""
        return float(np.clip(1.0 - np.mean(finger_q) / self.finger_travel, 0.0, 1.0))

    def _set(self, q: np.ndarray) -> None:
        self._data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self._data)
        mujoco.mj_comPos(self.model, self._data)

    def _tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        quat = np.zeros(4)
        d = self._data
        pos, mat = (d.site_xpos[self.tcp_site], d.site_xmat[self.tcp_site]) if self.tcp_site >= 0 else \
            (d.xpos[self._tcp_body], d.xmat[self._tcp_body])
        mujoco.mju_mat2Quat(quat, mat)
        return pos + mat.reshape(3, 3) @ self._tcp_offset, quat

    def _tcp_jacobian(self, pos: np.ndarray) -> None:
        """The TCP's translational and rotational Jacobians (3, nv) into _jacp and _jacr, at pos."""
        if self.tcp_site >= 0 and not self._tcp_offset.any():
            mujoco.mj_jacSite(self.model, self._data, self._jacp, self._jacr, self.tcp_site)
        else:
            body = self.model.site_bodyid[self.tcp_site] if self.tcp_site >= 0 else self._tcp_body
            mujoco.mj_jac(self.model, self._data, self._jacp, self._jacr, pos, body)


def turn_towards(quat: np.ndarray, goal: np.ndarray, max_angle: float | None) -> np.ndarray:
    """The orientation (4,) wxyz that turns quat towards goal by at most max_angle rad (None: goal)."""
    if max_angle is None:
        return goal
    turn = np.zeros(3)
    mujoco.mju_subQuat(turn, goal, quat)  # quat * exp(turn) = goal: the turn in quat's frame
    angle = float(np.linalg.norm(turn))
    if angle <= max_angle:
        return goal
    out = quat.copy()
    mujoco.mju_quatIntegrate(out, turn, max_angle / angle)
    return out


def rotate_quat(quat: np.ndarray, rpy: np.ndarray) -> np.ndarray:
    """quat (4,) wxyz turned by rotations rpy (3,) rad about the fixed base x, y, z axes."""
    delta, out = np.zeros(4), np.zeros(4)
    mujoco.mju_euler2Quat(delta, np.asarray(rpy, dtype=float), "XYZ")  # upper case: extrinsic axes
    mujoco.mju_mulQuat(out, delta, quat)
    return out
