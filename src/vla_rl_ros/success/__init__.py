"""Success detection (no ROS): backends chosen by a `type` key, and the hold filter they share.

A backend's `judge` turns one observation into a raw verdict and a confidence (1.0 for the oracle
and an operator, a probability for a classifier); `HoldFilter` turns raw
verdicts into success only once they have held for k consecutive control steps, so a gripper
brushing past the goal is not a success.
"""

from __future__ import annotations

from vla_rl_ros.success.hold import HoldFilter
from vla_rl_ros.success.sim_oracle import SimOracle

BACKENDS: dict[str, type] = {"sim_oracle": SimOracle}


def backend_class(name: str) -> type:
    """The backend called `name`; a ValueError listing the known ones otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown success detector type {name!r}; known: {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "HoldFilter", "SimOracle", "backend_class"]
