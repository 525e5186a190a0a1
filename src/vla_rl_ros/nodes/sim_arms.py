"""sim_arms: a simulated arm's nodes (sim_bridge, executor, success_detector, episode_manager) in ONE
process on one executor, for one arm or several.

ROS surface: exactly that of the composed nodes, each under its arm's namespace, as the separate
processes of sim_arm.launch.yaml have it: the same classes, names, topics, QoS and parameter files;
each arm's executor and episode manager run on the arm's own lockstep clock (`<arm>/clock`, which its
sim bridge publishes). The process is also a node of its own, `sim_arms`, holding only these parameters:
  parameters  see Params below; `<node>.<parameter>` (e.g. episode_manager.arm_index, nested `param` in a
              launch file) is passed on to that node of every arm, after its file in config_dir, and
              checked there. An arm's episode manager gets episode_manager.arm_index plus the arm's
              position in `arms` (0 if not given), and num_arms (if not given, enough for those
              indices), so that several arms split the evaluation seeds.

Why: in the train_sim graph a lockstep control step crosses processes twice (executor -> sim bridge
-> executor), and on a loaded two-core machine each crossing waits for the scheduler to wake the
other process; in one process the messages still go through DDS (same topics: the policy node,
recorder and tools see no difference) but the next callback runs on the same thread at once
(benchmarks/bench_graph_tax.py, bench_sim_graph.py: README, "Speed and memory").
Fault tolerance is per process: a crash of any composed node ends the process (status 1) and the
launch file respawns it whole: the running episode gets no result (its manager died with it, so the
learner never sees it) and the arm starts afresh with a new episode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter

from vla_rl_ros.nodes.episode_manager import EpisodeManager
from vla_rl_ros.nodes.executor import Executor
from vla_rl_ros.nodes.sim_bridge import SimBridge
from vla_rl_ros.nodes.success_detector import SuccessDetector
from vla_rl_ros.paths import package_share
from vla_rl_ros.ros.names import CLOCK_TOPIC
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param

# Each arm's nodes, in the order they are created (the bridge first: the others wait for its topics).
NODES: dict[str, type[Node]] = {"sim_bridge": SimBridge, "executor": Executor, "success_detector": SuccessDetector,
                                "episode_manager": EpisodeManager}
SIM_TIME = ("executor", "episode_manager")  # on the arm's lockstep clock (use_sim_time)


@dataclass
class Params:
    arms: list[str] = param([""], "arm namespaces, relative to this node's ('' = its own)")
    nodes: list[str] = param(list(NODES), f"which nodes each arm runs, of {list(NODES)}")
    config_dir: str = param("", "directory of the nodes' parameter files (<node>.yaml); empty: the package's config/")

    def __post_init__(self) -> None:
        unknown = [n for n in self.nodes if n not in NODES]
        if unknown or not self.nodes or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"nodes={self.nodes} (each of {list(NODES)}, at least one), arms={self.arms} (each "
                             "once)")


class SimArms(Node):
    """The `sim_arms` node: reads the parameters and builds every arm's nodes (`arm_nodes`)."""

    def __init__(self) -> None:
        super().__init__("sim_arms")
        self.params = declare(self, Params, passed_on=tuple(NODES))
        config = self.params.config_dir or str(package_share("vla_rl_ros") / "config")
        self.files = {name: os.path.join(config, f"{name}.yaml") for name in self.params.nodes}
        missing = [f for f in self.files.values() if not os.path.isfile(f)]
        if missing:
            raise ParameterError(f"config_dir {config!r} lacks {missing}")

    def passed_on(self, node: str) -> dict[str, Any]:
        """The `<node>.<parameter>` values this node was given, by parameter name."""
        prefix = f"{node}."
        return {name[len(prefix):]: p.value for name, p in self._parameter_overrides.items() if name.startswith(prefix)}

    def arm_nodes(self) -> list[Node]:
        """Every arm's nodes, each with its namespace, its parameter file and the arm's clock; the
        process's own ROS arguments (this node's parameters) are not theirs."""
        made: list[Node] = []
        for index, arm in enumerate(self.params.arms):
            namespace = "/" + "/".join(p for p in (*self.get_namespace().split("/"), *arm.split("/")) if p)
            clock = f"{namespace.rstrip('/')}{CLOCK_TOPIC}"
            for name in self.params.nodes:
                values = self.passed_on(name)
                if name in SIM_TIME:
                    values["use_sim_time"] = True
                if name == "executor":  # a simulated arm: a respawned one must go on, no e-stop to keep; its
                    values.setdefault("estop_at_start", False)  # camera is the bridge beside it, rendering
                    values.setdefault("image_timeout_s", 0.0)  # only when asked (render_when chunk_request)
                if name == "episode_manager":  # each arm its own evaluation seeds
                    base = values.get("arm_index", 0)
                    values["arm_index"] = base + index
                    values.setdefault("num_arms", base + len(self.params.arms))
                made.append(NODES[name](
                    namespace=namespace, use_global_arguments=False,
                    cli_args=["--ros-args", "--params-file", self.files[name], "-r", f"{CLOCK_TOPIC}:={clock}"],
                    parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
        return made


def compose() -> list[Node]:
    """This node and every arm's nodes, to spin on one executor (a failure to make one ends the process:
    nothing to clean up)."""
    container = SimArms()
    return [container, *container.arm_nodes()]


def main(args: list[str] | None = None) -> int:
    return run_node(compose, args)
