"""The task suite, one module per task, in order of rising difficulty."""

from __future__ import annotations

from vla_rl_ros.sim.tasks import lift, open_drawer, pick_place, push, reach, stack, two_on_plate
from vla_rl_ros.sim.tasks.base import TaskSpec, TaskState

# in order of rising difficulty
TASKS: dict[str, TaskSpec] = {
    module.SPEC.name: module.SPEC for module in (reach, push, lift, open_drawer, pick_place, stack, two_on_plate)
}


def get_task(name: str) -> TaskSpec:
    """The task called `name`; a ValueError listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (see `vla-rl tasks`)") from None


__all__ = ["TASKS", "TaskSpec", "TaskState", "get_task"]
