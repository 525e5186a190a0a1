"""The core simulation environment (no ROS): reset to a task's seeded initial state, step with an
action, render the cameras, report privileged task state and success.

One `SimEnv` owns its MjModel, MjData and renderer, so several run side by side in one process.
Physics runs at 250 Hz under a 10 Hz control loop; each control step turns the action into an arm
joint target (IK for end-effector deltas), limits it to the joint and velocity limits, and feeds the
position servos a straight joint-space line across the substeps (`ArmModel.trajectory`), the same
line the executor node sends a real arm's joint_trajectory controller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from vla_rl_ros.control.kinematics import ARM_JOINTS, FINGER_JOINTS, ArmModel, gripper_command
from vla_rl_ros.sim.scene import (
    DRAWER_OPENING,
    FIXTURES,
    OBJECT_SLOTS,
    PALETTE,
    SceneIds,
    park_position,
    scene_path,
)
from vla_rl_ros.sim.tasks import TASKS, get_task
from vla_rl_ros.sim.tasks.base import Layout, TaskSpec, TaskState
from vla_rl_ros.sim.tasks.hold import HoldFilter

ACTION_MODES = ("ee_delta", "joint_position")
EE_DIMS = (4, 7)  # ee_delta: [dx, dy, dz, g] or [dx, dy, dz, droll, dpitch, dyaw, g]
STATE_NAMES: tuple[str, ...] = (*ARM_JOINTS, "ee_x", "ee_y", "ee_z", "gripper")  # P = 11
JOINT_STATE_NAMES: tuple[str, ...] = (*ARM_JOINTS, *FINGER_JOINTS)  # sensor_msgs/JointState order
CAMERAS = ("front", "wrist")


def action_names(action_mode: str = "ee_delta", action_dim: int | None = None) -> tuple[str, ...]:
    """Names of the action vector's entries, for dataset metadata."""
    if action_mode == "joint_position":
        return (*ARM_JOINTS, "gripper")
    if action_mode == "ee_delta":
        if (action_dim or 4) == 4:
            return ("dx", "dy", "dz", "gripper")
        if action_dim == 7:
            return ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
    raise ValueError(f"unknown action mode {action_mode!r} with action_dim {action_dim}; use 'ee_delta' "
                     f"(action_dim 4 or 7) or 'joint_position' (action_dim 8)")


@dataclass(frozen=True)
class EnvConfig:
    """Control timing, action bounds and the workspace box."""

    control_dt: float = field(default=0.1, metadata={"help": "s per control step (10 Hz, as OpenVLA's "
                                                             "LIBERO/BridgeData setups act at 5-20 Hz)"})
    interpolation_points: int = field(default=5, metadata={"help": "servo set-points per control step "
                                                                    "(the physics substeps are split evenly)"})
    max_translation: float = field(default=0.05, metadata={"help": "per-axis bound on dx, dy, dz (m/step)"})
    max_rotation: float = field(default=0.25, metadata={"help": "per-axis bound on droll, dpitch, dyaw "
                                                                "(rad/step)"})
    workspace_low: tuple[float, float, float] = field(default=(0.2, -0.4, 0.015), metadata={
        "help": "lower corner (m) of the box the TCP target is clipped to; z keeps the fingertips "
                "(9 mm below the TCP) off the table"})
    workspace_high: tuple[float, float, float] = field(default=(0.8, 0.4, 0.6), metadata={
        "help": "upper corner (m) of the TCP target box"})
    settle_time: float = field(default=0.2, metadata={"help": "s of physics after placing objects at reset, "
                                                              "so they rest before the first image"})
    binary_gripper: bool = field(default=True, metadata={"help": "the gripper action closes fully above 0.5 and "
                                                                 "opens below (control.kinematics.gripper_command)"})

    def __post_init__(self) -> None:
        if self.control_dt <= 0 or self.interpolation_points < 1:
            raise ValueError(f"control_dt={self.control_dt} must be > 0 and interpolation_points="
                             f"{self.interpolation_points} >= 1")
        if np.any(np.asarray(self.workspace_low) >= np.asarray(self.workspace_high)):
            raise ValueError(f"workspace_low {self.workspace_low} must be below workspace_high "
                             f"{self.workspace_high} on every axis")


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera -> (H, W, 3) uint8
    state: np.ndarray  # (P,) float32, named by STATE_NAMES
    instruction: str


