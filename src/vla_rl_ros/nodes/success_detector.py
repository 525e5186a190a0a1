"""success_detector: is the running episode a success? One per arm.

ROS surface (names relative to the arm's namespace)
  subscribes  episode_start  vla_rl_interfaces/EpisodeStart  reliable, transient local: which task runs
              task_state     vla_rl_interfaces/TaskState     reliable (type sim_oracle): privileged state
  publishes   success        vla_rl_interfaces/SuccessSignal reliable: one verdict per judged step;
                                                             success is true once the predicate held
                                                             for hold_steps consecutive steps
  parameters  see Params below (config/success_detector.yaml)
"""

from __future__ import annotations

from dataclasses import dataclass

from rclpy.node import Node
from vla_rl_interfaces.msg import EpisodeStart, SuccessSignal, TaskState

from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import MessageError, task_state_from_msg
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import LATCHED, RELIABLE
from vla_rl_ros.success import HoldFilter, backend_class


@dataclass
class Params:
    type: str = param("sim_oracle", "success detector backend", choices=("sim_oracle",))
    hold_steps: int = param(0, "consecutive steps success must hold; 0: the task's own hold_steps",
                            unit="steps", low=0, high=1000)


class SuccessDetector(Node):
    def __init__(self) -> None:
        super().__init__("success_detector")
        self.params = declare(self, Params)
        try:
            self.backend = backend_class(self.params.type)()
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        self.drops = DropLog(self.get_logger())
        self.episode: EpisodeStart | None = None
        self.hold = HoldFilter(1)
        self.success_pub = self.create_publisher(SuccessSignal, "success", RELIABLE)
        self.create_subscription(EpisodeStart, "episode_start", self.on_episode_start, LATCHED)
        self.create_subscription(TaskState, "task_state", self.on_task_state, RELIABLE)
        self.get_logger().info(f"judging success with {self.params.type}")

    def on_episode_start(self, msg: EpisodeStart) -> None:
        try:
            hold = self.params.hold_steps or self.backend.hold_steps(msg.task)
        except ValueError as exc:
            self.drops.drop("unknown task", str(exc))
            self.episode = None
            return
        self.episode = msg
        self.hold.reset(hold)

    def on_task_state(self, msg: TaskState) -> None:
        if self.episode is None or msg.episode_id != self.episode.episode_id:
            self.drops.drop("task_state of another episode", f"episode {msg.episode_id!r}")
            return
        try:
            raw, confidence = self.backend.judge(self.episode.task, task_state_from_msg(msg))
        except (MessageError, KeyError, ValueError) as exc:
            self.drops.drop("malformed task_state", str(exc))
            return
        out = SuccessSignal(episode_id=msg.episode_id, success=self.hold.update(raw), confidence=confidence,
                            source=self.backend.source)
        out.header = msg.header
        self.success_pub.publish(out)


def main(args: list[str] | None = None) -> int:
    return run_node(SuccessDetector, args)
