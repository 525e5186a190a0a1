"""GRPO as in SimpleVLA-RL, ROS-free: config, loss, episode records and buffer, the learner.

The learner node (vla_rl_ros.nodes) converts Trajectory/EpisodeResult messages to the records here
and calls GRPOLearner; nothing in this package imports rclpy.
"""

from vla_rl_ros.rl.buffer import Episode, EpisodeBuffer, Group
from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.learner import GRPOLearner, TokenPolicy, latest_checkpoint
from vla_rl_ros.rl.loss import clipped_policy_loss, group_advantages, keep_group
from vla_rl_ros.rl.metrics import MetricsWriter, read_metrics
from vla_rl_ros.rl.records import (
    DISCARD_REASONS,
    END_REASONS,
    ResultRecord,
    TrajectoryRecord,
)

__all__ = [
    "DISCARD_REASONS",
    "END_REASONS",
    "Episode",
    "EpisodeBuffer",
    "GRPOConfig",
    "GRPOLearner",
    "Group",
    "MetricsWriter",
    "ResultRecord",
    "TokenPolicy",
    "TrajectoryRecord",
    "clipped_policy_loss",
    "group_advantages",
    "keep_group",
    "latest_checkpoint",
    "read_metrics",
]
