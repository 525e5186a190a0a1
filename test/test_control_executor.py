"""The executor's control loop on plain events: requests, lockstep commands, holds and their reasons."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.control import (
    ERRORS,
    SENSOR_FAULTS,
    SIM_PANDA,
    ChunkIn,
    Commander,
    CommandOut,
    ExecutorConfig,
    ExecutorCore,
    Hold,
    RejectReason,
    RequestOut,
    RobotConfig,
    make_kinematics,
)

ROBOT = RobotConfig.load(SIM_PANDA)
COMMANDER = Commander(ROBOT, make_kinematics(ROBOT))
NAMES = [*ROBOT.joints, "finger_joint1", "finger_joint2"]
HOME = [*COMMANDER.kinematics.home, 0.04, 0.04]
PERIOD = round(ROBOT.period * 1e9)
UP = [0.0, 0.0, 0.01, 0.0]  # 1 cm up, gripper open


def chunk(request: RequestOut, rows: list[list[float]], **change) -> ChunkIn:
    fields = dict(episode_id=request.episode_id, request_id=request.request_id, policy_version=3,
                  chunk_size=len(rows), action_dim=len(rows[0]), action_mode="ee_delta",
                  actions=np.array(rows, dtype=np.float32).ravel(), stamp_ns=request.stamp_ns)
    return ChunkIn(**{**fields, **change})


def commands(outs: list) -> list[CommandOut]:
    return [o for o in outs if isinstance(o, CommandOut)]


def requests(outs: list) -> list[RequestOut]:
    return [o for o in outs if isinstance(o, RequestOut)]


def started(config: ExecutorConfig | None = None, max_steps: int = 0) -> tuple[ExecutorCore, RequestOut]:
    core = ExecutorCore(COMMANDER, config)
    assert core.advance(0.0) == [] and core.hold is Hold.NO_EPISODE
    core.start_episode("ep0", greedy=True, max_steps=max_steps, stamp_ns=0)
    assert core.advance(0.0) == [] and core.hold is Hold.NO_JOINT_STATES
    core.start_episode("ep1", greedy=True, max_steps=max_steps, stamp_ns=5 * PERIOD)
    core.joint_state(NAMES, HOME, 4 * PERIOD, now=0.0)  # from before the reset
    assert core.advance(0.0) == [] and core.hold is Hold.WAITING_FOR_STATE
    core.joint_state(NAMES, HOME, 5 * PERIOD, now=0.0)
    (request,) = core.advance(0.0)
    assert request == RequestOut("ep1", 1, 0, True, 5 * PERIOD)
    assert core.hold is Hold.WAITING_FOR_CHUNK
    return core, request


def test_lockstep_one_command_per_fresh_joint_state_then_the_next_request() -> None:
    core, request = started()
    assert core.chunk(chunk(request, [UP, UP])) is None
    (first,) = core.advance(0.0)
    assert isinstance(first, CommandOut) and first.step == 0 and first.stamp_ns == 5 * PERIOD
    assert core.advance(0.0) == [] and core.hold is Hold.EXECUTING
    core.joint_state(NAMES, HOME, 5 * PERIOD + PERIOD // 2, now=0.05)  # mid-period: not yet
    assert core.advance(0.05) == []
    core.joint_state(NAMES, HOME, 6 * PERIOD, now=0.1)
    (second,) = core.advance(0.1)
    assert second.step == 1
    core.joint_state(NAMES, HOME, 7 * PERIOD, now=0.2)
    (nxt,) = core.advance(0.2)  # after the last step: the policy sees the state after it
    assert nxt == RequestOut("ep1", 2, 2, True, 7 * PERIOD)
    assert core.status()["policy_version"] == "3" and core.status()["commands_sent"] == "2"


def test_a_stamp_a_nanosecond_short_of_the_period_still_steps_the_lockstep() -> None:
    """A float sim clock once stamped step 10,635 99,999,999 ns after step 10,634; waiting for a full
    period then stalled the loop for good. Stamps within a quarter period count as on time."""
    core, request = started()
    core.chunk(chunk(request, [UP, UP, UP]))
    assert len(commands(core.advance(0.0))) == 1
    core.joint_state(NAMES, HOME, 6 * PERIOD - 1, now=0.1)
    (second,) = commands(core.advance(0.1))
    assert second.step == 1
    core.joint_state(NAMES, HOME, 7 * PERIOD, now=0.2)  # the next boundary is on the grid, not 1 ns earlier
    (third,) = commands(core.advance(0.2))
    assert third.step == 2


def test_a_fast_driver_gets_one_command_per_period_however_early_it_stamps() -> None:
    """A real arm's driver publishes joint states at 1 kHz: the jitter tolerance must not raise the rate."""
    core, request = started()
    core.chunk(chunk(request, [UP] * 30))
    sent = []
    for ms in range(1, 2001):  # 2 s of a 1 kHz joint_states stream after the episode's first state
        stamp = 5 * PERIOD + ms * 1_000_000
        core.joint_state(NAMES, HOME, stamp, now=ms / 1000)
        sent += [stamp for _ in commands(core.advance(ms / 1000))]
    # 10 Hz, as the robot config says: only the second command may come early, by at most a quarter period
    gaps = np.diff(sent)
    assert len(gaps) >= 19 and gaps[0] >= 3 * PERIOD // 4 and set(gaps[1:]) == {PERIOD}


