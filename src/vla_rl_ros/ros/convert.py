"""Conversions between ROS messages and the core's plain types, in one place for every node."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from cv_bridge import CvBridge
from geometry_msgs.msg import Pose
from rclpy.time import Time as RclTime
from sensor_msgs.msg import Image, JointState
from vla_rl_interfaces.msg import ActionChunk as ActionChunkMsg
from vla_rl_interfaces.msg import EpisodeResult as EpisodeResultMsg
from vla_rl_interfaces.msg import TaskState as TaskStateMsg
from vla_rl_interfaces.msg import Trajectory as TrajectoryMsg

from vla_rl_ros.control.chunks import ChunkIn
from vla_rl_ros.control.kinematics import ArmModel
from vla_rl_ros.control.robot import RobotConfig
from vla_rl_ros.rl.records import ResultRecord, TrajectoryRecord
from vla_rl_ros.sim.tasks import TaskState

_BRIDGE = CvBridge()


class MessageError(ValueError):
    """A message whose content cannot be used (wrong encoding, sizes that do not add up, NaN...)."""


def image_to_msg(rgb: np.ndarray, stamp: Time, frame_id: str = "") -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    msg = _BRIDGE.cv2_to_imgmsg(np.ascontiguousarray(rgb), encoding="rgb8")
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> (H, W, 3) uint8 RGB; MessageError for anything else."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise MessageError(f"image encoding {msg.encoding!r} is not supported (rgb8 or bgr8)")
    if msg.height == 0 or msg.width == 0 or len(msg.data) < msg.step * msg.height or msg.step < 3 * msg.width:
        raise MessageError(f"image {msg.width}x{msg.height} step {msg.step} has {len(msg.data)} bytes")
    try:
        rgb = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception as exc:  # cv_bridge raises its own and numpy errors for malformed buffers
        raise MessageError(f"malformed image: {exc}") from exc
    return np.ascontiguousarray(rgb)


def proprio_from_joint_state(robot: RobotConfig, kinematics: ArmModel, msg: JointState) -> np.ndarray:
    """The policy's proprioception (P,) from a JointState: arm joints, end-effector position, gripper. The
    joints are the robot config's (the driver's names, the model's joints by order), the gripper its
    `state_joints` (a real arm's driver names them as it likes: panda_joint1, not the model's joint1)."""
    names = list(msg.name)
    if len(msg.position) != len(names):
        raise MessageError(f"joint_states has {len(names)} names but {len(msg.position)} positions")
    try:
        q = np.array([msg.position[names.index(n)] for n in robot.joints])
        fingers = np.array([msg.position[names.index(n)] for n in robot.gripper.state_joints])
    except ValueError:
        wanted = [*robot.joints, *robot.gripper.state_joints]
        raise MessageError(f"joint_states names {names} lack some of {wanted} (robot config {robot.name})") from None
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(fingers))):
        raise MessageError("joint_states holds non-finite positions")
    return kinematics.proprio(q, robot.gripper.closure(fingers))


def _pose(pos: np.ndarray, quat: np.ndarray) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in pos)
    p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z = (float(v) for v in quat)
    return p


def _pos_quat(p: Pose) -> tuple[list[float], list[float]]:
    o = p.orientation
    return [p.position.x, p.position.y, p.position.z], [o.w, o.x, o.y, o.z]


def task_state_to_msg(state: TaskState, msg: TaskStateMsg) -> TaskStateMsg:
    """Fill `msg`'s state fields from the core TaskState (header and episode fields are the caller's)."""
    msg.object_names = list(state.object_names)
    msg.object_poses = [_pose(p, q) for p, q in zip(state.object_pos, state.object_quat, strict=True)]
    msg.ee_pose = _pose(state.ee_pos, state.ee_quat)
    msg.gripper = float(state.gripper)
    msg.value_names = list(state.values)
    msg.values = [float(v) for v in state.values.values()]
    return msg


def task_state_from_msg(msg: TaskStateMsg) -> TaskState:
    """The core TaskState a TaskState message describes; MessageError if it is inconsistent."""
    if len(msg.object_names) != len(msg.object_poses) or len(msg.value_names) != len(msg.values):
        raise MessageError(f"task_state has {len(msg.object_names)} names for {len(msg.object_poses)} poses and "
                           f"{len(msg.value_names)} value names for {len(msg.values)} values")
    poses = [_pos_quat(p) for p in msg.object_poses]
    ee_pos, ee_quat = _pos_quat(msg.ee_pose)
    state = TaskState(
        object_names=tuple(msg.object_names),
        object_pos=np.array([p for p, _ in poses], dtype=np.float64).reshape(-1, 3),
        object_quat=np.array([q for _, q in poses], dtype=np.float64).reshape(-1, 4),
        ee_pos=np.array(ee_pos), ee_quat=np.array(ee_quat), gripper=float(msg.gripper),
        values=dict(zip(msg.value_names, (float(v) for v in msg.values), strict=True)),
    )
    numbers = np.concatenate([state.object_pos.ravel(), state.object_quat.ravel(), state.ee_pos, state.ee_quat,
                              [state.gripper], list(state.values.values())])
    if not np.all(np.isfinite(numbers)):
        raise MessageError("task_state holds non-finite numbers")
    return state


def trajectory_from_msg(msg: TrajectoryMsg) -> TrajectoryRecord:
    """A Trajectory message as the learner's record; MessageError if its sizes do not add up. A withheld
    one (`withheld` says why, no chunks) becomes a record without chunks: the member has no trajectory."""
    if msg.withheld:
        if any(len(a) for a in (msg.images, msg.proprio, msg.token_ids, msg.log_probs, msg.steps)):
            raise MessageError(f"trajectory {msg.episode_id!r} is withheld ({msg.withheld!r}) but carries chunks")
        try:
            return TrajectoryRecord.withheld_notice(msg.episode_id, msg.arm, msg.instruction, msg.policy_version,
                                                    float(msg.temperature), msg.withheld)
        except ValueError as exc:
            raise MessageError(str(exc)) from exc
    n, tokens = len(msg.images), msg.chunk_size * msg.action_dim
    if n == 0 or tokens == 0:
        raise MessageError(f"trajectory {msg.episode_id!r} has {n} images and chunk {msg.chunk_size}x{msg.action_dim}")
    sizes = {"proprio": (len(msg.proprio), n * msg.proprio_dim), "token_ids": (len(msg.token_ids), n * tokens),
             "log_probs": (len(msg.log_probs), n), "steps": (len(msg.steps), n)}
    wrong = {k: v for k, v in sizes.items() if v[0] != v[1]}
    if wrong:
        raise MessageError(f"trajectory {msg.episode_id!r}: sizes (got, expected) {wrong} for {n} chunks")
    images = [image_from_msg(m) for m in msg.images]
    if len({i.shape for i in images}) != 1:
        raise MessageError(f"trajectory {msg.episode_id!r}: images differ in size")
    state = np.asarray(msg.proprio, np.float32).reshape(n, msg.proprio_dim)
    log_probs = np.asarray(msg.log_probs, np.float32)
    if not (np.all(np.isfinite(state)) and np.all(np.isfinite(log_probs))):
        raise MessageError(f"trajectory {msg.episode_id!r} holds non-finite numbers")
    try:
        return TrajectoryRecord(
            episode_id=msg.episode_id, arm=msg.arm, instruction=msg.instruction, policy_version=msg.policy_version,
            temperature=float(msg.temperature), images=np.stack(images), state=state,
            token_ids=np.asarray(msg.token_ids, np.int64).reshape(n, tokens), log_probs=log_probs,
            steps=np.asarray(msg.steps, np.int64))
    except ValueError as exc:
        raise MessageError(str(exc)) from exc


def result_from_msg(msg: EpisodeResultMsg) -> ResultRecord:
    """An EpisodeResult message as the learner's record; MessageError for an unknown end reason, a
    training result without its group size or a reward that is not finite."""
    try:
        return ResultRecord(
            episode_id=msg.episode_id, arm=msg.arm, group_id=msg.group_id, task=msg.task, seed=msg.seed,
            success=msg.success, reward=float(msg.reward), steps=msg.steps, policy_version=msg.policy_version,
            evaluation=msg.evaluation, end_reason=msg.end_reason, group_size=msg.group_size)
    except ValueError as exc:
        raise MessageError(str(exc)) from exc


def stamp_ns(stamp: Time) -> int:
    """A header stamp in integer nanoseconds (exact, unlike float seconds)."""
    return RclTime.from_msg(stamp).nanoseconds


def to_stamp(ns: int) -> Time:
    """Integer nanoseconds as a header stamp."""
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def chunk_from_msg(msg: ActionChunkMsg) -> ChunkIn:
    """An ActionChunk as the executor core's ChunkIn (validated by control.chunks.validate_chunk)."""
    return ChunkIn(episode_id=msg.episode_id, request_id=msg.request_id, policy_version=msg.policy_version,
                   chunk_size=msg.chunk_size, action_dim=msg.action_dim, action_mode=msg.action_mode,
                   actions=np.asarray(msg.actions, dtype=np.float64), stamp_ns=stamp_ns(msg.header.stamp))
