"""The episode schedule of one arm.

Training episodes come in GRPO groups: `group_size` rollouts of one task from one initial state
(the same seed), the unit the learner computes advantages over (SimpleVLA-RL, n = 8). Tasks are
visited in turn so every task gets the same share of groups; seeds are drawn from the task's
training seeds. An evaluation round runs the first `eval_seeds_per_task` held-out seeds of every
task once, split between the arms (arm i of K takes every K-th seed), with greedy actions.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vla_rl_ros.sim.tasks import get_task


@dataclass(frozen=True)
class EpisodePlan:
    episode_id: str
    task: str
    seed: int
    group_id: str  # empty for evaluation episodes
    evaluation: bool
    max_steps: int
    group_index: int = 0  # 1-based number of the group (training) or evaluation round on this arm
    rollout: int = 0  # 0-based index of this episode in its group or round
    rollouts: int = 1  # episodes in its group or round

    @property
    def group_size(self) -> int:
        """Rollouts scheduled in its GRPO group (EpisodeStart/EpisodeResult.group_size); 0 for evaluation."""
        return 0 if self.evaluation else self.rollouts


class Scheduler:
    """Plans an arm's episodes: whole groups in order, evaluation rounds between groups when asked."""

    def __init__(self, tasks: Sequence[str], *, group_size: int, arm: str, arm_index: int = 0, num_arms: int = 1,
                 host_index: int = 0, num_hosts: int = 1, eval_seeds_per_task: int = 0, seed: int = 0) -> None:
        """Arm `arm_index` of `num_arms` on rollout host `host_index` of `num_hosts` (each with num_arms arms)
        takes slot host_index * num_arms + arm_index of num_hosts * num_arms: every slot evaluates its
        own share of the held-out seeds and draws its own training schedule."""
        if not tasks:
            raise ValueError("no tasks to schedule; name at least one (see `vla-rl tasks`)")
        if group_size < 1:
            raise ValueError(f"group_size={group_size} must be at least 1 (GRPO needs 2 or more)")
        if not (0 <= arm_index < num_arms and 0 <= host_index < num_hosts):
            raise ValueError(f"arm_index={arm_index} must be in [0, num_arms={num_arms}) and host_index={host_index} "
                             f"in [0, num_hosts={num_hosts})")
        self.specs = [get_task(t) for t in tasks]  # ValueError names an unknown task
        self.group_size = group_size
        self.arm = arm.strip("/").replace("/", "_") or "arm"
        self.slot, self.slots = host_index * num_arms + arm_index, num_hosts * num_arms
        self.eval_seeds_per_task = eval_seeds_per_task
        self.rng = np.random.default_rng([seed, self.slot])
        self.groups_planned = 0
        self.rounds_planned = 0
        self.queue: deque[EpisodePlan] = deque()
        self.pending_eval = False

    def _id(self, kind: str) -> str:
        return f"{self.arm}-{kind}-{uuid.uuid4().hex[:12]}"

    def request_evaluation(self) -> None:
        """Run an evaluation round once the current group is finished."""
        self.pending_eval = True

    def _evaluation_round(self) -> list[EpisodePlan]:
        self.rounds_planned += 1
        pairs = [(spec, int(s)) for spec in self.specs
                 for s in spec.heldout_seeds[: self.eval_seeds_per_task][self.slot :: self.slots]]
        return [EpisodePlan(self._id("eval"), spec.name, seed, "", True, spec.max_steps, self.rounds_planned, k,
                            len(pairs)) for k, (spec, seed) in enumerate(pairs)]

    def _group(self) -> list[EpisodePlan]:
        spec = self.specs[self.groups_planned % len(self.specs)]
        self.groups_planned += 1
        seeds = spec.train_seeds
        seed = int(seeds[int(self.rng.integers(len(seeds)))])
        group_id = self._id("group")
        return [EpisodePlan(self._id("ep"), spec.name, seed, group_id, False, spec.max_steps, self.groups_planned, k,
                            self.group_size) for k in range(self.group_size)]

    def next(self) -> EpisodePlan:
        if not self.queue:
            if self.pending_eval and self.eval_seeds_per_task > 0:
                self.queue.extend(self._evaluation_round())
            self.pending_eval = False
            if not self.queue:
                self.queue.extend(self._group())
        return self.queue.popleft()
