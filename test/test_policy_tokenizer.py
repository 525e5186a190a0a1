"""Action tokenizer: round trip within half a bin, edges (clip, NaN, constant dims), persistence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_rl_ros.policy import N_BINS, ActionTokenizer

TOKENIZER = ActionTokenizer(low=(-0.02, -0.05, 0.0), high=(0.02, 0.05, 1.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_round_trip_is_within_half_a_bin(unit):
    low, high = np.array(TOKENIZER.low), np.array(TOKENIZER.high)
    action = low + np.array(unit) * (high - low)  # inside the bounds, ends included
    back = TOKENIZER.decode(TOKENIZER.encode(action))
    assert np.all(np.abs(back - action) <= TOKENIZER.bin_width / 2 + 1e-7)


def test_bins_cover_the_full_range_and_decode_inside_the_bounds():
    bins = TOKENIZER.encode(np.array([TOKENIZER.low, TOKENIZER.high]))
    assert bins.tolist() == [[0, 0, 0], [N_BINS - 1] * 3]
    decoded = TOKENIZER.decode(np.arange(N_BINS)[:, None].repeat(3, 1))
    assert np.all(decoded > np.array(TOKENIZER.low)) and np.all(decoded < np.array(TOKENIZER.high))


def test_out_of_bounds_values_clip_to_the_end_bins():
    bins = TOKENIZER.encode(np.array([[-5.0, 9.0, -1.0], [5.0, -9.0, 2.0]]))
    assert bins.tolist() == [[0, N_BINS - 1, 0], [N_BINS - 1, 0, N_BINS - 1]]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_actions_are_rejected_naming_the_dimension(bad):
    with pytest.raises(ValueError, match=r"dimensions \[1\]"):
        TOKENIZER.encode(np.array([0.0, bad, 0.5]))


def test_constant_dimension_round_trips_exactly_without_dividing_by_zero():
    demos = np.stack([np.linspace(-1, 1, 50), np.full(50, 0.3)], axis=1)
    tok = ActionTokenizer.fit(demos)
    with np.errstate(all="raise"):  # a division by a zero width would raise here
        back = tok.decode(tok.encode(np.array([[0.5, 0.3], [0.5, 7.0]])))
    assert back[:, 1] == pytest.approx([0.3, 0.3])


def test_fit_uses_the_1st_and_99th_percentiles():
    demos = np.concatenate([np.linspace(0, 1, 1001), [100.0]])[:, None]  # one outlier
    tok = ActionTokenizer.fit(demos)
    assert tok.low[0] == pytest.approx(np.percentile(demos, 1))
    assert tok.high[0] == pytest.approx(np.percentile(demos, 99))
    assert tok.high[0] < 2.0  # the outlier did not stretch the bins


def test_wrong_shapes_and_bins_are_rejected():
    with pytest.raises(ValueError, match="last dimension of 3"):
        TOKENIZER.encode(np.zeros(4))
    with pytest.raises(ValueError, match="bins must lie in"):
        TOKENIZER.decode(np.array([0, 256, 0]))
    with pytest.raises(ValueError, match="swap the bounds"):
        ActionTokenizer(low=(1.0,), high=(0.0,))


def test_json_round_trip(tmp_path):
    TOKENIZER.save(tmp_path / "bounds.json")
    assert ActionTokenizer.load(tmp_path / "bounds.json") == TOKENIZER
