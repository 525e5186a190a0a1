"""Which episode runs next (no ROS): GRPO groups on training seeds, evaluation rounds on held-out seeds;
and what the operator of a real arm is asked between episodes."""

from vla_rl_ros.episodes.reset import layout_prompt, plan_label
from vla_rl_ros.episodes.schedule import EpisodePlan, Scheduler

__all__ = ["EpisodePlan", "Scheduler", "layout_prompt", "plan_label"]
