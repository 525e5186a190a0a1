"""ROS 2 nodes: thin shells that wire the plain-Python core to topics, parameters and services.

Each node module opens with its ROS surface (topics, types, QoS, services, parameters), then the
Node class, then `main()`, the console entry point that setup.py names after the node. The operator
tool (`operator_tool.py`, an rclpy client of the graph's services) is laid out alike; its `main()` is
`vla-rl operator` (cli.py), so it is no entry point of its own and has no Params.
"""

from __future__ import annotations

import importlib
from importlib.metadata import distribution


def node_params() -> dict[str, type]:
    """Every node's Params dataclass by node name (config/<node>.yaml holds its defaults).

    The nodes are the package's console entry points that live in this folder (setup.py's NODES).
    """
    points = distribution("vla_rl_ros").entry_points
    return {
        p.name: importlib.import_module(p.module).Params
        for p in points if p.group == "console_scripts" and p.module.startswith(__name__ + ".")
    }
