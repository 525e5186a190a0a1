"""What the learner receives, as plain dataclasses mirroring the ROS messages, and their files.

`TrajectoryRecord` mirrors vla_rl_interfaces/msg/Trajectory (from the policy node: what it saw and
sampled); `ResultRecord` mirrors msg/EpisodeResult (from the episode manager: how it ended). The
learner node converts messages to these; everything below it is ROS-free.

Shapes: N chunks in the episode, H W image, P proprioception, C chunk size, A action dim.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_rl_ros.data.atomic import tmp_path_for
from vla_rl_ros.data.episode import END_REASONS

# Episodes that ended for these reasons say nothing about the policy: never learn from them.
DISCARD_REASONS = ("abort", "lost_node", "estop", "error")
# Why the policy node withholds a training episode's trajectory (Trajectory.WITHHELD_*): it sends a record
# without chunks instead, so that the learner takes the member as having no trajectory and closes its
# group on the others rather than waiting for ever.
WITHHELD_TWO_VERSIONS = "two_versions"  # new weights came while its arm was silent
WITHHELD_GREEDY = "greedy"  # a chunk was the argmax: no temperature describes the trajectory
WITHHELD_JOINED_MIDWAY = "joined_midway"  # the node (re)started during the episode: its first chunks are not logged
WITHHELD_NO_CHUNKS = "no_chunks"  # the node served the episode no chunk
WITHHELD_REASONS = (WITHHELD_TWO_VERSIONS, WITHHELD_GREEDY, WITHHELD_JOINED_MIDWAY, WITHHELD_NO_CHUNKS)


@dataclass
class TrajectoryRecord:
    """What the policy saw and sampled in one episode (Trajectory.msg)."""

    episode_id: str
    arm: str
    instruction: str
    policy_version: int
    temperature: float  # every chunk was sampled from softmax(logits / temperature): the learner scores at it
    images: np.ndarray  # (N, H, W, 3) uint8, the image each chunk was computed from
    state: np.ndarray  # (N, P) float32 proprioception
    token_ids: np.ndarray  # (N, C*A) int64 sampled action tokens
    log_probs: np.ndarray  # (N,) float32 behaviour log-prob of each chunk (nats)
    steps: np.ndarray  # (N,) int64 control step at which each chunk started
    withheld: str = ""  # one of WITHHELD_REASONS: the policy node keeps this trajectory back, and N = 0

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.uint8)
        self.state = np.asarray(self.state, dtype=np.float32)
        self.token_ids = np.asarray(self.token_ids, dtype=np.int64)
        self.log_probs = np.asarray(self.log_probs, dtype=np.float32)
        self.steps = np.asarray(self.steps, dtype=np.int64)
        if self.withheld and self.withheld not in WITHHELD_REASONS:
            raise ValueError(f"episode {self.episode_id!r}: withheld={self.withheld!r}; expected one of "
                             f"{WITHHELD_REASONS} (Trajectory.WITHHELD_*) or none")
        n = self.images.shape[0] if self.images.ndim == 4 else -1
        if (n != 0 if self.withheld else n < 1) or self.images.shape[3] != 3:
            chunks = "N=0: a withheld trajectory carries no chunks" if self.withheld else "N>=1"
            raise ValueError(f"episode {self.episode_id!r}: images {self.images.shape} must be ({chunks}, H, W, 3)")
        checks = {"state": (self.state, 2), "token_ids": (self.token_ids, 2),
                  "log_probs": (self.log_probs, 1), "steps": (self.steps, 1)}
        for name, (array, ndim) in checks.items():
            if array.ndim != ndim or array.shape[0] != n:
                raise ValueError(f"episode {self.episode_id!r}: {name} {array.shape} must have {ndim} dims "
                                 f"and N={n} rows, one per chunk like images")
        if self.policy_version < 0:
            raise ValueError(f"episode {self.episode_id!r}: policy_version={self.policy_version} < 0")
        # 0 is a message's unset field (a sender that does not fill it): scoring at a guessed temperature
        # would bias every ratio of the update, so such a trajectory is refused, not defaulted.
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"episode {self.episode_id!r}: temperature={self.temperature}; a trajectory must "
                             "carry the temperature its chunks were sampled at (> 0, Trajectory.temperature)")

    @classmethod
    def withheld_notice(cls, episode_id: str, arm: str, instruction: str, policy_version: int, temperature: float,
                        reason: str) -> TrajectoryRecord:
        """The record of a Trajectory that carries no chunks, only why it is withheld."""
        return cls(episode_id=episode_id, arm=arm, instruction=instruction, policy_version=policy_version,
                   temperature=temperature, images=np.zeros((0, 0, 0, 3)), state=np.zeros((0, 0)),
                   token_ids=np.zeros((0, 0)), log_probs=np.zeros(0), steps=np.zeros(0), withheld=reason)

    @property
    def num_chunks(self) -> int:
        """N."""
        return int(self.images.shape[0])

    @property
    def num_tokens(self) -> int:
        """N * C * A: every sampled token of the episode."""
        return int(self.token_ids.size)


@dataclass
class ResultRecord:
    """How one episode ended (EpisodeResult.msg)."""

    episode_id: str
    arm: str
    group_id: str
    task: str
    seed: int
    success: bool
    reward: float
    steps: int
    policy_version: int
    evaluation: bool
    end_reason: str
    group_size: int  # rollouts the manager scheduled in the group: the buffer closes it at that many results

    def __post_init__(self) -> None:
        if self.end_reason not in END_REASONS:
            raise ValueError(f"episode {self.episode_id!r}: end_reason={self.end_reason!r}; "
                             f"expected one of {END_REASONS} (EpisodeResult.END_*)")
        if not math.isfinite(self.reward):
            raise ValueError(f"episode {self.episode_id!r}: reward={self.reward}; a reward must be finite "
                             "(a NaN would make its whole group's advantages NaN)")
        if not self.evaluation and self.group_size < 1:
            raise ValueError(f"episode {self.episode_id!r}: group_size={self.group_size}; a training result must "
                             "say how many rollouts its manager scheduled in its group (EpisodeResult.group_size)")


def rollout_records(rollout: dict, *, episode_id: str, group_id: str, group_size: int, task: str, seed: int,
                    instruction: str, policy_version: int, temperature: float,
                    success: bool | None = None) -> tuple[TrajectoryRecord, ResultRecord]:
    """Both halves of an in-process rollout (one dict of `policy.evaluate.run_episodes(record=True)`, sampled
    at `temperature`), as the policy node and the episode manager would have published them; `success`
    overrides the rollout's own (benchmarks that need every group kept)."""
    if success is None:
        success, end_reason = bool(rollout["success"]), rollout["end_reason"]
    else:
        end_reason = "success" if success else "timeout"
    trajectory = TrajectoryRecord(episode_id=episode_id, arm="/arm0", instruction=instruction,
                                  policy_version=policy_version, temperature=temperature, **rollout["trajectory"])
    result = ResultRecord(episode_id=episode_id, arm="/arm0", group_id=group_id, task=task, seed=seed,
                          success=success, reward=float(success), steps=rollout["steps"],
                          policy_version=policy_version, evaluation=False, end_reason=end_reason,
                          group_size=group_size)
    return trajectory, result


