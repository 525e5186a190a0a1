"""The sim oracle: the task's own privileged success predicate, evaluated on the simulator state."""

from __future__ import annotations

from vla_rl_ros.sim.tasks import TaskState, get_task


class SimOracle:
    """Evaluates `TaskSpec.success` on a `TaskState`; never guesses, so its confidence is 1."""

    source = "sim_oracle"
    observes = "task_state"
    options: tuple[str, ...] = ()

    def hold_steps(self, task: str) -> int:
        """How long the task requires success to hold (its own config)."""
        return get_task(task).hold_steps

    def judge(self, task: str, state: TaskState) -> tuple[bool, float]:
        return get_task(task).success(state), 1.0