@dataclass
class StepResult:
    observation: Observation
    success: bool  # the task's predicate holds now
    done: bool  # held for hold_steps consecutive steps, or max_steps reached
    info: dict = field(default_factory=dict)  # step, success_streak, episode_success, end_reason, applied_action


class SimEnv:
    """A tabletop task environment. Not thread-safe; use one per thread or process."""

    def __init__(self, task: str, *, image_size: int = 64, cameras: tuple[str, ...] = CAMERAS,
                 action_mode: str = "ee_delta", action_dim: int | None = None,
                 config: EnvConfig | None = None) -> None:
        self.task: TaskSpec = get_task(task)
        self.action_mode = action_mode
        self.action_names = action_names(action_mode, action_dim)
        self.action_dim = len(self.action_names)
        self.config = config or EnvConfig()
        if image_size < 8:
            raise ValueError(f"image_size={image_size} is too small; use e.g. 64, 128 or 224")
        self.model = mujoco.MjModel.from_xml_path(str(scene_path()))
        self.data = mujoco.MjData(self.model)
        self.kinematics = ArmModel(self.model)
        self.ids = SceneIds.lookup(self.model)
        unknown = [c for c in cameras if c not in self.ids.cameras]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the scene has {sorted(self.ids.cameras)}")
        self.cameras = tuple(cameras)
        self.observed_cameras = self.cameras  # the ones observations render: set_observed_cameras
        self.image_size = image_size
        self._renderer = make_renderer(self.model, image_size) if cameras else None
        self._substeps = round(self.config.control_dt / self.model.opt.timestep)
        if self._substeps % self.config.interpolation_points:
            raise ValueError(f"{self._substeps} physics substeps per control step do not split into "
                             f"{self.config.interpolation_points} interpolation points")
        self._low = np.asarray(self.config.workspace_low)
        self._high = np.asarray(self.config.workspace_high)
        self._home_key = self.model.key("home").id
        self._default_rgba = self.model.geom_rgba.copy()
        self.layout: Layout | None = None
        self.seed: int | None = None
        self._steps = 0
        self._hold = HoldFilter(self.task.hold_steps)
        self._q_cmd = self.kinematics.home.copy()
        self._held_quat = np.array([1.0, 0.0, 0.0, 0.0])

    # ---------------------------------------------------------------- episode
    def reset(self, seed: int, *, task: str | None = None, named: int = 0) -> Observation:
        """Restore the seed's initial state (of `task`, switching tasks if given); deterministic:
        the same task and seed give the same state and, for the same actions, the same rollout.
        `named`: TaskSpec.sample's (the same scene with a distractor named instead)."""
        spec = get_task(task) if task is not None else self.task
        layout = spec.sample(seed, named=named)  # validates the seed
        self.task, self.layout, self.seed = spec, layout, seed
        m, d = self.model, self.data
        mujoco.mj_resetDataKeyframe(m, d, self._home_key)
        m.geom_rgba[:] = self._default_rgba
        placed = {p.body: p for p in layout.placements}
        for k, slot in enumerate((*OBJECT_SLOTS, *FIXTURES)):
            p = placed.get(slot)
            pos, yaw = (np.array([p.x, p.y, 0.0]), p.yaw) if p else (park_position(k), 0.0)
            if slot in FIXTURES:
                m.body_pos[self.ids.fixture_body[slot]] = pos
                continue
            adr = self.ids.object_qpos[slot]
            d.qpos[adr:adr + 3] = pos + np.array([0.0, 0.0, self._rest_height(slot)])
            d.qpos[adr + 3:adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]  # wxyz about z
            if p and p.colour:
                m.geom_rgba[self.ids.object_geom[slot]] = PALETTE[p.colour]
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, round(self.config.settle_time / m.opt.timestep))
        mujoco.mj_kinematics(m, d)  # see step(): positions of the state that is observed
        d.time = 0.0  # episode time starts after settling
        self._q_cmd = self.kinematics.home.copy()
        self._held_quat = self.kinematics.fk(self.kinematics.home)[1]  # gripper pointing down
        self._steps = 0
        self._hold.reset(self.task.hold_steps)
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one control step's action (A,) in the env's action mode; out-of-range values are
        clipped (info["applied_action"] has what was applied), malformed ones raise ValueError."""
        if self.layout is None:
            raise RuntimeError("call reset(seed) before step()")
        action = np.asarray(action, dtype=float)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {self.action_dim} finite numbers {self.action_names} for "
                             f"action mode {self.action_mode!r}; got shape {action.shape}: {action}")
        q_now = self.data.qpos[self.kinematics.qpos_adr].copy()
        applied = action.copy()
        applied[-1] = gripper_command(action[-1], self.config.binary_gripper)
        if self.action_mode == "joint_position":
            q_target = action[:-1]
        else:
            applied[:3] = np.clip(action[:3], -self.config.max_translation, self.config.max_translation)
            rotation = None
            if self.action_dim == 7:
                applied[3:6] = rotation = np.clip(action[3:6], -self.config.max_rotation, self.config.max_rotation)
            q_target = self.kinematics.ee_delta_target(q_now, applied[:3], rotation=rotation, hold_quat=self._held_quat,
                                                       box=(self._low, self._high))
        q_target = self.kinematics.clamp(self._q_cmd, q_target, self.config.control_dt)
        if self.action_mode == "joint_position":
            applied[:-1] = q_target
        points = self.config.interpolation_points
        path = self.kinematics.trajectory(self._q_cmd, q_target, self.config.control_dt, points=points).positions
        self.data.ctrl[self.kinematics.finger_actuator_ids] = self.kinematics.gripper_targets(applied[-1])
        for q in path:  # (points, J)
            self.data.ctrl[self.kinematics.actuator_ids] = q
            mujoco.mj_step(self.model, self.data, self._substeps // points)
        # mj_step leaves body and site positions one integration behind qpos; recompute them so the
        # TCP in the state, the task state and the rendered bodies describe the same instant as the
        # joint angles, and equal what the policy node computes by FK from a JointState. The camera and
        # light poses (mj_camlight) stay one physics substep (4 ms) behind: recomputing them moves 5% of
        # the wrist camera's pixels at object edges, and the shipped policies were trained and measured
        # on these frames.
        mujoco.mj_kinematics(self.model, self.data)
        self._q_cmd = q_target
        self._steps += 1
        success = self.task.success(self.task_state())
        episode_success = self._hold.update(success)  # the success detector node's filter
        timeout = self._steps >= self.task.max_steps
        end_reason = "success" if episode_success else "timeout" if timeout else ""
        info = {"step": self._steps, "success_streak": self._hold.count, "episode_success": episode_success,
                "end_reason": end_reason, "applied_action": applied.astype(np.float32)}
        return StepResult(self._observe(), success, episode_success or timeout, info)

    def set_observed_cameras(self, cameras: tuple[str, ...] | list[str]) -> None:
        """Render only these of the env's cameras into the next observations: a 64 px frame costs about
        1 ms, as much as the physics of a control step, so a camera nobody reads is worth skipping."""
        unknown = [c for c in cameras if c not in self.cameras]
        if unknown:
            raise ValueError(f"camera(s) {unknown} are not among this env's cameras {list(self.cameras)}")
        self.observed_cameras = tuple(cameras)

    def close(self) -> None:
        """Free the renderer's GL context (also done by garbage collection)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- observations
    @property
    def steps(self) -> int:
        return self._steps

    def joint_state(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(names, positions (9,) rad or m, velocities (9,)) of the arm joints then the fingers."""
        k = self.kinematics
        qpos = np.concatenate([self.data.qpos[k.qpos_adr], self.data.qpos[k.finger_qpos_adr]])
        dofs = np.concatenate([k.dof_adr, k.finger_dof_adr])
        return JOINT_STATE_NAMES, qpos, self.data.qvel[dofs].copy()

    @property
    def instruction(self) -> str:
        return self.layout.instruction if self.layout else ""

    def task_state(self) -> TaskState:
        """Privileged state: the layout's objects (role order), TCP pose and measured gripper."""
        if self.layout is None:
            raise RuntimeError("call reset(seed) before task_state()")
        d = self.data
        bodies = [self._body_id(p.body) for p in self.layout.placements]
        ee_pos, ee_quat = self._tcp_pose()
        values = {}
        if any(p.body == "cabinet" for p in self.layout.placements):
            values[DRAWER_OPENING] = float(d.qpos[self.ids.drawer_qpos])
        return TaskState(
            object_names=tuple(p.name for p in self.layout.placements),
            object_pos=d.xpos[bodies].copy(),
            object_quat=d.xquat[bodies].copy(),
            ee_pos=ee_pos,
            ee_quat=ee_quat,
            gripper=self.kinematics.gripper_closure(d.qpos[self.kinematics.finger_qpos_adr]),
            values=values,
        )

    def render(self, camera: str) -> np.ndarray:
        """(H, W, 3) uint8 image from a camera of the scene."""
        if self._renderer is None:
            raise RuntimeError("this env was made with cameras=(); pass the cameras to render")
        self._renderer.update_scene(self.data, self.ids.cameras[camera])
        return self._renderer.render()

    def from_ee_action(self, ee_action: np.ndarray) -> np.ndarray:
        """Express a 4-D [dx, dy, dz, gripper] action (the experts' form) in this env's action mode."""
        ee_action = np.asarray(ee_action, dtype=np.float32)
        if self.action_mode == "ee_delta":
            if self.action_dim == 4:
                return ee_action
            return np.array([*ee_action[:3], 0.0, 0.0, 0.0, ee_action[3]], dtype=np.float32)
        delta = np.clip(ee_action[:3], -self.config.max_translation, self.config.max_translation)
        q = self.kinematics.ee_delta_target(self.data.qpos[self.kinematics.qpos_adr], delta, hold_quat=self._held_quat,
                                            box=(self._low, self._high))
        return np.array([*q, ee_action[3]], dtype=np.float32)

    def _observe(self) -> Observation:
        images = {cam: self.render(cam) for cam in self.observed_cameras}
        k = self.kinematics
        state = k.proprio(self.data.qpos[k.qpos_adr], k.gripper_closure(self.data.qpos[k.finger_qpos_adr]))
        return Observation(images=images, state=state, instruction=self.instruction)

    def _tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.kinematics.tcp_site])
        return self.data.site_xpos[self.kinematics.tcp_site].copy(), quat

    def _body_id(self, body: str) -> int:
        return self.ids.object_body[body] if body in self.ids.object_body else self.ids.fixture_body[body]

    def _rest_height(self, slot: str) -> float:
        """Centre height of an object resting on the table (its geom's half height)."""
        geom = self.ids.object_geom[slot]
        size = self.model.geom_size[geom]
        return float(size[2] if self.model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_BOX else size[1])


