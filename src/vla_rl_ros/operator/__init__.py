"""The operator's keys at an arm, without ROS (`operator.keys`); `vla-rl operator`, the rclpy client that
turns them into labels, resets and aborts, lives with the nodes (`nodes/operator_tool.py`)."""
