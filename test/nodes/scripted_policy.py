"""Test node: answers ChunkRequests with the task's scripted expert, through the ROS graph.

The expert reads only the privileged TaskState, so the newest task_state stamped at or after the
request gives exactly the action the core env's expert would take in that state. Each chunk repeats
that action `chunk_size` times (ROS parameter, default 1: closed loop, as the core env's expert).
"""

from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node
from rclpy.time import Time
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, TaskState

from vla_rl_ros.ros.convert import task_state_from_msg
from vla_rl_ros.ros.names import ACTION_CHUNK_TOPIC, CHUNK_REQUEST_TOPIC, TASK_STATE_TOPIC
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.qos import LATCHED, STEPS
from vla_rl_ros.sim import get_task


class ScriptedPolicy(Node):
    def __init__(self) -> None:
        super().__init__("scripted_policy")
        self.chunk_size = self.declare_parameter("chunk_size", 1).value
        self.state: TaskState | None = None
        self.request: ChunkRequest | None = None
        self.chunk_pub = self.create_publisher(ActionChunk, ACTION_CHUNK_TOPIC, STEPS)
        self.create_subscription(TaskState, TASK_STATE_TOPIC, self.on_state, LATCHED)
        self.create_subscription(ChunkRequest, CHUNK_REQUEST_TOPIC, self.on_request, STEPS)

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


def main() -> int:
    # The entry-point shape of every node of the package: the EventsExecutor, spun once at a time
    # (`rclpy.spin(node, executor=EventsExecutor())` dispatched nothing: no request was ever answered).
    return run_node(ScriptedPolicy)


if __name__ == "__main__":
    sys.exit(main())
