"""Which episode runs next (no ROS): GRPO groups on training seeds, evaluation rounds on held-out seeds."""

from vla_rl_ros.episodes.schedule import EpisodePlan, Scheduler

__all__ = ["EpisodePlan", "Scheduler"]
