"""Floors: importing the GRPO learner must not import the dataset's heavy stack (pyarrow, av); rl/
only writes through data.atomic. A fresh interpreter, since this test process imports both anyway."""

import subprocess
import sys

CHECK = "import sys, vla_rl_ros.rl.learner; assert 'av' not in sys.modules and 'pyarrow' not in sys.modules"


def test_importing_the_learner_imports_neither_pyarrow_nor_av():
    done = subprocess.run([sys.executable, "-c", CHECK], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
