"""The operator's keys (no ROS): which keys there are, and reading them from a terminal or a pipe.

On a terminal each key acts at once (termios cbreak mode); from a pipe or file each line is one key, so
scripts and tests can drive `vla-rl operator` (nodes/operator_tool.py, which turns keys into calls).
"""

from __future__ import annotations

import os
import termios
import tty
from collections.abc import Iterator
from typing import IO

KEYS = {"s": "success", "f": "failure", "r": "ready", "a": "abort", "q": "quit"}
HELP = "keys: " + ", ".join(f"{k} {v}" for k, v in KEYS.items())


def read_keys(stream: IO[str]) -> Iterator[str]:
    """Keys from `stream`: single key presses on a terminal (keys typed before it reads are discarded, as
    tty.setcbreak does), one key per line otherwise (blank lines skipped)."""
    if stream.isatty():
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)  # keys arrive unbuffered and unechoed; Ctrl-C still interrupts
            while key := os.read(fd, 1).decode(errors="replace"):
                if not key.isspace():
                    yield key
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    else:
        for line in stream:
            if line.strip():
                yield line.strip()
