"""Which episode runs next and how it goes (no ROS): GRPO groups on training seeds, evaluation rounds on
held-out seeds; what the operator of a real arm is asked between episodes; and `ManagerCore`, the
episode manager's state machine (resets, time-outs, verdicts, e-stop, abort, homing), whose outputs
live in `episodes.manager`."""

from vla_rl_ros.episodes.manager import ManagerConfig, ManagerCore
from vla_rl_ros.episodes.reset import layout_prompt, plan_label
from vla_rl_ros.episodes.schedule import EpisodePlan, Scheduler

__all__ = ["EpisodePlan", "ManagerConfig", "ManagerCore", "Scheduler", "layout_prompt", "plan_label"]
