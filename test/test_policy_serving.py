"""The policy node's serving core (no ROS): which episodes' trajectories may reach the learner, and
when new weights are swapped in (`SwapGate`)."""

import numpy as np

from vla_rl_ros.policy.serving import ServingState, SwapGate, withheld_reason


def served(state: ServingState, episode_id: str, steps: list[int]):
    log = state.start_episode("arm0", episode_id, "reach the red cube", evaluation=False)
    assert log is None
    log = state.episode("arm0", episode_id)
    for step in steps:
        state.record(log, image=None, state=np.zeros(11), token_ids=np.zeros(16), log_prob=-60.0, step=step,
                     greedy=False)
    return state.end_episode("arm0", episode_id)


def test_only_an_episode_served_from_its_first_chunk_is_a_complete_trajectory():
    """A policy node respawned mid-episode sees the latched EpisodeStart and serves the remaining
    chunks; its log lacks the dead node's chunks, so it must not pass for the whole episode."""
    state = ServingState()
    assert served(state, "e1", [0, 4, 8]).served_from_start
    assert not served(state, "e2", [8, 12, 16]).served_from_start
    assert not served(state, "e3", []).served_from_start


def test_why_a_trajectory_is_withheld_is_said_so_the_learner_can_close_its_group():
    """The learner waits for every member's trajectory: each withheld one goes out as a reason."""
    state = ServingState()
    assert withheld_reason(served(state, "whole", [0, 4]), two_versions=False) == ""
    assert withheld_reason(served(state, "swapped", [0, 4]), two_versions=True) == "two_versions"
    assert withheld_reason(served(state, "midway", [8, 12]), two_versions=False) == "joined_midway"
    assert withheld_reason(served(state, "none", []), two_versions=False) == "no_chunks"
    state.start_episode("arm0", "greedy", "reach the red cube", evaluation=False)
    log = state.episode("arm0", "greedy")
    state.record(log, image=None, state=np.zeros(11), token_ids=np.zeros(16), log_prob=0.0, step=0, greedy=True)
    assert withheld_reason(state.end_episode("arm0", "greedy"), two_versions=False) == "greedy"


def chunk(state: ServingState, log, step: int) -> None:
    state.record(log, image=None, state=np.zeros(11), token_ids=np.zeros(16), log_prob=-60.0, step=step,
                 greedy=False)


def two_arms_under_way() -> tuple[ServingState, SwapGate]:
    """arm0 and arm1 each one chunk into an episode (asked at t=0), an update to v1 pending."""
    state = ServingState()
    gate = SwapGate(state, silent_after_s=10.0)
    for arm in ("arm0", "arm1"):
        state.start_episode(arm, f"{arm}-e1", "reach the red cube", evaluation=False)
        gate.request(arm, now=0.0)
        chunk(state, gate.episode(arm, f"{arm}-e1"), 0)
    state.pending_update = "v1"
    return state, gate


def test_a_swap_waits_for_arms_that_ask_but_not_for_a_silent_one():
    """A dead executor's arm keeps its episode under way until lost_node (60 s); the other arms' next
    episodes must not wait for it that long."""
    state, gate = two_arms_under_way()
    assert not gate.swap_due(now=5.0)
    gate.request("arm0", now=9.0)  # arm0 is alive; arm1 (its executor killed) asks no more
    assert not gate.swap_due(now=12.0)  # arm0's episode is still under way: waited for as ever
    chunk(state, gate.episode("arm0", "arm0-e1"), 4)
    assert gate.ended("arm0-e1") is False and state.end_episode("arm0", "arm0-e1") is not None
    assert not gate.swap_due(now=9.9)  # arm1 has been quiet for 9.9 s only
    assert gate.swap_due(now=10.0)
    behind = gate.swapped(1, "digest-v1")
    assert [log.episode_id for log in behind] == ["arm1-e1"] and state.version == 1


def test_a_silent_arm_that_comes_back_finishes_on_the_new_weights_and_is_withheld():
    """Its episode has chunks of v0; served by v1 from now on, its trajectory would mix two versions."""
    state, gate = two_arms_under_way()
    state.end_episode("arm0", "arm0-e1")
    assert gate.swap_due(now=10.0)
    gate.swapped(1, "digest-v1")
    gate.request("arm1", now=30.0)  # a respawned executor rejoins its latched episode
    log = gate.episode("arm1", "arm1-e1")
    assert (log.policy_version, log.steps) == (1, []) and state.may_serve(log)
    chunk(state, log, 0)
    assert gate.episode("arm1", "arm1-e1") is log  # restarted once only
    assert gate.ended("arm1-e1") is True
    # The arm's next episode is whole again.
    state.start_episode("arm1", "arm1-e2", "reach the red cube", evaluation=False)
    chunk(state, gate.episode("arm1", "arm1-e2"), 0)
    assert gate.ended("arm1-e2") is False


def test_an_episode_left_behind_that_never_asks_again_keeps_its_trajectory():
    """An arm passed over while it waited for its last verdict: every chunk came from v0."""
    state, gate = two_arms_under_way()
    state.end_episode("arm0", "arm0-e1")
    gate.swapped(1, "digest-v1")
    log = state.end_episode("arm1", "arm1-e1")
    assert gate.ended("arm1-e1") is False and (log.policy_version, log.steps) == (0, [0])


def test_updates_taken_are_newer_or_another_checkpoint_of_a_resumed_learner():
    state = ServingState()
    gate = SwapGate(state)
    assert gate.wanted(3, "d3")
    gate.swapped(3, "d3")
    assert not gate.wanted(3, "d3")  # the latched update served, delivered again
    assert not gate.wanted(2, "d3")
    assert gate.wanted(4, "d4")
    # The learner died after publishing v3 and resumed from its checkpoint of update 2: its v2 and its
    # next v3 are other weights than those served.
    assert gate.wanted(2, "d2-again") and gate.wanted(3, "d3-again")
