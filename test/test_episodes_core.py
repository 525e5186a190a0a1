"""The episode manager's state machine on plain events: how each episode ends and is stamped, the sim's
resets, and a real arm's homing and operator prompts between episodes."""

from __future__ import annotations

from vla_rl_ros.control import HOME
from vla_rl_ros.episodes import EpisodePlan, Scheduler, layout_prompt, plan_label
from vla_rl_ros.episodes.manager import (
    ERROR,
    INFO,
    WARNING,
    AskHome,
    AskReset,
    DropReset,
    Exit,
    Finished,
    Log,
    ManagerConfig,
    ManagerCore,
    Out,
    Prompt,
    Started,
)
from vla_rl_ros.sim.tasks import get_task
from vla_rl_ros.success import OPERATOR

STEP = 100_000_000  # ns: one control step at the config's 10 Hz
T0 = 1000 * STEP  # the reset state's stamp (sim time)
LIMIT = get_task("reach").max_steps  # 40
WAITING_FOR_PEERS = "waiting for a policy (action_chunk), a success detector (success) and the arm's joint_states"
ARM_IS_YOURS = "the arm is yours and will not move; when it is clear, press r to send it home"
ESTOP_LATCHED = "e-stop latched: release it (executor/release_estop), then press r to send the arm home"


class Graph:
    """The peers: a policy and a detector up, the reset service answering, until a test says otherwise."""

    def __init__(self) -> None:
        self.up = True
        self.service = True

    def served_and_judged(self) -> bool:
        return self.up

    def service_ready(self) -> bool:
        return self.service


def make(reset: str = "sim", group_size: int = 2, eval_seeds: int = 0, **change: float) -> tuple[ManagerCore, Graph]:
    values = dict(reset=reset, control_rate_hz=10.0, lost_node_timeout_s=60.0, verdict_wait_s=5.0,
                  sensor_fault_abort_s=5.0, reset_timeout_s=30.0, home_timeout_s=60.0, max_episodes=0,
                  eval_every_versions=0)
    graph = Graph()
    scheduler = Scheduler(["reach"], group_size=group_size, arm="/arm0", eval_seeds_per_task=eval_seeds)
    return ManagerCore(scheduler, ManagerConfig(**{**values, **change}), graph), graph


def of(kind: type, outs: list[Out]) -> list:
    return [o for o in outs if isinstance(o, kind)]


def start(core: ManagerCore, stamp_ns: int = T0, wall: float = 0.0) -> EpisodePlan:
    """Answer the sim reset in flight (asked first if it is not) with a state stamped stamp_ns."""
    core.advance(stamp_ns, wall)
    core.reset_answer(True, "", "do reach", stamp_ns)
    (started,) = of(Started, core.advance(stamp_ns, wall))
    return started.plan


def release(core: ManagerCore, wall: float) -> None:
    """The executor reports its latched e-stop, then its release (what the manager takes as released)."""
    assert not of(AskReset, core.advance(T0, wall))
    core.executor_status("estop", "", True, wall)
    assert not of(AskReset, core.advance(T0, wall)) and core.estop_latched
    core.executor_status("no_episode", "", False, wall)


def result(outs: list[Out]) -> tuple[str, bool, int, int]:
    (finished,) = of(Finished, outs)
    return finished.end_reason, finished.success, finished.steps, finished.stamp_ns


