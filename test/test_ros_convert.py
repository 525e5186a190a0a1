"""Message conversions the nodes rely on, checked against the sim core they must agree with."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from vla_rl_interfaces.msg import EpisodeResult, Trajectory

from vla_rl_ros.control import SIM_PANDA, RobotConfig
from vla_rl_ros.data import END_REASONS
from vla_rl_ros.rl.records import WITHHELD_REASONS
from vla_rl_ros.ros.convert import MessageError, proprio_from_joint_state, result_from_msg, trajectory_from_msg
from vla_rl_ros.sim import make_env


def test_the_policy_nodes_state_from_joint_states_equals_the_sim_envs_state() -> None:
    """SFT trains on SimEnv's state; in the graph the policy node rebuilds it from joint_states, by the
    robot config's names: the sim's, or a real driver's (the franka_panda example's panda_joint1...)."""
    sim, real = RobotConfig.load(SIM_PANDA), RobotConfig.load(SIM_PANDA.replace("sim_panda", "franka_panda"))
    renamed = dict(zip((*sim.joints, "finger_joint1", "finger_joint2"),
                       (*real.joints, real.gripper.joint, "panda_finger_joint2"), strict=True))
    with make_env("pick_place", cameras=()) as env:
        observation = env.reset(seed=1_000_003)
        gripper = set()
        for _ in range(30):  # past the grasp: the fingers close on the object
            names, q, _ = env.joint_state()
            msg = JointState(name=list(names), position=q.tolist())
            np.testing.assert_array_equal(proprio_from_joint_state(sim, env.kinematics, msg), observation.state)
            msg.name = [renamed[n] for n in names]
            from_driver = proprio_from_joint_state(real, env.kinematics, msg)
            np.testing.assert_array_equal(from_driver[:-1], observation.state[:-1])
            gripper.add(round(float(observation.state[-1]), 2))
            observation = env.step(env.task.expert(env)).observation
        assert len(gripper) > 2  # the gripper state was seen open, closing and closed
    with pytest.raises(MessageError, match=r"lack some of .*panda_joint1"):
        proprio_from_joint_state(real, env.kinematics, JointState(name=list(names), position=q.tolist()))


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


@pytest.mark.parametrize("reward", [float("nan"), float("inf"), -float("inf")])
def test_a_result_whose_reward_is_not_finite_is_refused(reward) -> None:
    """One NaN reward would make its group's advantages, and the whole update, NaN."""
    from nodes.samples import MESSAGES

    bad = copy.deepcopy(MESSAGES["episode_result"])
    bad.reward = reward
    with pytest.raises(MessageError, match=rf"reward={reward}"):
        result_from_msg(bad)


def test_a_withheld_trajectory_becomes_a_record_without_chunks() -> None:
    """The policy node withholds some trajectories and says why, so that the learner closes the group
    without them; the reasons are the message's constants, and a withheld one with chunks is refused."""
    from nodes.samples import MESSAGES

    constants = {getattr(Trajectory, name) for name in dir(Trajectory) if name.startswith("WITHHELD_")}
    assert constants == set(WITHHELD_REASONS)
    notice = MESSAGES["trajectory_withheld"]
    record = trajectory_from_msg(notice)
    assert (record.episode_id, record.withheld, record.num_chunks, record.policy_version) == (
        notice.episode_id, "joined_midway", 0, 12)
    assert trajectory_from_msg(MESSAGES["trajectory"]).withheld == ""
    with_chunks = copy.deepcopy(MESSAGES["trajectory"])
    with_chunks.withheld = Trajectory.WITHHELD_GREEDY
    with pytest.raises(MessageError, match=r"withheld \('greedy'\) but carries chunks"):
        trajectory_from_msg(with_chunks)
    unknown = copy.deepcopy(notice)
    unknown.withheld = "tired"
    with pytest.raises(MessageError, match="withheld='tired'"):
        trajectory_from_msg(unknown)
