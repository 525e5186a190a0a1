"""Commands from action rows: IK from the measured joints, the workspace box, joint and step limits,
and a property test: no chunk, however adversarial, yields a command outside box or limits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_rl_ros.control import SIM_PANDA, ChunkIn, Commander, CommandOut, ExecutorCore, RobotConfig, make_kinematics
from vla_rl_ros.control.command import (
    CLAMP_JOINT_LIMITS,
    CLAMP_JOINT_STEP,
    CLAMP_TRANSLATION,
    CLAMP_WORKSPACE,
    HOLD_WORKSPACE,
)
from vla_rl_ros.control.homing import Homing
from vla_rl_ros.sim import make_env

ROBOT = RobotConfig.load(SIM_PANDA)
FRANKA = RobotConfig.load(SIM_PANDA.replace("sim_panda", "franka_panda"))
JOINT_ROBOT = RobotConfig.load(SIM_PANDA).__class__(**{**ROBOT.__dict__, "action_mode": "joint_position"})
EPS = 1e-9


@pytest.fixture(scope="module")
def commander() -> Commander:
    return Commander(ROBOT, make_kinematics(ROBOT))


def test_ee_delta_moves_the_tcp_by_the_delta_and_holds_orientation(commander: Commander) -> None:
    q = commander.kinematics.home
    pos, quat = commander.kinematics.fk(q)
    cmd = commander.command(q, np.array([0.02, -0.01, 0.03, 1.0]))
    new_pos, new_quat = commander.kinematics.fk(cmd.arm)
    np.testing.assert_allclose(new_pos - pos, [0.02, -0.01, 0.03], atol=1e-3)
    assert abs(abs(float(np.dot(new_quat, quat))) - 1) < 1e-5
    assert cmd.gripper == ROBOT.gripper.closed and not cmd.clamped
    assert commander.positions(cmd).shape == (8,)


def test_matches_the_sim_core_for_the_same_state_and_action(commander: Commander) -> None:
    """The executor and the core env turn a delta into the same joints (one IK, one set of limits)."""
    env = make_env("reach", cameras=(), action_mode="joint_position")
    env.reset(0)
    q = env.data.qpos[env.kinematics.qpos_adr].copy()
    for action in ([0.04, 0.0, -0.02, 0.0], [0.2, -0.3, 0.1, 1.0]):
        cmd = commander.command(q, np.array(action))
        joint_action = env.from_ee_action(np.array(action, dtype=np.float32))  # the core's IK target
        expected = env.kinematics.clamp(q, joint_action[:-1], env.config.control_dt)  # and its speed limit
        np.testing.assert_allclose(cmd.arm, expected, atol=1e-5)
        assert cmd.gripper == pytest.approx(ROBOT.gripper.position(action[-1]))


def test_large_deltas_are_clipped_per_axis_and_to_the_box(commander: Commander) -> None:
    q = commander.kinematics.home
    pos = commander.kinematics.fk(q)[0]
    cmd = commander.command(q, np.array([1e9, 0.0, -1e9, 7.0]))
    new_pos = commander.kinematics.fk(cmd.arm)[0]
    assert CLAMP_TRANSLATION in cmd.clamped
    np.testing.assert_allclose(new_pos - pos, [ROBOT.max_translation, 0, -ROBOT.max_translation], atol=2e-3)
    assert cmd.gripper == ROBOT.gripper.closed  # closure clipped to 1
    # at the box's floor, a downward delta is clipped to the box
    low = commander.command(q, np.array([0.0, 0.0, -0.05, 0.0]))
    for _ in range(12):
        low = commander.command(low.arm, np.array([0.0, 0.0, -0.05, 0.0]))
    assert CLAMP_WORKSPACE in low.clamped
    assert commander.kinematics.fk(low.arm)[0][2] >= ROBOT.workspace.low[2] - ROBOT.workspace.tolerance


def test_joint_targets_are_limited_to_one_step_from_the_measured_joints() -> None:
    commander = Commander(JOINT_ROBOT, make_kinematics(JOINT_ROBOT))
    q = commander.kinematics.home
    cmd = commander.command(q, np.array([*(q + 1.0), 0.5]))
    assert CLAMP_JOINT_STEP in cmd.clamped
    np.testing.assert_allclose(np.abs(cmd.arm - q), np.minimum(commander.max_step, np.abs(
        np.clip(q + 1.0, commander.lower, commander.upper) - q)))
    assert cmd.gripper == pytest.approx(0.04)  # binary gripper: 0.5 is not above the threshold, it stays open
    assert commander.command(q, np.array([*q, 0.51])).gripper == pytest.approx(0.0)
    proportional = dataclasses.replace(JOINT_ROBOT, gripper=dataclasses.replace(JOINT_ROBOT.gripper, binary=False))
    assert Commander(proportional, make_kinematics(proportional)).command(q, np.array([*q, 0.5])).gripper == \
        pytest.approx(0.02)


def test_a_command_leaving_the_box_holds_the_arm() -> None:
    commander = Commander(JOINT_ROBOT, make_kinematics(JOINT_ROBOT))
    forward = np.array([0, 0.2, 0, 0.2, 0, 0, 0])  # shoulder and elbow forward and down
    target = commander.kinematics.home
    for _ in range(20):  # until the TCP would pass the box floor
        target = commander.command(target, np.append(target + forward, 0.0)).arm
    cmd = commander.command(target, np.append(target + forward, 0.0))
    assert HOLD_WORKSPACE in cmd.clamped
    np.testing.assert_array_equal(cmd.arm, target)


def test_a_hold_does_not_send_an_overshot_joint_back_past_its_limit() -> None:
    """A hold sends the measured joints back as the command: one that overshot a limit (0.6 mrad in a
    normal run) must not be sent back past it."""
    commander = Commander(JOINT_ROBOT, make_kinematics(JOINT_ROBOT))
    forward = np.array([0, 0.2, 0, 0.2, 0, 0, 0])
    q = commander.kinematics.home
    for _ in range(20):  # until the TCP would pass the box floor
        q = commander.command(q, np.append(q + forward, 0.0)).arm
    q[6] = commander.upper[6] + 6e-4  # the flange joint overshot its upper limit (the TCP lies on its axis)
    cmd = commander.command(q, np.append(q + forward, 0.0))
    assert HOLD_WORKSPACE in cmd.clamped and CLAMP_JOINT_LIMITS in cmd.clamped
    np.testing.assert_array_equal(cmd.arm, np.clip(q, commander.lower, commander.upper))


def test_a_joint_past_its_limit_steps_back_no_faster_than_the_step_limit() -> None:
    """Within joint_limit_margin (0.05 rad) a joint may be measured past its limit; clipping it to the
    limit last moved it there in one period, past a max_joint_step smaller than the margin."""
    slow = dataclasses.replace(JOINT_ROBOT, max_joint_step=0.02)
    commander = Commander(slow, make_kinematics(slow))
    q = commander.kinematics.home.copy()
    q[3] = commander.upper[3] + 0.045
    for target in (q, q + 0.5):  # stay, or move every joint further up: joint4 can only come back
        cmd = commander.command(q, np.append(target, 0.0))
        assert {CLAMP_JOINT_LIMITS, CLAMP_JOINT_STEP} <= cmd.clamped
        assert cmd.arm[3] == pytest.approx(q[3] - 0.02)
        assert np.all(np.abs(cmd.arm - q) <= commander.max_step + EPS)
    home = Homing(slow, tolerance=0.02).command(q)  # homing goes through the same limits
    assert home.arm[3] == pytest.approx(q[3] - 0.02) and np.all(np.abs(home.arm - q) <= 0.02 + EPS)


@pytest.mark.parametrize("robot", [ROBOT, FRANKA], ids=["sim_panda", "franka_panda"])
def test_a_4d_action_turns_the_tcp_home_no_faster_than_max_rotation(robot: RobotConfig) -> None:
    """A 4-D ee_delta action holds the home orientation. From a wrist turned elsewhere (an episode started
    by hand from where the arm is) a zero action turned it back in one step, past max_rotation."""
    commander = Commander(robot, make_kinematics(robot))
    q = commander.home.copy()
    q[4] += 0.6
    q[6] += 0.8
    turns = []
    for _ in range(60):
        cmd = commander.command(q, np.zeros(4))
        turns.append(angle_between(commander.kinematics.fk(q)[1], commander.kinematics.fk(cmd.arm)[1]))
        q = cmd.arm
    assert max(turns) <= robot.max_rotation + 0.01, turns
    assert angle_between(commander.kinematics.fk(q)[1], commander.home_quat) < 0.01  # and it got there


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (rad) between two wxyz quaternions."""
    return 2 * float(np.arccos(min(1.0, abs(float(np.dot(a, b))))))