def test_request_ahead_overlaps_the_policy_with_the_current_chunk() -> None:
    core, request = started(ExecutorConfig(request_ahead_steps=1))
    core.chunk(chunk(request, [UP, UP, UP]))
    stamp = 5 * PERIOD
    seen = []
    for _ in range(3):
        seen.append(core.advance(0.0))
        stamp += PERIOD
        core.joint_state(NAMES, HOME, stamp, now=0.0)
    assert [len(commands(o)) for o in seen] == [1, 1, 1]
    assert [r.step for o in seen for r in requests(o)] == [3]  # sent with the last command of the chunk
    (ahead,) = requests(seen[2])
    assert core.chunk(chunk(ahead, [UP])) is None
    (cmd,) = commands(core.advance(0.0))  # the next chunk follows without a gap
    assert cmd.step == 3


def test_invalid_chunks_are_rejected_with_their_reason_and_the_arm_holds() -> None:
    core, request = started()
    bad = {
        RejectReason.NON_FINITE: chunk(request, [[0.0, np.nan, 0.0, 0.0]]),
        RejectReason.BAD_SHAPE: chunk(request, [UP], chunk_size=2),
        RejectReason.WRONG_EPISODE: chunk(request, [UP], episode_id="ep0"),
        RejectReason.UNREQUESTED: chunk(request, [UP], request_id=7),
        RejectReason.STALE: chunk(request, [UP], stamp_ns=request.stamp_ns - 1),
        RejectReason.WRONG_MODE: chunk(request, [UP], action_mode="joint_position"),
    }
    for reason, msg in bad.items():
        rejection = core.chunk(msg)
        assert rejection is not None and rejection.reason is reason, (reason, rejection)
        assert commands(core.advance(0.0)) == [] and core.hold is Hold.WAITING_FOR_CHUNK
    status = core.status()
    assert all(status[f"rejected/{r.value}"] == "1" for r in bad)
    assert core.chunk(chunk(request, [UP])) is None  # the request is still outstanding
    assert len(commands(core.advance(0.0))) == 1


def test_estop_latches_until_released_and_drops_the_plan() -> None:
    core, request = started()
    core.chunk(chunk(request, [UP, UP, UP]))
    assert len(commands(core.advance(0.0))) == 1
    assert core.estop() and not core.estop()
    core.joint_state(NAMES, HOME, 6 * PERIOD, now=0.1)
    assert core.advance(0.1) == [] and core.hold is Hold.ESTOP
    assert core.chunk(chunk(request, [UP])).reason is RejectReason.ESTOP
    assert core.release() == (True, "e-stop released; the next chunk is requested from the current state")
    assert core.release()[0] is False
    (fresh,) = core.advance(0.1)  # the rest of the old chunk is gone: ask again from the current state
    assert isinstance(fresh, RequestOut) and fresh.step == 1 and fresh.request_id == 2
    assert core.chunk(chunk(request, [UP])).reason is RejectReason.UNREQUESTED