# --- files --------------------------------------------------------------------------------------
# The buffer writes these on every arrival. Each goes to a temporary sibling and is renamed into
# place, so a killed process leaves the old file or the new one, never half of one. They are not
# fsynced one by one: an fsync cost 10-20 ms here, eight per episode; the buffer instead syncs once
# when a learner checkpoint covers its state (`EpisodeBuffer.commit`).

TRAJECTORY_ARRAYS = ("images", "state", "token_ids", "log_probs", "steps")


def replace_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary sibling (data.atomic's naming, so leftovers are recognised) and
    os.replace it onto `path`: atomic against a killed process, durable only after an fsync/sync."""
    tmp = tmp_path_for(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_trajectory(path: Path, record: TrajectoryRecord) -> None:
    """One .npz: the arrays plus the scalar fields as a JSON string (no pickle)."""
    meta = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
            if f.name not in TRAJECTORY_ARRAYS}
    data = io.BytesIO()
    np.savez(data, meta=np.array(json.dumps(meta)), **{name: getattr(record, name) for name in TRAJECTORY_ARRAYS})
    replace_write(Path(path), data.getvalue())


def load_trajectory(path: Path) -> TrajectoryRecord:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return TrajectoryRecord(**meta, **{name: z[name] for name in TRAJECTORY_ARRAYS})


def save_result(path: Path, record: ResultRecord) -> None:
    replace_write(Path(path), json.dumps(dataclasses.asdict(record)).encode())


def load_result(path: Path) -> ResultRecord:
    return ResultRecord(**json.loads(Path(path).read_text()))
