"""vla_rl_ros: GRPO fine-tuning of vision-language-action policies as a ROS 2 graph."""

import os

# Headless rendering unless the user chose a backend: MuJoCo picks its GL backend at its first import,
# and this package init runs before any of its modules can import mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's llvmpipe, the OpenGL of a machine without a GPU, rasterises on a pool of one thread per core by default;
# for frames of 64-224 px the hand-offs cost more than they save: rendering in the calling thread gives the same
# pixels at 1.1-1.5 times the control steps per second (README, "The simulation"), and leaves the other cores
# to the other nodes. Set LP_NUM_THREADS to override; a GPU's driver ignores it.
os.environ.setdefault("LP_NUM_THREADS", "0")

__version__ = "0.1.0"
