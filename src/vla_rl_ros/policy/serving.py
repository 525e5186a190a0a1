"""Serving a policy to several arms (no ROS): which requests may be answered now, what each episode
saw and sampled, and when new weights may be swapped in.

Weights change only between episodes, so every chunk of an episode comes from one policy version
(DESIGN.md). When an update is pending, episodes already under way keep being served with the old
weights, episodes that have not had a chunk yet wait, and the swap happens once no episode is under
way; the waiting arms then start on the new version. In lockstep simulation that wait costs no sim time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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

    @property
    def served_from_start(self) -> bool:
        """Every chunk of the episode came from this log: the first one was for step 0. A node that
        (re)started mid-episode sees the latched EpisodeStart and serves the rest, but the chunks
        before it are not in its log, so its trajectory would misstate what the policy did."""
        return bool(self.steps) and self.steps[0] == 0


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

    def swap_due(self) -> bool:
        return self.pending_update is not None and not self.in_flight()

    def swapped(self, version: int) -> None:
        """New weights are live: episodes that have not started acting will use them."""
        self.version = version
        self.pending_update = None
        for log in self.episodes.values():
            if not log.steps:
                log.policy_version = version

    def record(self, log: EpisodeLog, image: Any, state: np.ndarray, token_ids: np.ndarray, log_prob: float,
               step: int) -> None:
        log.images.append(image)
        log.states.append(np.asarray(state, np.float32))
        log.token_ids.append(np.asarray(token_ids, np.int64))
        log.log_probs.append(float(log_prob))
        log.steps.append(int(step))