def test_a_success_ends_the_episode_at_its_step_and_the_group_keeps_its_seed() -> None:
    core, graph = make()
    graph.up = False  # no policy yet: no reset, one line saying why
    assert core.advance(0, 0.0) == [Log(INFO, "waiting for the reset_episode service, a policy (action_chunk) "
                                              "and a success detector (success)")]
    assert core.advance(0, 0.1) == []
    graph.up = True
    (ask,) = core.advance(0, 0.2)
    assert isinstance(ask, AskReset) and not ask.plan.evaluation
    assert core.advance(0, 0.3) == []  # waiting for the answer
    core.reset_answer(True, "", "do reach", T0)
    started, prompt = core.advance(T0 - 5 * STEP, 0.4)  # the clock has not caught up with the reset state
    assert started == Started(ask.plan, "do reach", T0)
    assert prompt == Prompt(f"{plan_label(ask.plan)} running: s success, f failure, a abort (take over)")
    eid = ask.plan.episode_id
    core.chunk(eid, 3, 0.5)
    core.chunk("arm0-ep-other", 7, 0.5)
    assert not core.verdict("arm0-ep-other", True, "sim_oracle", T0 + 12 * STEP)
    assert core.verdict(eid, False, "sim_oracle", T0 + 11 * STEP)
    assert core.advance(T0 + 11 * STEP, 0.6, at_ns=T0 + 11 * STEP) == []
    assert core.verdict(eid, True, "sim_oracle", T0 + 12 * STEP)
    outs = core.advance(T0 + 12 * STEP, 0.7, at_ns=T0 + 12 * STEP)
    assert result(outs) == ("success", True, 12, T0 + 12 * STEP)
    assert of(Finished, outs)[0].policy_version == 3 and of(Finished, outs)[0].instruction == "do reach"
    assert of(Log, outs)[0].text.startswith(f"episode 1 reach/{ask.plan.seed} (group ")
    (nxt,) = of(AskReset, outs)  # the group's next rollout, at once: same seed, same group
    assert (nxt.plan.group_id, nxt.plan.seed, nxt.plan.rollout) == (ask.plan.group_id, ask.plan.seed, 1)


def test_a_result_is_stamped_with_the_later_of_the_clock_and_the_verdict() -> None:
    """Under load /clock reaches the manager steps after the verdicts stamped by it: a result stamped by
    the lagging clock would end the episode early for the recorder, which bounds it by the stamp."""
    core, _ = make()
    eid = start(core).episode_id
    core.verdict(eid, True, "classifier", T0 + 8 * STEP)
    assert result(core.advance(T0 + 5 * STEP, 1.0, at_ns=T0 + 8 * STEP)) == ("success", True, 8, T0 + 8 * STEP)
    eid = start(core, T0 + 100 * STEP, 2.0).episode_id
    core.verdict(eid, True, "classifier", T0 + 103 * STEP)  # a verdict the clock has passed
    assert result(core.advance(T0 + 106 * STEP, 3.0, at_ns=T0 + 103 * STEP)) == ("success", True, 6,
                                                                                 T0 + 106 * STEP)


def test_a_time_out_counts_control_steps_by_the_clock() -> None:
    core, _ = make(verdict_wait_s=0.0)
    start(core)
    assert core.advance(T0 + (LIMIT - 1) * STEP, 1.0) == []
    assert result(core.advance(T0 + LIMIT * STEP, 1.1)) == ("timeout", False, LIMIT, T0 + LIMIT * STEP)
    eid = start(core, T0 + 100 * STEP, 2.0).episode_id
    core.verdict(eid, False, "classifier", T0 + 101 * STEP)  # per-step verdicts, but no wait configured
    assert result(core.advance(T0 + (100 + LIMIT + 3) * STEP, 3.0)) == ("timeout", False, LIMIT,
                                                                       T0 + (100 + LIMIT + 3) * STEP)