def make_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """An offscreen renderer, or a RuntimeError that says how to get an OpenGL context."""
    try:
        return mujoco.Renderer(model, size, size)
    except mujoco.FatalError as exc:
        backend = getattr(mujoco, "GLContext", type(None)).__module__  # e.g. mujoco.glfw, mujoco.egl
        raise RuntimeError(f"no OpenGL context for rendering (MuJoCo picked {backend} when it was first "
                           f"imported); set MUJOCO_GL=egl (or osmesa) before anything imports mujoco, "
                           f"or make the env with cameras=()") from exc


def make_env(task: str, *, image_size: int = 64, cameras: tuple[str, ...] = CAMERAS,
             action_mode: str = "ee_delta", action_dim: int | None = None,
             config: EnvConfig | None = None) -> SimEnv:
    """A SimEnv for `task` (a key of TASKS); call reset(seed) next."""
    if action_mode not in ACTION_MODES:
        raise ValueError(f"unknown action_mode {action_mode!r}; use one of {ACTION_MODES}")
    if action_mode == "ee_delta" and action_dim not in (None, *EE_DIMS):
        raise ValueError(f"ee_delta action_dim must be 4 or 7, got {action_dim}")
    return SimEnv(task, image_size=image_size, cameras=tuple(cameras), action_mode=action_mode,
                  action_dim=action_dim, config=config)


__all__ = ["ACTION_MODES", "CAMERAS", "JOINT_STATE_NAMES", "STATE_NAMES", "TASKS", "EnvConfig", "Observation", "SimEnv",
           "StepResult", "action_names", "make_env"]
