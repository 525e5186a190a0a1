"""A robot config ("bring your own arm"): everything the executor needs to know about one arm.

Loaded from YAML (config/robots/<robot>.yaml). The same file describes the simulated Panda and a
real arm driven by ros2_control; only the model, the joint names, the command topic and the limits
differ. Kinematics come from the model file (MuJoCo loads MJCF and URDF) through `ArmModel`, so the
executor runs the same IK as the sim core.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np
import yaml

from vla_rl_ros.control.kinematics import gripper_command
from vla_rl_ros.paths import package_share

ACTION_MODES = ("ee_delta", "joint_position")
PACKAGE_URL = "package://"


@dataclass(frozen=True)
class GripperConfig:
    """A parallel gripper commanded as one joint (the action's last entry, 0 open .. 1 closed)."""

    joint: str = field(metadata={"help": "joint in the command and in joint_states (e.g. finger_joint1)"})
    open: float = field(metadata={"help": "joint position when fully open (m or rad)"})
    closed: float = field(metadata={"help": "joint position when fully closed (m or rad)"})
    in_trajectory: bool = field(default=True, metadata={
        "help": "append the gripper joint to every JointTrajectory; false when the arm's controller does not "
                "own the gripper (a JTC refuses goals naming joints it does not control), e.g. franka_gripper's "
                "action server (the executor does not drive such a gripper yet)"})
    binary: bool = field(default=True, metadata={
        "help": "close fully for an action above 0.5 and open below, as the sim does "
                "(control.kinematics.gripper_command); false: the action is a closure 0..1"})
    measured_joints: tuple[str, ...] = field(default=(), metadata={
        "help": "joints in joint_states whose mean position is the gripper's measured opening, for fingers that "
                "move on their own (the sim's two); empty: `joint` alone"})

    def __post_init__(self) -> None:
        if self.open == self.closed or not all(map(math.isfinite, (self.open, self.closed))):
            raise ValueError(f"gripper open={self.open} and closed={self.closed} must be finite and differ; "
                             f"give the joint positions of the open and the closed gripper")

    @property
    def state_joints(self) -> tuple[str, ...]:
        """The joints the measured closure is read from (`closure`)."""
        return self.measured_joints or (self.joint,)

    def position(self, closure: float) -> float:
        """Joint position for a gripper action 0 (open) .. 1 (closed); never beyond either end."""
        return self.open + gripper_command(closure, self.binary) * (self.closed - self.open)

    def closure(self, positions: np.ndarray) -> float:
        """The measured closure 0 (open) .. 1 (closed) of the `state_joints` positions, clipped: the
        policy's gripper state. As `ArmModel.gripper_closure` for the sim's fingers (open 0.04, closed 0)."""
        return float(np.clip(1.0 - (np.mean(positions) - self.closed) / (self.open - self.closed), 0.0, 1.0))


@dataclass(frozen=True)
class WorkspaceConfig:
    """Axis-aligned box the tool centre point must stay in, in the model's base frame."""

    low: tuple[float, float, float] = field(metadata={"help": "lower corner x, y, z (m)"})
    high: tuple[float, float, float] = field(metadata={"help": "upper corner x, y, z (m)"})
    tolerance: float = field(default=0.01, metadata={
        "help": "m a command's TCP may lie outside the box: IK lands a few mm off a target on a face"})

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, dtype=float), np.asarray(self.high, dtype=float)
        if low.shape != (3,) or high.shape != (3,) or not np.all(np.isfinite([*low, *high])) or np.any(low >= high):
            raise ValueError(f"workspace low={self.low} must be below high={self.high} on x, y and z (m)")
        if not 0 <= self.tolerance < 0.1:
            raise ValueError(f"workspace tolerance={self.tolerance} m must be in [0, 0.1) (try 0.01)")

    def distance(self, point: np.ndarray) -> float:
        """How far (m) point (3,) lies outside the box; 0 inside."""
        return float(np.linalg.norm(point - np.clip(point, self.low, self.high)))


