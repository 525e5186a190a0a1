"""Statistics shared by evaluation (`vla-rl eval`) and the run plot (`vla-rl plot`): one Wilson
interval, so a report's interval and the plotted band are the same numbers. Plain Python, no numpy."""

from __future__ import annotations

import math

Z_95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; sane at 0 and n successes, unlike p +- z*se."""
    if n <= 0:
        raise ValueError(f"n={n}: an interval needs at least one episode")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half
