"""Small rclpy helpers shared by the nodes (parameters, QoS, node entry points). Only nodes import this."""
