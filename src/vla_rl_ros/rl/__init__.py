"""GRPO as in SimpleVLA-RL, ROS-free: config, loss, episode records and buffer, the learner.

The learner node (vla_rl_ros.nodes) converts Trajectory/EpisodeResult messages to the records here
and calls GRPOLearner; nothing in this package imports rclpy.
"""

import importlib
from typing import Any

# Name -> submodule, imported on first use (PEP 562): the nodes import rl.records through
# ros/convert.py, and must not pay torch's ~190 MiB and seconds of start-up for it.
_EXPORTS = {
    "EpisodeBuffer": "buffer", "Group": "buffer", "Rollout": "buffer",
    "GRPOConfig": "config",
    "GRPOLearner": "learner", "TokenPolicy": "learner", "latest_checkpoint": "learner",
    "clipped_policy_loss": "loss", "group_advantages": "loss", "keep_group": "loss",
    "MetricsWriter": "metrics", "read_metrics": "metrics",
    "DISCARD_REASONS": "records", "END_REASONS": "records", "ResultRecord": "records", "TrajectoryRecord": "records",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "DISCARD_REASONS",
    "END_REASONS",
    "EpisodeBuffer",
    "GRPOConfig",
    "GRPOLearner",
    "Group",
    "MetricsWriter",
    "ResultRecord",
    "Rollout",
    "TokenPolicy",
    "TrajectoryRecord",
    "clipped_policy_loss",
    "group_advantages",
    "keep_group",
    "latest_checkpoint",
    "read_metrics",
]