def test_a_time_out_waits_for_a_lagging_detectors_verdict_on_the_last_step() -> None:
    core, _ = make(verdict_wait_s=2.0)
    eid = start(core).episode_id
    core.verdict(eid, False, "classifier", T0 + STEP)  # a detector that judges every step
    assert core.advance(T0 + (LIMIT + 5) * STEP, 1.0) == []  # the limit ran out by the clock: wait
    core.verdict(eid, False, "classifier", T0 + (LIMIT - 1) * STEP)  # not yet the last step
    assert core.advance(T0 + (LIMIT + 9) * STEP, 2.9) == []
    core.verdict(eid, True, "classifier", T0 + LIMIT * STEP)  # the last step was a success, judged late
    outs = core.advance(T0 + (LIMIT + 9) * STEP, 2.95, at_ns=T0 + LIMIT * STEP)
    assert result(outs) == ("success", True, LIMIT, T0 + (LIMIT + 9) * STEP)

    eid = start(core, T0 + 100 * STEP, 10.0).episode_id
    core.verdict(eid, False, "classifier", T0 + 101 * STEP)
    # The count rounds up to the limit before the last step's end: the wait starts there.
    assert core.advance(T0 + (100 + LIMIT - 1) * STEP + STEP * 6 // 10, 11.0) == []
    assert core.advance(T0 + (100 + LIMIT + 5) * STEP, 12.9) == []
    outs = core.advance(T0 + (100 + LIMIT + 5) * STEP, 13.0)
    assert of(Log, outs)[0] == Log(WARNING, f"no verdict on the last step of {eid} within 2.0 s (the success "
                                            "detector lags or is gone); ending it as a timeout")
    assert result(outs)[:3] == ("timeout", False, LIMIT)

    # A detector so far behind that it has sent no verdict of this episode at all (a lockstep sim runs
    # one in half a second): having judged before, it is waited for as well, and its late success counts.
    eid = start(core, T0 + 200 * STEP, 20.0).episode_id
    assert core.advance(T0 + (200 + LIMIT + 5) * STEP, 21.0) == []
    core.verdict(eid, True, "classifier", T0 + (200 + LIMIT) * STEP)
    outs = core.advance(T0 + (200 + LIMIT + 5) * STEP, 21.5, at_ns=T0 + (200 + LIMIT) * STEP)
    assert result(outs)[:3] == ("success", True, LIMIT)


def test_silence_ends_the_episode_as_lost_node_and_no_reset_waits_for_a_dead_policy() -> None:
    core, graph = make(lost_node_timeout_s=1.0)
    eid = start(core, wall=0.0).episode_id
    core.chunk(eid, 2, 0.8)
    assert core.advance(T0 + STEP, 1.7) == []
    graph.up = False  # the policy died
    outs = core.advance(T0 + 2 * STEP, 1.9)
    assert result(outs) == ("lost_node", False, 2, T0 + 2 * STEP)
    assert of(Log, outs)[0].level == WARNING and of(Log, outs)[0].text.endswith("(no progress for 1 s)")
    assert of(Log, outs)[1].text.startswith("waiting for the reset_episode service")
    assert not of(AskReset, outs)


def test_an_e_stop_or_an_abort_ends_the_running_episode() -> None:
    core, _ = make()
    assert not core.estop() and core.abort() == (False, "no episode is running")
    release(core, 0.1)
    start(core)
    assert core.estop()
    assert result(core.advance(T0 + 3 * STEP, 1.0)) == ("estop", False, 3, T0 + 3 * STEP)
    # No new episode while the e-stop is latched (the executor would hold it until it ended as lost_node):
    # not until the executor, having reported the latch, reports its release.
    assert not of(AskReset, core.advance(T0 + 4 * STEP, 1.5))
    release(core, 1.6)
    eid = start(core, T0 + 10 * STEP, 2.0).episode_id
    assert core.abort() == (True, f"aborting {eid}: the arm holds; it is yours")
    assert result(core.advance(T0 + 14 * STEP, 3.0)) == ("abort", False, 4, T0 + 14 * STEP)


def test_an_executor_holding_on_a_sensor_fault_aborts_the_episode() -> None:
    core, _ = make(sensor_fault_abort_s=0.5)
    eid = start(core, wall=0.0).episode_id
    core.executor_status("stale_joint_states", "arm0-ep-other", None, 0.0)  # another episode's hold
    core.executor_status("waiting_for_chunk", eid, None, 0.0)  # not a sensor fault
    assert core.advance(T0 + STEP, 1.0) == []
    core.executor_status("stale_joint_states", eid, None, 1.0)
    core.executor_status("running", eid, None, 1.2)  # it recovered: the clock starts again
    core.executor_status("stale_image", eid, None, 1.3)
    core.executor_status("stale_image", eid, None, 1.7)  # the same hold goes on: since 1.3
    assert core.advance(T0 + STEP, 1.75) == []
    outs = core.advance(T0 + 2 * STEP, 1.85)
    assert of(Log, outs)[0].text.startswith("the executor has held on stale_image for")
    assert result(outs) == ("abort", False, 2, T0 + 2 * STEP)
    never, _ = make(sensor_fault_abort_s=0.0)
    eid = start(never, wall=0.0).episode_id
    never.executor_status("stale_image", eid, None, 0.0)
    assert never.advance(T0 + STEP, 30.0) == []


def test_a_failed_reset_skips_its_plan_and_a_slow_one_is_asked_again() -> None:
    core, _ = make()
    (ask,) = core.advance(0, 0.0)
    core.reset_answer(False, "no response")
    assert core.advance(0, 1.0) == [Log(ERROR, f"reset reach/{ask.plan.seed} failed: no response; skipping it")]
    (retry,) = core.advance(0, 2.0)
    assert retry.plan.episode_id != ask.plan.episode_id
    assert core.advance(0, 31.9) == []
    assert core.advance(0, 32.1) == [Log(WARNING, f"reset of {retry.plan.episode_id} took over 30 s; retrying"),
                                     DropReset()]
    core.reset_answer(True, "", "late", T0)  # the dropped call's answer: ignored
    assert core.advance(0, 32.2) == [AskReset(retry.plan)]


def test_evaluation_rounds_at_the_start_and_every_n_policy_versions() -> None:
    core, _ = make(group_size=1, eval_seeds=1, eval_every_versions=2)

    def next_plan() -> EpisodePlan:
        """End the running episode; the plan the next reset asks for."""
        start(core)
        core.abort()
        (ask,) = of(AskReset, core.advance(T0, 0.0))
        return ask.plan

    (first,) = core.advance(0, 0.0)
    assert first.plan.evaluation  # the starting point, before any update
    assert not next_plan().evaluation
    core.policy_update(1)
    assert not next_plan().evaluation
    core.policy_update(2)
    assert next_plan().evaluation
    core.policy_update(2)  # latched again: not a new version
    assert not next_plan().evaluation


def test_arms_on_several_hosts_split_the_held_out_seeds_and_draw_schedules_of_their_own() -> None:
    """Two rollout hosts of two arms: each of the four arms evaluates its own quarter of the 20 held-out
    seeds (together all of them, once), and arm 0 of host 1 does not repeat arm 0 of host 0's groups."""
    arms = {(h, a): Scheduler(["reach"], group_size=1, arm=f"/h{h}/arm{a}", arm_index=a, num_arms=2, host_index=h,
                              num_hosts=2, eval_seeds_per_task=20) for h in (0, 1) for a in (0, 1)}
    for scheduler in arms.values():
        scheduler.request_evaluation()
    rounds = {key: [s.next() for _ in range(5)] for key, s in arms.items()}
    assert all(p.evaluation for plans in rounds.values() for p in plans)
    seeds = [p.seed for plans in rounds.values() for p in plans]
    assert sorted(seeds) == sorted(int(s) for s in get_task("reach").heldout_seeds[:20])
    groups = {key: [s.next().seed for _ in range(8)] for key, s in arms.items()}
    assert groups[0, 0] != groups[1, 0] and groups[0, 1] != groups[1, 1]


def test_max_episodes_ends_the_run() -> None:
    core, _ = make(max_episodes=1)
    start(core)
    core.abort()
    outs = core.advance(T0, 1.0)
    assert isinstance(outs[0], Finished) and outs[-2:] == [Log(INFO, "ran the 1 episodes asked for; exiting"), Exit()]
    assert core.advance(T0, 2.0) == []  # no more resets


def operator_core(**change: float) -> tuple[ManagerCore, Graph]:
    """A real arm's manager whose arm is home, waiting for the operator's layout."""
    core, graph = make(reset="operator", **change)
    assert core.ready() == (False, "not waiting for ready: starting up")
    assert core.advance(0, 0.0) == [Prompt(WAITING_FOR_PEERS)]  # no joint_states yet
    core.joint_state(T0)
    assert core.advance(T0, 0.1) == [Prompt(ARM_IS_YOURS)]
    assert core.advance(T0, 0.2) == []  # nothing moves before the operator's first ready
    assert core.ready() == (True, "sending the arm home")
    assert core.advance(T0, 0.3) == []
    assert core.ready()[0] is False  # homing
    assert core.advance(T0, 0.4) == [AskHome()]
    core.home_answer(True, "sending the arm home")
    assert core.advance(T0, 0.5) == [Prompt("sending the arm home")]  # asked again every 0.5 s
    assert core.advance(T0, 1.0) == [AskHome()]
    core.home_answer(True, HOME)
    assert core.advance(T0, 1.1) == [Log(INFO, "the arm is home")]
    return core, graph


def test_operator_reset_homes_the_arm_and_asks_for_the_same_layout_in_every_rollout_of_a_group() -> None:
    core, _ = operator_core()
    first = core.plan
    assert first is not None
    instruction = get_task("reach").sample(first.seed).instruction
    assert core.advance(T0, 1.2) == [Prompt(layout_prompt(first, instruction))]
    assert f"set up layout {first.seed}" in core.prompt
    assert core.ready() == (True, f"starting {plan_label(first)}")
    core.joint_state(T0 + 7)  # the arm's newest joint state stamps the start
    outs = core.advance(T0 + 3, 1.3)
    assert outs[0] == Started(first, instruction, T0 + 7)
    assert core.ready()[1].startswith("not waiting for ready: group 1, rollout 1/2")
    core.verdict(first.episode_id, False, OPERATOR, T0 + 5 * STEP)  # an operator's failure is final
    outs = core.advance(T0 + 5 * STEP, 2.0, at_ns=T0 + 5 * STEP)
    assert result(outs) == ("failure", False, 5, T0 + 5 * STEP)
    assert of(AskHome, outs)  # home again, at once
    core.home_answer(True, HOME)
    core.advance(T0 + 5 * STEP, 2.1)
    second = core.plan
    assert second is not None and (second.group_id, second.seed, second.rollout) == (first.group_id, first.seed, 1)
    assert core.advance(T0 + 5 * STEP, 2.2) == [Prompt(layout_prompt(second, instruction))]
    assert "restore the layout of rollout 1" in core.prompt
    core.ready()
    assert of(Started, core.advance(T0 + 6 * STEP, 2.3))[0].plan == second


def test_after_an_abort_the_arm_is_the_operators_until_they_press_r() -> None:
    core, _ = operator_core()
    core.advance(T0, 1.2)
    core.ready()
    core.advance(T0, 1.3)
    core.abort()
    outs = core.advance(T0 + 2 * STEP, 2.0)
    assert result(outs)[0] == "abort" and outs[-1] == Prompt(ARM_IS_YOURS) and not of(AskHome, outs)
    assert core.advance(T0 + 2 * STEP, 30.0) == []  # the arm stays where it is
    assert core.ready() == (True, "sending the arm home")
    core.advance(T0 + 2 * STEP, 30.1)
    assert core.advance(T0 + 2 * STEP, 30.2) == [AskHome()]


def test_an_e_stop_hands_the_arm_over_until_the_executor_reports_its_release_and_r_is_pressed() -> None:
    core, _ = operator_core()
    core.advance(T0, 1.2)
    core.ready()
    core.advance(T0, 1.3)
    assert core.estop()
    outs = core.advance(T0 + 2 * STEP, 2.0)
    assert result(outs)[0] == "estop" and outs[-1] == Prompt(ESTOP_LATCHED)
    refused = (False, "the e-stop is latched: release it first (executor/release_estop), then press r")
    assert core.ready() == refused
    core.executor_status("no_episode", "", False, 2.1)  # sent before the executor saw the e-stop
    assert core.ready() == refused
    core.executor_status("estop", "", True, 2.2)
    core.executor_status("no_episode", "", False, 2.3)  # released at the executor
    assert core.advance(T0 + 2 * STEP, 2.4) == [Prompt(ARM_IS_YOURS)]
    assert core.ready() == (True, "sending the arm home")
    core.advance(T0 + 2 * STEP, 2.5)
    assert core.advance(T0 + 2 * STEP, 2.6) == [AskHome()]
    assert not core.estop()  # while homing: the arm is the operator's again, no more asks
    assert core.advance(T0 + 2 * STEP, 3.5) == []
    assert core.advance(T0 + 2 * STEP, 3.6) == [Prompt(ESTOP_LATCHED)]
    assert core.advance(T0 + 2 * STEP, 5.0) == []


def test_homing_that_takes_too_long_asks_the_operator_to_move_the_arm() -> None:
    core, _ = make(reset="operator", home_timeout_s=10.0)
    core.joint_state(T0)
    core.advance(T0, 0.0)
    core.ready()
    core.advance(T0, 0.1)
    assert core.advance(T0, 0.2) == [AskHome()]
    assert core.advance(T0, 10.1) == []  # no answer yet (10.0 s of homing)
    assert core.advance(T0, 10.2) == [Log(ERROR, "the arm did not reach home within 10 s"),
                                      Prompt("homing failed: move the arm home by hand, then press r")]
    core.home_answer(True, HOME)  # too late: ignored
    assert core.advance(T0, 11.0) == [Prompt(ARM_IS_YOURS)]  # no asks: the arm stays where it is
    assert core.advance(T0, 12.0) == []
    assert core.ready() == (True, "sending the arm home")
    core.advance(T0, 11.1)
    assert core.advance(T0, 11.2) == [AskHome()]
