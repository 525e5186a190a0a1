"""One sample of every custom message and service of vla_rl_interfaces, with distinctive values,
shared by the test talker and listener so the listener can check every field survived the trip."""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import Pose
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vla_rl_interfaces.msg import (
    ActionChunk,
    ChunkRequest,
    EpisodeResult,
    EpisodeStart,
    PolicyUpdate,
    SuccessSignal,
    TaskState,
    Trajectory,
)

EPISODE = "ep-7f3a"


def header() -> Header:
    h = Header(frame_id="base_link")
    h.stamp.sec, h.stamp.nanosec = 1234, 5678
    return h


def image(value: int) -> Image:
    return Image(height=2, width=3, encoding="rgb8", step=9, data=bytes([value] * 18))


def pose(x: float) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = x, -x, 0.5
    p.orientation.w = 1.0
    return p


MESSAGES: dict[str, Any] = {
    "action_chunk": ActionChunk(
        header=header(), episode_id=EPISODE, request_id=2**40 + 3, policy_version=12, chunk_size=2,
        action_dim=4, action_mode=ActionChunk.ACTION_MODE_EE_DELTA,
        actions=[0.01, -0.02, 0.0, 1.0, 0.5, -0.25, 0.125, 0.0], token_ids=[31744, 32767, 32000, 32001] * 2,
        log_prob=-7.25, greedy=True,
    ),
    "chunk_request": ChunkRequest(header=header(), episode_id=EPISODE, request_id=99, step=17, greedy=False),
    "trajectory": Trajectory(
        episode_id=EPISODE, arm="/arm1", instruction="put the red cube on the plate", policy_version=12,
        temperature=1.25, chunk_size=2, action_dim=4, images=[image(1), image(200)], proprio_dim=3,
        proprio=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], token_ids=list(range(16)), log_probs=[-1.5, -2.5], steps=[0, 2],
    ),
    "trajectory_withheld": Trajectory(
        episode_id=EPISODE, arm="/arm1", instruction="put the red cube on the plate", policy_version=12,
        temperature=1.25, withheld=Trajectory.WITHHELD_JOINED_MIDWAY, chunk_size=2, action_dim=4,
    ),
    "episode_result": EpisodeResult(
        header=header(), episode_id=EPISODE, arm="/arm1", group_id="g-42", group_size=8, task="pick_place", seed=-17,
        instruction="put the red cube on the plate", success=True, reward=1.0, steps=57, policy_version=12,
        evaluation=False, end_reason=EpisodeResult.END_SUCCESS,
    ),
    "episode_start": EpisodeStart(
        header=header(), episode_id=EPISODE, arm="/arm1", task="pick_place", seed=2**40, group_id="g-42",
        group_size=8, instruction="put the red cube on the plate", evaluation=False, max_steps=120,
    ),
    "success_signal": SuccessSignal(header=header(), episode_id=EPISODE, success=True, confidence=0.75,
                                    source="classifier"),
    "policy_update": PolicyUpdate(header=header(), version=13, checkpoint_dir="/tmp/ckpt/v13",
                                  digest="ab" * 32),
    "task_state": TaskState(
        header=header(), episode_id=EPISODE, task="stack", seed=5, step=3, object_names=["red_cube", "plate"],
        object_poses=[pose(0.1), pose(0.2)], ee_pose=pose(0.3), gripper=0.5, values=[0.02],
        value_names=["drawer_opening"],
    ),
}


def same(a: Any, b: Any) -> bool:
    """Field-by-field equality that treats array.array and list alike (rosidl returns arrays)."""
    if hasattr(a, "get_fields_and_field_types"):
        return type(a) is type(b) and all(
            same(getattr(a, f), getattr(b, f)) for f in a.get_fields_and_field_types()
        )
    if isinstance(a, (list, tuple)) or hasattr(a, "tolist"):
        a, b = list(a), list(b)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    return a == b