@dataclass(frozen=True)
class RobotConfig:
    """One arm: model, names, command topic, limits, home pose, workspace, action mode, rate."""

    name: str = field(metadata={"help": "robot name, for logs and diagnostics"})
    model: str = field(metadata={"help": "MJCF or URDF path: absolute, relative to this YAML file, or "
                                         "package://<pkg>/<path>"})
    joints: tuple[str, ...] = field(metadata={"help": "arm joint names as in joint_states and the controller, "
                                                      "base to tip; matched to the model's arm joints by order"})
    gripper: GripperConfig = field(metadata={"help": "the gripper joint and its open/closed positions"})
    workspace: WorkspaceConfig = field(metadata={"help": "box the TCP is kept in (m, base frame)"})
    velocity_limits: tuple[float, ...] = field(metadata={"help": "per-joint speed limit (rad/s)"})
    max_joint_step: float = field(metadata={"help": "cap on any joint's motion per command (rad), on top "
                                                    "of velocity x period"})
    command_topic: str = field(default="joint_trajectory", metadata={
        "help": "JointTrajectory topic of the arm's controller (ros2_control: "
                "<controller>/joint_trajectory)"})
    joint_lower: tuple[float, ...] = field(default=(), metadata={
        "help": "per-joint lower limit (rad); empty: the model's; tighter than the model's for safety"})
    joint_upper: tuple[float, ...] = field(default=(), metadata={"help": "per-joint upper limit (rad); empty: the "
                                                                         "model's"})
    home: tuple[float, ...] = field(default=(), metadata={"help": "home joint positions (rad); empty: the "
                                                                  "model's home keyframe"})
    action_mode: str = field(default="ee_delta", metadata={"help": f"one of {ACTION_MODES}"})
    control_rate_hz: float = field(default=10.0, metadata={"help": "commands per second (Hz)"})
    max_translation: float = field(default=0.05, metadata={"help": "per-axis bound on an ee delta (m/step)"})
    max_rotation: float = field(default=0.25, metadata={"help": "per-axis bound on an ee rotation delta "
                                                                "(rad/step)"})
    model_joints: tuple[str, ...] = field(default=(), metadata={
        "help": "the model's arm joint names, base to tip, where they differ from `joints`; empty: `joints` if the "
                "model has them (a URDF of the arm), else the Panda model's joint1..joint7"})
    tcp: str = field(default="tcp", metadata={"help": "the model's site or body (a URDF link) at the tool centre "
                                                      "point, or from which tcp_offset leads to it"})
    tcp_offset: tuple[float, ...] = field(default=(), metadata={
        "help": "m from the tcp site or body to the tool centre point, in its frame (x, y, z); empty: none"})
    source: str = field(default="", metadata={"help": "the YAML file this was loaded from (set by load)"})

    def __post_init__(self) -> None:
        n = len(self.joints)
        if n == 0 or len(set(self.joints)) != n or self.gripper.joint in self.joints:
            raise ValueError(f"joints={self.joints} must be distinct, non-empty and not include the gripper joint "
                             f"{self.gripper.joint!r}")
        for key in ("velocity_limits", "joint_lower", "joint_upper", "home"):
            values = getattr(self, key)
            if values and (len(values) != n or not all(map(math.isfinite, values))):
                raise ValueError(f"{key}={values} must be {n} finite numbers, one per joint {self.joints}")
        if len(self.velocity_limits) != n or min(self.velocity_limits) <= 0:
            raise ValueError(f"velocity_limits={self.velocity_limits} must be {n} positive rad/s")
        if self.joint_lower and self.joint_upper and np.any(np.asarray(self.joint_lower) >= self.joint_upper):
            raise ValueError(f"joint_lower={self.joint_lower} must be below joint_upper={self.joint_upper}")
        if not 0 < self.max_joint_step <= math.pi:
            raise ValueError(f"max_joint_step={self.max_joint_step} rad must be in (0, pi] (try 0.1)")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode={self.action_mode!r} must be one of {ACTION_MODES}")
        if not 0 < self.control_rate_hz <= 1000:
            raise ValueError(f"control_rate_hz={self.control_rate_hz} must be in (0, 1000] Hz (try 10)")
        if not (0 < self.max_translation <= 0.5 and 0 < self.max_rotation <= math.pi):
            raise ValueError(f"max_translation={self.max_translation} m must be in (0, 0.5] and max_rotation="
                             f"{self.max_rotation} rad in (0, pi]")
        if not self.command_topic:
            raise ValueError("command_topic must name the controller's JointTrajectory topic")
        if self.model_joints and len(self.model_joints) != n:
            raise ValueError(f"model_joints={self.model_joints} must name {n} joints, one per joint {self.joints}")
        if self.tcp_offset and (len(self.tcp_offset) != 3 or not all(map(math.isfinite, self.tcp_offset))):
            raise ValueError(f"tcp_offset={self.tcp_offset} must be 3 finite numbers (m) or empty")

    @property
    def period(self) -> float:
        """s per control step."""
        return 1.0 / self.control_rate_hz

    @property
    def action_dims(self) -> tuple[int, ...]:
        """Valid action dims A for the mode: ee_delta 4 or 7, joint_position one per joint + gripper."""
        return (4, 7) if self.action_mode == "ee_delta" else (len(self.joints) + 1,)

    @property
    def command_joints(self) -> tuple[str, ...]:
        """Joint names of a command: the arm joints, then the gripper joint if the controller owns it."""
        return (*self.joints, self.gripper.joint) if self.gripper.in_trajectory else self.joints

    def model_path(self) -> Path:
        """The model file, resolved (package:// URLs, paths relative to the config file)."""
        base = Path(self.source).parent if self.source else Path.cwd()
        path = resolve(self.model, base).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"robot {self.name!r}: no model file at {path} (model: {self.model!r})")
        return path

    @classmethod
    def load(cls, path: str | Path) -> RobotConfig:
        """Read a robot config YAML; unknown keys and bad values raise a ValueError naming them."""
        path = resolve(str(path), Path.cwd())
        if not path.is_file():
            raise FileNotFoundError(f"no robot config at {path}; see config/robots/ for examples")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"robot config {path} must be a mapping of the RobotConfig fields")
        try:
            return from_dict(cls, {**data, "source": str(path)})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"robot config {path}: {exc}") from exc


