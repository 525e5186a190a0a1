"""Serving a policy to several arms (no ROS): which requests may be answered now, what each episode
saw and sampled, and when new weights may be swapped in.

Weights change only between episodes, so every chunk of an episode comes from one policy version
(DESIGN.md). When an update is pending, episodes already under way keep being served with the old
weights, episodes that have not had a chunk yet wait, and the swap happens once no episode is under
way; the waiting arms then start on the new version. In lockstep simulation that wait costs no sim time.

Arms that may die (`SwapGate`): an arm whose executor died or hangs leaves its episode under way
until its episode manager gives it up as lost_node (lost_node_timeout_s, 60 s), and every other arm's
next episode would wait that long (38-49 s were seen). So an episode whose arm has asked for no chunk
for SILENT_ARM_S no longer holds a swap back. If that arm comes back and asks for more of the episode
(a respawned executor rejoins its latched episode), the episode goes on with the new weights in a
fresh log, and its trajectory, which would mix two versions, is withheld from the learner; if it
never asks again, its log stays whole and its trajectory goes out as usual.

A training episode whose trajectory is withheld (`withheld_reason`: two versions, a greedy chunk, a
node that (re)started during it, no chunk served) still gets a Trajectory, with no chunks and the
reason, so that the learner closes the episode's group on the other rollouts instead of waiting for it.

A learner that died and resumed from its last checkpoint numbers the updates after it again, for
other weights: an update is taken when it is newer than the weights served or is another checkpoint
(its digest differs), so the policy acts with the weights the learner now has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_rl_ros.rl.records import (
    WITHHELD_GREEDY,
    WITHHELD_JOINED_MIDWAY,
    WITHHELD_NO_CHUNKS,
    WITHHELD_TWO_VERSIONS,
)


@dataclass
class EpisodeLog:
    """What the policy saw and sampled in one episode: the learner's Trajectory."""

    episode_id: str
    arm: str
    instruction: str
    evaluation: bool
    policy_version: int
    images: list[Any] = field(default_factory=list)  # N observations as received (e.g. sensor_msgs/Image)
    states: list[np.ndarray] = field(default_factory=list)  # N x (P,) float32
    token_ids: list[np.ndarray] = field(default_factory=list)  # N x (C*A,) int64
    log_probs: list[float] = field(default_factory=list)  # N chunk log-probs (nats)
    steps: list[int] = field(default_factory=list)  # N control steps at which chunks start
    greedy: bool = False  # some chunk was the argmax, not sampled: no temperature describes the trajectory

    @property
    def served_from_start(self) -> bool:
        """Every chunk of the episode came from this log: the first one was for step 0. A node that
        (re)started mid-episode sees the latched EpisodeStart and serves the rest, but the chunks
        before it are not in its log, so its trajectory would misstate what the policy did."""
        return bool(self.steps) and self.steps[0] == 0


def withheld_reason(log: EpisodeLog, two_versions: bool) -> str:
    """Why the learner must not have this training episode's trajectory (records.WITHHELD_*), or "" if it
    may; `two_versions`: `SwapGate.ended` said a swap cut through it."""
    if not log.steps:
        return WITHHELD_NO_CHUNKS
    if two_versions:
        return WITHHELD_TWO_VERSIONS
    if log.greedy:
        return WITHHELD_GREEDY
    if not log.served_from_start:
        return WITHHELD_JOINED_MIDWAY
    return ""


