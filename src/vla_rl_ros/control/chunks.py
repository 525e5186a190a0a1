"""Action chunk validation: a chunk either becomes C rows of A finite numbers for the running
episode's outstanding request, or a typed rejection saying why (and the arm holds)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

# A chunk longer than this is garbage, not a plan (SimpleVLA-RL/OpenVLA-OFT chunks are 8-25 steps).
MAX_CHUNK_SIZE = 1000


class RejectReason(str, Enum):
    """Why a chunk was not executed; the value is what /diagnostics and the log show."""

    NO_EPISODE = "no_episode"  # no episode running (none started, or its result is out)
    WRONG_EPISODE = "wrong_episode"  # chunk of another episode
    UNREQUESTED = "unrequested"  # request_id is not the one outstanding (late, duplicate or unasked)
    STALE = "stale"  # computed from observations older than the request's stamp
    WRONG_MODE = "wrong_mode"  # action_mode is not the robot's
    BAD_SHAPE = "bad_shape"  # chunk_size, action_dim and len(actions) do not agree, or A is invalid
    NON_FINITE = "non_finite"  # NaN or inf among the actions
    ESTOP = "estop"  # the e-stop is latched


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class ChunkIn:
    """The fields of a vla_rl_interfaces/ActionChunk the executor reads, as plain Python."""

    episode_id: str
    request_id: int
    policy_version: int
    chunk_size: int
    action_dim: int
    action_mode: str
    actions: np.ndarray  # (C * A,) float, row-major as in the message
    stamp_ns: int  # header.stamp: time of the newest observation used


@dataclass(frozen=True)
class Chunk:
    """A validated chunk."""

    actions: np.ndarray  # (C, A) float64, finite
    request_id: int
    policy_version: int


def validate_chunk(chunk: ChunkIn, *, episode_id: str | None, request_id: int | None, request_stamp_ns: int,
                   action_mode: str, action_dims: tuple[int, ...]) -> Chunk | Rejection:
    """Check `chunk` against the running episode (None: none) and the outstanding request (None: none)."""
    if episode_id is None:
        return Rejection(RejectReason.NO_EPISODE, f"chunk for episode {chunk.episode_id!r} while no episode runs")
    if chunk.episode_id != episode_id:
        return Rejection(RejectReason.WRONG_EPISODE, f"chunk for episode {chunk.episode_id!r}, running {episode_id!r}")
    if request_id is None or chunk.request_id != request_id:
        return Rejection(RejectReason.UNREQUESTED,
                         f"chunk answers request {chunk.request_id}, outstanding {request_id}")
    if chunk.stamp_ns < request_stamp_ns:
        return Rejection(RejectReason.STALE, f"chunk stamped {chunk.stamp_ns} ns, older than its request's "
                                             f"{request_stamp_ns} ns")
    if chunk.action_mode not in ("", action_mode):
        return Rejection(RejectReason.WRONG_MODE, f"action_mode {chunk.action_mode!r}, the robot runs {action_mode!r}")
    C, A = chunk.chunk_size, chunk.action_dim
    actions = np.asarray(chunk.actions, dtype=np.float64).ravel()
    if A not in action_dims or not 1 <= C <= MAX_CHUNK_SIZE or actions.size != C * A:
        return Rejection(RejectReason.BAD_SHAPE, f"chunk_size {C} x action_dim {A} with {actions.size} actions; "
                                                 f"{action_mode} needs action_dim in {action_dims}, chunk_size "
                                                 f"1..{MAX_CHUNK_SIZE} and exactly C * A actions")
    if not np.all(np.isfinite(actions)):
        return Rejection(RejectReason.NON_FINITE, f"{int(np.sum(~np.isfinite(actions)))} non-finite action values")
    return Chunk(actions=actions.reshape(C, A), request_id=chunk.request_id, policy_version=chunk.policy_version)
