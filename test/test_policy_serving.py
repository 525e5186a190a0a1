"""The policy node's serving core (no ROS): which episodes' trajectories may reach the learner."""

import numpy as np

from vla_rl_ros.policy.serving import ServingState


def served(state: ServingState, episode_id: str, steps: list[int]):
    log = state.start_episode("arm0", episode_id, "reach the red cube", evaluation=False)
    assert log is None
    log = state.episode("arm0", episode_id)
    for step in steps:
        state.record(log, image=None, state=np.zeros(11), token_ids=np.zeros(16), log_prob=-60.0, step=step)
    return state.end_episode("arm0", episode_id)


def test_only_an_episode_served_from_its_first_chunk_is_a_complete_trajectory():
    """A policy node respawned mid-episode sees the latched EpisodeStart and serves the remaining
    chunks; its log lacks the dead node's chunks, so it must not pass for the whole episode."""
    state = ServingState()
    assert served(state, "e1", [0, 4, 8]).served_from_start
    assert not served(state, "e2", [8, 12, 16]).served_from_start
    assert not served(state, "e3", []).served_from_start
