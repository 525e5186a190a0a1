"""vla_rl_ros: GRPO fine-tuning of vision-language-action policies as a ROS 2 graph."""

__version__ = "0.1.0"