def test_watchdogs_hold_on_stale_joint_states_and_images() -> None:
    core = ExecutorCore(COMMANDER, ExecutorConfig(joint_state_timeout_s=0.5, image_timeout_s=0.3))
    core.start_episode("ep1", greedy=True, max_steps=0, stamp_ns=5 * PERIOD)
    core.joint_state(NAMES, HOME, 5 * PERIOD, now=0.0)
    assert core.advance(0.0) == [] and core.hold is Hold.STALE_IMAGE  # no image yet
    core.image(now=0.0)
    (request,) = core.advance(0.1)
    core.chunk(chunk(request, [UP, UP]))
    assert len(commands(core.advance(0.1))) == 1
    core.joint_state(NAMES, HOME, 6 * PERIOD, now=0.2)
    core.image(now=0.2)
    assert core.advance(0.8) == [] and core.hold is Hold.STALE_JOINT_STATES
    core.joint_state(NAMES, HOME, 6 * PERIOD, now=0.8)
    assert core.advance(0.8) == [] and core.hold is Hold.STALE_IMAGE
    core.image(now=0.8)
    assert len(commands(core.advance(0.8))) == 1


def test_a_joint_state_far_outside_the_limits_is_a_sensor_fault_and_nothing_is_commanded() -> None:
    """A spoofed message or a driver publishing degrees: finite, but no command may be computed from it
    (it once gave commands of 1000 rad while /diagnostics said OK)."""
    core, request = started()
    core.chunk(chunk(request, [UP] * 5))
    assert len(commands(core.advance(0.0))) == 1
    spoofed = list(HOME)
    spoofed[3] = 1000.0
    degrees = [*np.degrees(HOME[:7]), 0.04, 0.04]
    for k, bad in enumerate((spoofed, degrees), start=6):
        assert core.joint_state(NAMES, bad, k * PERIOD, now=0.1 * k) is None  # kept: the arm holds on it
        assert core.advance(0.1 * k) == [] and core.hold is Hold.OUT_OF_LIMITS
    assert core.hold in SENSOR_FAULTS and core.hold in ERRORS  # the manager aborts it; /diagnostics ERROR
    assert core.status()["hold_detail"] == core.hold_detail
    # /diagnostics says why: the joint furthest out, and the margin
    assert "joint4 measured at -135 rad" in core.hold_detail and "joint_limit_margin 0.05 rad" in core.hold_detail
    assert core.commands_sent == 1 and core.status()["hold"] == "joint_state_out_of_limits"
    core.end_episode("ep1")  # nor does homing command from it
    assert core.go_home(0.8) == (False, f"joint_states outside the joint limits: {core.hold_detail}")
    assert core.advance(0.8) == []


def test_a_joint_state_that_overshot_a_limit_within_the_margin_is_commanded_back_inside() -> None:
    core, request = started()
    core.chunk(chunk(request, [UP, UP]))
    assert len(commands(core.advance(0.0))) == 1
    overshot = list(HOME)
    overshot[6] = COMMANDER.upper[6] + 6e-4  # a controller's overshoot: 0.6 mrad past joint7's upper limit
    core.joint_state(NAMES, overshot, 6 * PERIOD, now=0.1)
    (cmd,) = commands(core.advance(0.1))
    assert np.all(cmd.command.arm >= COMMANDER.lower) and np.all(cmd.command.arm <= COMMANDER.upper)
    # homing too: the arm steps home from the overshot state inside the limits
    core.end_episode("ep1")
    core.joint_state(NAMES, overshot, 7 * PERIOD, now=0.2)
    assert core.go_home(0.2) == (True, "sending the arm home")
    (home,) = commands(core.advance(0.2))
    assert np.all(home.command.arm >= COMMANDER.lower) and np.all(home.command.arm <= COMMANDER.upper)


