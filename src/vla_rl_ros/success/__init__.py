"""Success detection (no ROS): backends chosen by a `type` key.

A backend's `judge` turns one observation into a raw verdict and a confidence (1.0 for the oracle
and an operator, a probability for a classifier); the tasks' `HoldFilter` (sim/tasks/hold.py, where
hold_steps is defined) turns raw verdicts into success only once they have held for k consecutive
control steps, so a gripper brushing past the goal is not a success.

Each backend class names what it judges (`observes`: "task_state", "image" or "operator") and the
node parameters its constructor takes (`options`). The registry holds import paths, so importing
this package does not import torch for the classifier.
"""

from __future__ import annotations

import importlib

from vla_rl_ros.success.operator import OPERATOR, LabelError, OperatorLabels
from vla_rl_ros.success.sim_oracle import SimOracle

# type -> "module:Class"
BACKENDS: dict[str, str] = {
    "sim_oracle": "vla_rl_ros.success.sim_oracle:SimOracle",
    "classifier": "vla_rl_ros.success.classifier:SuccessClassifier",
    "operator": "vla_rl_ros.success.operator:OperatorLabels",
}


def backend_class(name: str) -> type:
    """The backend called `name`; a ValueError listing the known ones otherwise."""
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown success detector type {name!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)


__all__ = ["BACKENDS", "OPERATOR", "LabelError", "OperatorLabels", "SimOracle", "backend_class"]
