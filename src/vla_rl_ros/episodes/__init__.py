"""Which episode runs next (no ROS): GRPO groups on training seeds, evaluation rounds on held-out seeds;
and the reset protocol of a real arm (home pose, operator prompts)."""

from vla_rl_ros.episodes.reset import Homing, layout_prompt, plan_label
from vla_rl_ros.episodes.schedule import EpisodePlan, Scheduler

__all__ = ["EpisodePlan", "Homing", "Scheduler", "layout_prompt", "plan_label"]