def resolve(location: str, base: Path) -> Path:
    """package://<pkg>/<rest> -> the package's share dir / rest; a relative path -> base / path."""
    if location.startswith(PACKAGE_URL):
        package, _, rest = location[len(PACKAGE_URL):].partition("/")
        return package_share(package) / rest
    path = Path(location).expanduser()
    return path if path.is_absolute() else base / path


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a (nested) config dataclass from a mapping, converting lists to tuples and refusing
    unknown keys by name (a typo in a safety limit must not be silently ignored)."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(names)}")
    values = {}
    for key, raw in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(raw, dict):
                raise ValueError(f"{key} must be a mapping of {sorted(f.name for f in dataclasses.fields(kind))}")
            values[key] = from_dict(kind, raw)
        elif get_origin(kind) is tuple:
            item = get_args(kind)[0]
            if not isinstance(raw, (list, tuple)):
                raise ValueError(f"{key}={raw!r} must be a list of {item.__name__}")
            values[key] = tuple(typed(f"{key}[{i}]", item, v) for i, v in enumerate(raw))
        else:
            values[key] = typed(key, kind, raw)
    return cls(**values)


def typed(key: str, kind: type, raw: Any) -> Any:
    """raw as a value of kind (bool, int, float or str), or a ValueError: YAML reads `"false"` as a
    string, which Python would take for true, and `0.05` quoted as a string a limit cannot compare."""
    number = isinstance(raw, (int, float)) and not isinstance(raw, bool)
    if kind is float and number:
        return float(raw)
    if (kind is bool and isinstance(raw, bool)) or (kind is int and number and isinstance(raw, int)) or \
            (kind is str and isinstance(raw, str)):
        return raw
    unquoted = " (true or false, unquoted)" if kind is bool else ""
    raise ValueError(f"{key}={raw!r} must be a {kind.__name__}{unquoted}")
