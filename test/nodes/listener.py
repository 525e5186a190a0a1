"""Test node: receives every custom message and calls both services, checks every field, writes a
JSON report to the `report` parameter's path and exits (0 when everything arrived intact)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from samples import EPISODE, MESSAGES, same
from vla_rl_interfaces.srv import LabelEpisode, ResetEpisode

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
TIMEOUT_S = 30.0


class Listener(Node):
    def __init__(self) -> None:
        super().__init__("listener")
        self.report_path = self.declare_parameter("report", "").value
        self.greeting = self.declare_parameter("greeting", "").value
        self.received: dict[str, bool] = {}
        for name, msg in MESSAGES.items():
            self.create_subscription(type(msg), name, lambda m, n=name: self.on_message(n, m), LATCHED)

    def on_message(self, name: str, msg: object) -> None:
        self.received[name] = same(msg, MESSAGES[name])

    def call(self, srv_type: type, name: str, request: object) -> object:
        client = self.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=TIMEOUT_S):
            raise TimeoutError(name)
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self, future, timeout_sec=TIMEOUT_S)
        return future.result()


def main() -> int:
    rclpy.init()
    node = Listener()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(node.received) < len(MESSAGES) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        reset = node.call(ResetEpisode, "reset_episode",
                          ResetEpisode.Request(task="pick_place", seed=1001, episode_id=EPISODE))
        label = node.call(LabelEpisode, "label_episode", LabelEpisode.Request(episode_id=EPISODE, success=True))
        report = {
            "messages": node.received,
            "reset": [reset.success, reset.message, reset.instruction],
            "label": [label.accepted, label.message],
            "namespace": node.get_namespace(),
            "greeting": node.greeting,
        }
        Path(node.report_path).write_text(json.dumps(report))
        ok = len(node.received) == len(MESSAGES) and all(node.received.values()) and reset.success and label.accepted
        return 0 if ok else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