def test_a_late_joint_state_is_refused_and_a_restarted_clock_is_taken_once_the_old_one_is_stale() -> None:
    """A joint state stamped before the newest one (a late message, a second publisher) would have made a
    command due at once from where the arm was: a step back, beyond the step limit from where it is."""
    core, request = started()
    core.chunk(chunk(request, [UP] * 10))
    assert len(commands(core.advance(0.0))) == 1
    moved = list(HOME)
    moved[0] += 0.2
    core.joint_state(NAMES, moved, 6 * PERIOD, now=0.1)
    assert len(commands(core.advance(0.1))) == 1
    why = core.joint_state(NAMES, HOME, 5 * PERIOD + PERIOD // 2, now=0.15)
    assert why is not None and "stamped 50.0 ms before the newest one" in why
    assert core.advance(0.15) == [] and core.hold is Hold.EXECUTING  # the period still runs from the newest
    core.joint_state(NAMES, moved, 7 * PERIOD, now=0.2)
    (cmd,) = commands(core.advance(0.2))
    assert cmd.stamp_ns == 7 * PERIOD and abs(cmd.command.arm[0] - moved[0]) <= COMMANDER.max_step[0]
    # A sim restarted from time zero: refused while the old clock's states are fresh, taken once they are stale.
    assert core.joint_state(NAMES, HOME, PERIOD, now=0.3) is not None
    stale = 0.2 + core.config.joint_state_timeout_s + 0.01
    assert core.joint_state(NAMES, HOME, PERIOD, now=stale) is None
    assert core.advance(stale) == [] and core.hold is Hold.WAITING_FOR_STATE  # its episode began later
    core.start_episode("ep2", greedy=True, max_steps=0, stamp_ns=PERIOD)
    (request,) = core.advance(stale)
    core.chunk(chunk(request, [UP]))
    (cmd,) = commands(core.advance(stale))
    assert cmd.stamp_ns == PERIOD


def test_an_episode_whose_result_came_first_is_not_started() -> None:
    """A restarted executor gets the manager's latched results and the latched start of the last episode,
    in no particular order: it must not run an episode that has ended."""
    core = ExecutorCore(COMMANDER)
    core.joint_state(NAMES, HOME, 5 * PERIOD, now=0.0)
    assert not core.end_episode("ep1")  # not running here: remembered
    assert not core.start_episode("ep1", greedy=True, max_steps=0, stamp_ns=0) and core.has_ended("ep1")
    assert core.advance(0.0) == [] and core.hold is Hold.NO_EPISODE
    assert core.start_episode("ep2", greedy=True, max_steps=0, stamp_ns=0)  # the next one runs
    assert requests(core.advance(0.0))


def test_chunk_timeout_requests_again_and_refuses_the_late_answer() -> None:
    core, request = started(ExecutorConfig(chunk_timeout_s=2.0))
    assert core.advance(1.0) == []
    core.joint_state(NAMES, HOME, 5 * PERIOD, now=2.5)  # the same state, fresh (a lockstep sim idles)
    (again,) = core.advance(2.5)
    assert again.request_id == 2 and again.step == 0 and core.hold is Hold.CHUNK_TIMEOUT
    assert core.status()["chunk_timeouts"] == "1"
    assert core.chunk(chunk(request, [UP])).reason is RejectReason.UNREQUESTED
    assert core.chunk(chunk(again, [UP])) is None


def test_episode_end_step_limit_and_redelivered_start() -> None:
    core, request = started(max_steps=2)
    assert not core.start_episode("ep1", greedy=True, max_steps=2, stamp_ns=0)  # latched re-delivery
    core.chunk(chunk(request, [UP, UP, UP]))
    stamp = 5 * PERIOD
    for _ in range(3):
        outs = core.advance(0.0)
        assert not requests(outs)  # no chunk is requested beyond the step limit
        stamp += PERIOD
        core.joint_state(NAMES, HOME, stamp, now=0.0)
    assert core.step == 2 and core.hold is Hold.MAX_STEPS
    assert not core.end_episode("ep0") and core.end_episode("ep1")
    assert core.advance(0.0) == [] and core.hold is Hold.EPISODE_ENDED
    assert core.chunk(chunk(request, [UP])).reason is RejectReason.NO_EPISODE
    assert core.start_episode("ep2", greedy=False, max_steps=0, stamp_ns=stamp)
    (req,) = core.advance(0.0)
    assert req.episode_id == "ep2" and req.step == 0 and not req.greedy


@pytest.mark.parametrize(("names", "positions", "message"), [
    (NAMES[1:], HOME[1:], "lack joints ['joint1']"),
    (NAMES, [np.nan, *HOME[1:]], "not finite"),
    (NAMES, HOME[:-1], "9 names but 8 positions"),
])
def test_unusable_joint_states_are_refused(names: list[str], positions: list[float], message: str) -> None:
    core = ExecutorCore(COMMANDER)
    assert message in core.joint_state(names, positions, 0, now=0.0)


def test_joint_states_in_any_order_are_matched_by_name() -> None:
    core, request = started()
    core.chunk(chunk(request, [UP]))
    order = np.random.default_rng(0).permutation(len(NAMES))
    core.joint_state([NAMES[i] for i in order], [HOME[i] for i in order], 5 * PERIOD, now=0.0)
    (cmd,) = core.advance(0.0)
    expected = COMMANDER.command(np.array(HOME[:7]), np.array(UP))
    np.testing.assert_allclose(cmd.command.arm, expected.arm, atol=1e-12)


def test_no_request_goes_out_while_no_policy_listens_and_a_fresh_one_when_it_appears() -> None:
    core, first = started()
    core.policy_connected(False)  # the policy died: its outstanding request is lost with it
    assert core.advance(1.0) == [] and core.hold is Hold.NO_POLICY
    core.policy_connected(True)
    (again,) = requests(core.advance(1.0))  # at once, not after chunk_timeout_s
    assert again.request_id == first.request_id + 1 and again.step == 0


def test_no_command_goes_out_while_nothing_listens_for_it_and_the_plan_waits() -> None:
    """A respawned executor's command writer may match the sim's reader after its first chunk came: a
    command sent then would be lost, and a lockstep sim would never step again."""
    core, request = started()
    core.robot_connected(False)
    core.chunk(chunk(request, [UP, UP]))
    assert core.advance(0.0) == [] and core.hold is Hold.NO_ROBOT and core.commands_sent == 0
    core.robot_connected(True)
    (first,) = commands(core.advance(0.0))
    assert first.step == 0 and core.hold is Hold.RUNNING


def test_go_home_steps_the_arm_home_in_lockstep_only_while_asked_and_never_during_an_episode() -> None:
    core, _ = started()
    assert core.go_home(0.0) == (False, "episode ep1 is running")
    core.end_episode("ep1")
    away = np.array(HOME)
    away[:7] += [1.2, -0.6, 0.8, 0.9, -0.8, 1.0, 1.2]  # 1.2 rad: several capped steps
    stamp, now = 6 * PERIOD, 0.1
    core.joint_state(NAMES, away, stamp, now=now)
    assert core.go_home(now) == (True, "sending the arm home")
    q, steps = away[:7], 0
    while True:
        outs = core.advance(now)
        if not outs:
            break
        (out,) = outs
        assert out.step == -1 and core.hold is Hold.HOMING
        assert core.advance(now) == []  # lockstep: nothing more before the next joint state
        # each step within the robot's per-step cap, and inside the joint limits
        assert np.all(np.abs(out.command.arm - q) <= COMMANDER.max_step + 1e-9)
        assert np.all(out.command.arm >= COMMANDER.lower) and np.all(out.command.arm <= COMMANDER.upper)
        q, stamp, now, steps = out.command.arm, stamp + PERIOD, now + 0.1, steps + 1
        core.joint_state(NAMES, [*q, 0.04, 0.04], stamp, now=now)
        if steps % 5 == 0:
            assert core.go_home(now)[0]  # the manager asks again every 0.5 s
    assert 5 <= steps < 100 and core.go_home(now) == (True, "the arm is home")
    assert core.hold is Hold.EPISODE_ENDED

    # Homing stops home_keepalive_s after the last request (a manager that died), and on an e-stop.
    core.joint_state(NAMES, away, stamp + PERIOD, now=now)
    assert core.go_home(now)[0] and len(core.advance(now)) == 1
    core.joint_state(NAMES, away, stamp + 2 * PERIOD, now=now + 2.5)
    assert core.advance(now + 2.5) == [] and core.hold is Hold.EPISODE_ENDED
    assert core.go_home(now + 2.5)[0] and core.estop()
    assert core.advance(now + 2.5) == [] and core.hold is Hold.ESTOP
    assert core.go_home(now + 2.5) == (False, "e-stop latched; release it first")
    # An episode start ends homing too.
    core.release()
    assert core.go_home(now + 2.5)[0]
    core.start_episode("ep2", greedy=True, max_steps=0, stamp_ns=stamp + 2 * PERIOD)
    assert [type(o) for o in core.advance(now + 2.5)] == [RequestOut]
