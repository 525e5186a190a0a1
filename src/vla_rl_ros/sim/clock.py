"""Sim time as the lockstep sim bridge stamps it: an exact count of integer nanoseconds.

MuJoCo's `data.time` is a float sum of physics timesteps. Rounded to nanoseconds it drifts: after
10,635 control steps of 0.1 s one step came out 99,999,999 ns after the previous, and an executor
waiting for a joint state stamped a full period later waited forever. Counted in integers (steps x
period, plus each reset's settling), every stamp is an exact multiple of the period's grid however long
a run lasts.
"""

from __future__ import annotations

from dataclasses import dataclass

from vla_rl_ros.sim.env import EnvConfig

NS_PER_S = 1_000_000_000


@dataclass
class SimClock:
    """Sim time (ns), monotonic across resets: each control step adds one period, each reset the env's
    settling time (simulated physics too), so states after a reset are stamped later than any before."""

    period_ns: int  # one control step
    settle_ns: int  # the physics a reset runs before its first observation
    now_ns: int = 0

    @classmethod
    def of(cls, config: EnvConfig) -> SimClock:
        """The clock of an env with this config."""
        return cls(round(config.control_dt * NS_PER_S), round(config.settle_time * NS_PER_S))

    def step(self) -> None:
        """One control step ran."""
        self.now_ns += self.period_ns

    def reset(self) -> None:
        """The env was reset (and settled)."""
        self.now_ns += self.settle_ns
