"""Test node: answers ChunkRequests with the task's scripted expert, through the ROS graph.

The expert reads only the privileged TaskState, so the newest task_state stamped at or after the
request gives exactly the action the core env's expert would take in that state. Each chunk repeats
that action `chunk_size` times (ROS parameter, default 1: closed loop, as the core env's expert).
"""

from __future__ import annotations

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, TaskState

from vla_rl_ros.ros.convert import task_state_from_msg
from vla_rl_ros.ros.names import ACTION_CHUNK_TOPIC, CHUNK_REQUEST_TOPIC, TASK_STATE_TOPIC
from vla_rl_ros.sim import get_task

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ScriptedPolicy(Node):
    def __init__(self) -> None:
        super().__init__("scripted_policy")
        self.chunk_size = self.declare_parameter("chunk_size", 1).value
        self.state: TaskState | None = None
        self.request: ChunkRequest | None = None
        self.chunk_pub = self.create_publisher(ActionChunk, ACTION_CHUNK_TOPIC, RELIABLE)
        self.create_subscription(TaskState, TASK_STATE_TOPIC, self.on_state, LATCHED)
        self.create_subscription(ChunkRequest, CHUNK_REQUEST_TOPIC, self.on_request, RELIABLE)

    def on_state(self, msg: TaskState) -> None:
        self.state = msg
        self.answer()

    def on_request(self, msg: ChunkRequest) -> None:
        self.request = msg
        self.answer()

    def answer(self) -> None:
        request, state = self.request, self.state
        if request is None or state is None or state.episode_id != request.episode_id or \
                Time.from_msg(state.header.stamp) < Time.from_msg(request.header.stamp):
            return
        spec = get_task(state.task)
        action = spec.expert_fn(task_state_from_msg(state), spec.config)  # (4,) [dx, dy, dz, gripper]
        chunk = ActionChunk(episode_id=request.episode_id, request_id=request.request_id, chunk_size=self.chunk_size,
                            action_dim=action.size, action_mode="ee_delta", greedy=request.greedy,
                            actions=np.tile(action, self.chunk_size).astype(np.float32).tolist())
        chunk.header.stamp = state.header.stamp
        self.chunk_pub.publish(chunk)
        self.request = None


def main() -> None:
    rclpy.init()
    node = ScriptedPolicy()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
