"""Message conversions the nodes rely on, checked against the sim core they must agree with."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from vla_rl_interfaces.msg import EpisodeResult

from vla_rl_ros.data import END_REASONS
from vla_rl_ros.ros.convert import MessageError, proprio_from_joint_state, result_from_msg, trajectory_from_msg
from vla_rl_ros.sim import make_env


def test_the_policy_nodes_state_from_joint_states_equals_the_sim_envs_state() -> None:
    """SFT trains on SimEnv's state; in the graph the policy node rebuilds it from joint_states."""
    with make_env("pick_place", cameras=()) as env:
        observation = env.reset(seed=1_000_003)
        for _ in range(12):
            names, q, _ = env.joint_state()
            from_msg = proprio_from_joint_state(env.kinematics, JointState(name=list(names), position=q.tolist()))
            np.testing.assert_allclose(from_msg, observation.state, atol=1e-6)
            observation = env.step(env.task.expert(env)).observation


def test_the_datasets_end_reasons_are_the_episode_results_constants() -> None:
    """A result's end_reason goes into the dataset and the learner's buffer, which validate it."""
    constants = {getattr(EpisodeResult, name) for name in dir(EpisodeResult) if name.startswith("END_")}
    assert constants == set(END_REASONS)


def test_the_settings_that_must_agree_travel_with_the_learners_records() -> None:
    """The sampling temperature and the scheduled group size reach the learner with each episode; a message
    that leaves them unset (0) is refused, not given a default that may differ from what was used."""
    from nodes.samples import MESSAGES

    trajectory, result = MESSAGES["trajectory"], MESSAGES["episode_result"]
    assert trajectory_from_msg(trajectory).temperature == 1.25
    assert result_from_msg(result).group_size == 8
    unset = copy.deepcopy(trajectory)
    unset.temperature = 0.0
    with pytest.raises(MessageError, match=r"temperature=0\.0"):
        trajectory_from_msg(unset)
    ungrouped = copy.deepcopy(result)
    ungrouped.group_size = 0
    with pytest.raises(MessageError, match="group_size=0"):
        result_from_msg(ungrouped)
    ungrouped.evaluation = True  # evaluation episodes belong to no group
    assert result_from_msg(ungrouped).group_size == 0
