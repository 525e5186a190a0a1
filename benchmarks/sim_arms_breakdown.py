"""sim_arms with a clock on each callback: where the lockstep graph's control step goes.

Run in place of sim_arms (same ROS arguments) by `bench_sim_graph.py --breakdown`. Wraps the bridge's
and the executor's callbacks, the core calls inside them (SimEnv.step and its renders, the executor's
Commander.command), every publish by topic and rclpy's /clock callback, and times the gaps before each
of the three callbacks that carry a control step (rclpy's take and dispatch; before action_chunk also
the policy's round trip); a gap over IDLE_S is the graph idle (waiting for the episode to start, not a
control step's cost) and is listed apart. At exit it writes {name: [calls, seconds]}, the step count, and the process's
wall and CPU seconds (all threads: MuJoCo's renderer and Fast DDS have their own) to the JSON file
named by $BREAKDOWN_JSON. The clocks themselves cost a few microseconds a call.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rclpy import time_source
from rclpy.publisher import Publisher

from vla_rl_ros.control import command
from vla_rl_ros.nodes import executor, sim_arms, sim_bridge
from vla_rl_ros.sim import env

SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
# The callbacks a control step passes through; the time since the previous one ended is a gap.
STEP_CALLBACKS = {"bridge: on_trajectory", "executor: on_joint_states", "executor: on_chunk"}
_last_end: list[float | None] = [None]
IDLE_S = 0.1  # s between step callbacks beyond which the graph was idle, not stepping


def timed(name: str, function: Callable[..., Any], *, takes_only_self: bool = False) -> Callable[..., Any]:
    """`function` counting its calls and seconds under `name`. A timer callback must keep taking only
    self: rclpy's EventsExecutor hands a TimerInfo to a callback that takes another argument."""
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        if name in STEP_CALLBACKS and _last_end[0] is not None:
            gap = start - _last_end[0]
            # A wait longer than a control step could take is the graph idle (before the episode starts), not a
            # step's cost: counted apart, or one start-up wait of seconds reads as ms on every step.
            kind = "idle" if gap > IDLE_S else "gap"
            SECONDS[f"{kind} before {name}"] += gap
            CALLS[f"{kind} before {name}"] += 1
        try:
            return function(*args, **kwargs)
        finally:
            end = time.perf_counter()
            SECONDS[name] += end - start
            CALLS[name] += 1
            if name in STEP_CALLBACKS:
                _last_end[0] = end

    def run_self(self: Any) -> Any:
        return run(self)

    return run_self if takes_only_self else run


def instrument() -> None:
    for cls, method, name in [
        (sim_bridge.SimBridge, "on_trajectory", "bridge: on_trajectory"),
        (sim_bridge.SimBridge, "parse", "bridge: parse the command"),
        (sim_bridge.SimBridge, "on_chunk_request", "bridge: on_chunk_request (render_when chunk_request)"),
        (sim_bridge.SimBridge, "publish", "bridge: build and publish the step's messages"),
        (env.SimEnv, "step", "core: SimEnv.step"),
        (env.SimEnv, "render", "core: SimEnv.render (each camera)"),
        (executor.Executor, "on_joint_states", "executor: on_joint_states"),
        (executor.Executor, "on_chunk", "executor: on_chunk"),
        (command.Commander, "command", "executor: Commander.command (IK, limits)"),
        (time_source.TimeSource, "clock_callback", "rclpy: /clock callback (use_sim_time)"),
    ]:
        setattr(cls, method, timed(name, getattr(cls, method)))
    executor.Executor.advance = timed("executor: advance", executor.Executor.advance, takes_only_self=True)
    publish = Publisher.publish

    def publish_timed(self: Publisher, msg: Any) -> None:
        start = time.perf_counter()
        publish(self, msg)
        SECONDS[f"publish {self.topic_name}"] += time.perf_counter() - start
        CALLS[f"publish {self.topic_name}"] += 1

    Publisher.publish = publish_timed


def write(path: str, started: float) -> None:
    figures = {name: [CALLS[name], SECONDS[name]] for name in sorted(SECONDS)}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "w") as f:
        json.dump({"steps": CALLS["core: SimEnv.step"], "wall_s": time.perf_counter() - started,
                   "cpu_s": usage.ru_utime + usage.ru_stime, "figures": figures}, f, indent=1)


if __name__ == "__main__":
    instrument()
    atexit.register(write, os.environ["BREAKDOWN_JSON"], time.perf_counter())
    sys.exit(sim_arms.main())
