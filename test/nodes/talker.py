"""Test node: publishes every custom message (latched) and serves both custom services."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from samples import EPISODE, MESSAGES
from vla_rl_interfaces.srv import LabelEpisode, ResetEpisode

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Talker(Node):
    def __init__(self) -> None:
        super().__init__("talker")
        self.pubs = {name: self.create_publisher(type(msg), name, LATCHED) for name, msg in MESSAGES.items()}
        for name, msg in MESSAGES.items():
            self.pubs[name].publish(msg)
        self.create_service(ResetEpisode, "reset_episode", self.on_reset)
        self.create_service(LabelEpisode, "label_episode", self.on_label)

    def on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        response.success = request.task == "pick_place" and request.seed == 1001
        response.message = f"reset {request.task}/{request.seed} as {request.episode_id}"
        response.instruction = "put the red cube on the plate"
        return response

    def on_label(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        response.accepted = request.episode_id == EPISODE
        response.message = f"labelled success={request.success}"
        return response


def main() -> None:
    rclpy.init()
    node = Talker()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