class ServingState:
    """Episode bookkeeping and the update gate of one policy node."""

    def __init__(self, version: int = 0) -> None:
        self.version = version
        self.episodes: dict[str, EpisodeLog] = {}  # by arm: the arm's current episode
        self.pending_update: Any = None

    def start_episode(self, arm: str, episode_id: str, instruction: str, evaluation: bool) -> EpisodeLog | None:
        """Begin an arm's episode; returns the arm's previous episode if it never got its result."""
        previous = self.episodes.get(arm)
        self.episodes[arm] = EpisodeLog(episode_id, arm, instruction, evaluation, self.version)
        return previous if previous is not None and previous.episode_id != episode_id else None

    def end_episode(self, arm: str, episode_id: str) -> EpisodeLog | None:
        """The finished episode's log, if it is this arm's current episode."""
        log = self.episodes.get(arm)
        if log is None or log.episode_id != episode_id:
            return None
        del self.episodes[arm]
        return log

    def episode(self, arm: str, episode_id: str) -> EpisodeLog | None:
        log = self.episodes.get(arm)
        return log if log is not None and log.episode_id == episode_id else None

    def in_flight(self) -> list[EpisodeLog]:
        """Episodes that have been served at least one chunk and not ended."""
        return [log for log in self.episodes.values() if log.steps]

    def may_serve(self, log: EpisodeLog) -> bool:
        """An episode under way is always served; a new one waits while an update is pending."""
        return bool(log.steps) or self.pending_update is None

    def swapped(self, version: int) -> None:
        """New weights are live: episodes that have not started acting will use them."""
        self.version = version
        self.pending_update = None
        for log in self.episodes.values():
            if not log.steps:
                log.policy_version = version

    def record(self, log: EpisodeLog, image: Any, state: np.ndarray, token_ids: np.ndarray, log_prob: float,
               step: int, *, greedy: bool) -> None:
        log.greedy |= greedy
        log.images.append(image)
        log.states.append(np.asarray(state, np.float32))
        log.token_ids.append(np.asarray(token_ids, np.int64))
        log.log_probs.append(float(log_prob))
        log.steps.append(int(step))


# A healthy arm asks for a chunk at least once per chunk it executes (a 50-step chunk at 10 Hz takes
# 5 s), and a time-out's verdict wait holds its last request back for up to verdict_wait_s (5 s; an
# arm passed over then has asked for its last chunk anyway). A sixth of lost_node_timeout_s.
SILENT_ARM_S = 10.0


class SwapGate:
    """The update gate of a policy node: `ServingState`'s, minus arms that have gone silent."""

    def __init__(self, serving: ServingState, silent_after_s: float = SILENT_ARM_S) -> None:
        self.serving = serving
        self.silent_after_s = silent_after_s
        self.digest = ""  # of the weights served; empty: the node's initial checkpoint
        self.asked: dict[str, float] = {}  # arm -> when it last asked for a chunk (monotonic s)
        self.left_behind: set[str] = set()  # episodes a swap did not wait for, still on the old weights
        self.withheld: set[str] = set()  # episodes served by two versions: no trajectory for the learner

    def wanted(self, version: int, digest: str) -> bool:
        """Whether to take an announced update: a newer version, or a resumed learner's checkpoint
        (same or older version, other weights). A re-delivery of the update served is not."""
        return version > self.serving.version or digest != self.digest

    def request(self, arm: str, now: float) -> None:
        """The arm asked for a chunk: it is alive (again)."""
        self.asked[arm] = now

    def quiet_for(self, arm: str, now: float) -> float:
        """Seconds since the arm last asked for a chunk (infinite if it never has)."""
        return now - self.asked.get(arm, -math.inf)

    def swap_due(self, now: float) -> bool:
        """An update is pending and every episode under way is on an arm silent for silent_after_s."""
        return self.serving.pending_update is not None and all(
            self.quiet_for(log.arm, now) >= self.silent_after_s for log in self.serving.in_flight())

    def swapped(self, version: int, digest: str) -> list[EpisodeLog]:
        """New weights are live; returns the episodes under way that the swap did not wait for."""
        behind = self.serving.in_flight()
        self.serving.swapped(version)
        self.digest = digest
        # Only episodes still under way matter: one replaced by its arm's next start never asks again.
        self.left_behind = {log.episode_id for log in behind}
        return behind

    def episode(self, arm: str, episode_id: str) -> EpisodeLog | None:
        """The arm's log for serving this episode. An episode left behind by a swap starts a fresh log
        on the current weights when its arm asks again, and is withheld from the learner."""
        log = self.serving.episode(arm, episode_id)
        if log is not None and episode_id in self.left_behind:
            self.left_behind.discard(episode_id)
            self.withheld.add(episode_id)
            self.serving.start_episode(arm, episode_id, log.instruction, log.evaluation)
            log = self.serving.episode(arm, episode_id)
        return log

    def ended(self, episode_id: str) -> bool:
        """The episode's result is in; True if its trajectory must be withheld (two versions served it)."""
        self.left_behind.discard(episode_id)
        if episode_id in self.withheld:
            self.withheld.discard(episode_id)
            return True
        return False
