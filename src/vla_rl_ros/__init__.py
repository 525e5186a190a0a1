"""vla_rl_ros: GRPO fine-tuning of vision-language-action policies as a ROS 2 graph."""

import os

# Headless rendering unless the user chose a backend: MuJoCo picks its GL backend at its first import,
# and this package init runs before any of its modules can import mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
