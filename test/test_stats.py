"""The Wilson interval that `vla-rl eval` reports and `vla-rl plot` draws."""

import pytest

from vla_rl_ros.stats import wilson_interval


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # upper z^2 / (n + z^2)


def test_wilson_interval_needs_an_episode():
    with pytest.raises(ValueError, match="at least one episode"):
        wilson_interval(0, 0)