def test_a_measured_state_is_out_of_limits_only_beyond_the_margin(commander: Commander) -> None:
    q = commander.kinematics.home.copy()
    assert commander.outside_limits(q, 0.05) == ""
    q[1] = commander.lower[1] - 0.04  # an overshoot
    assert commander.outside_limits(q, 0.05) == ""
    q[1] = commander.lower[1] - 0.06
    assert commander.outside_limits(q, 0.05).startswith("joint2 measured at ")


# ---------------------------------------------------------------- property test
ADVERSARIAL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([1e9, -1e9, np.nan, np.inf, -np.inf, 0.0, 1.0]),
    st.floats(-0.1, 0.1),
)
# where the measured joints lie in their ranges: some past a limit, by up to the executor's joint_limit_margin
JOINT_FRACTIONS = st.lists(st.floats(-0.05, 1.05), min_size=7, max_size=7)
OVERSHOOT = 0.049


@st.composite
def chunk_messages(draw: st.DrawFn, episode_id: str, request_id: int, action_dim: int) -> ChunkIn:
    """Mostly well-formed chunks full of adversarial numbers; some malformed or for the wrong episode."""
    C = draw(st.integers(1, 6))
    A = draw(st.sampled_from([action_dim, action_dim, 4, 7, 8, 0, 3]))
    length = draw(st.sampled_from([C * A, C * A, C * A + 1, max(C * A - 1, 0)]))
    values = draw(st.lists(ADVERSARIAL, min_size=length, max_size=length))
    return ChunkIn(
        episode_id=draw(st.sampled_from([episode_id, episode_id, episode_id, "other", ""])),
        request_id=draw(st.sampled_from([request_id, request_id, request_id, request_id + 1, 0])),
        policy_version=draw(st.integers(0, 5)), chunk_size=C, action_dim=A,
        action_mode=draw(st.sampled_from(["", ROBOT.action_mode, "joint_position"])),
        actions=np.array(values, dtype=np.float32), stamp_ns=draw(st.sampled_from([0, 10**8]))
    )


def assert_safe(commander: Commander, q_meas: np.ndarray, out: CommandOut) -> None:
    q = out.command.arm
    assert np.all(np.isfinite(q))

    def beyond(x: np.ndarray) -> np.ndarray:  # (J,) rad past a limit, 0 inside
        return np.maximum(0.0, np.maximum(commander.lower - x, x - commander.upper))

    assert np.all(beyond(q) <= beyond(q_meas) + EPS)  # inside the limits, or closer to them than measured
    assert np.all(np.abs(q - q_meas) <= commander.max_step + EPS)
    ws = commander.robot.workspace
    outside = ws.distance(commander.kinematics.fk(q)[0])
    assert outside <= ws.tolerance or outside <= ws.distance(commander.kinematics.fk(q_meas)[0]) + EPS
    g = commander.robot.gripper
    assert min(g.open, g.closed) <= out.command.gripper <= max(g.open, g.closed)


@pytest.mark.parametrize("robot", [ROBOT, JOINT_ROBOT], ids=["ee_delta", "joint_position"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), fractions=JOINT_FRACTIONS)
def test_no_chunk_ever_yields_a_command_outside_box_or_limits(robot: RobotConfig, data: st.DataObject,
                                                             fractions: list[float]) -> None:
    commander = COMMANDERS[robot.action_mode]
    q = np.clip(commander.lower + np.array(fractions) * (commander.upper - commander.lower),
                commander.lower - OVERSHOOT, commander.upper + OVERSHOOT)  # any measured pose the executor takes
    core = ExecutorCore(commander)
    core.start_episode("ep", greedy=False, max_steps=0, stamp_ns=0)
    names = [*robot.joints, robot.gripper.joint]
    stamp = 0
    core.joint_state(names, [*q, 0.0], stamp, now=0.0)
    (request,) = core.advance(0.0)
    chunk = data.draw(chunk_messages("ep", request.request_id, robot.action_dims[0]))
    rejection = core.chunk(chunk)
    valid = (chunk.episode_id == "ep" and chunk.request_id == request.request_id
             and chunk.action_mode in ("", robot.action_mode) and chunk.action_dim in robot.action_dims
             and chunk.actions.size == chunk.chunk_size * chunk.action_dim and np.all(np.isfinite(chunk.actions)))
    assert (rejection is None) == bool(valid), rejection
    for _ in range(chunk.chunk_size + 1):
        outs = [o for o in core.advance(0.0) if isinstance(o, CommandOut)]
        if rejection is not None:
            assert not outs  # an invalid chunk never produces a command
            continue
        for out in outs:
            assert_safe(commander, q, out)
            q = out.command.arm  # the arm reaches the command; the next step starts there
        stamp += core.period_ns
        core.joint_state(names, [*q, 0.0], stamp, now=0.0)
    assert core.commands_sent == (0 if rejection else chunk.chunk_size)


COMMANDERS = {r.action_mode: Commander(r, make_kinematics(r)) for r in (ROBOT, JOINT_ROBOT)}
