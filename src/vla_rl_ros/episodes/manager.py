"""The episode manager's state machine without ROS: events in (verdicts, chunks, e-stop, the executor's
status, reset and homing answers, the operator's ready and abort), the time in, what to publish and
call out.

No episode starts before a policy and a success detector are up (`Peers`): an episode nobody judges
would end as a timeout, a failure it never was. Resets: with reset=sim the manager asks the sim
bridge's reset_episode for the next plan and starts the episode at the reset state's stamp. With
reset=operator (a real arm) it has the executor send the arm home between episodes (executor/go_home:
the robot config's home pose, one command per control step inside the executor's limits; asked every
`HOME_ASK_S` until the answer is `HOME`, and the executor stops when the manager stops asking), then
waits for the operator's ready; the prompt says which group and rollout comes next and what to do
(`episodes.reset`). An abort (the operator's) or an e-stop leaves the arm to the operator: it goes
home only after their next ready, and never while the executor reports a latched e-stop. Aborted
episodes end as abort, which the learner discards (rl.records.DISCARD_REASONS); an operator's
failure verdict ends the episode as failure (reward 0, learned from like any failed rollout).
Evaluation episodes are marked (their plan's) so the learner never trains on them.

Time-outs count control steps as the robot's time (max_steps / the robot config's control_rate_hz): with use_sim_time
and the sim bridge's lockstep clock, exactly the steps executed. A detector that judges every step
(sim_oracle, classifier) can lag behind a lockstep sim that runs faster than it judges, so a
time-out waits up to verdict_wait_s of wall time for its verdict on the last step (the executor
holds meanwhile): a success on the steps before the limit is a success, whatever the load. An
episode without an action chunk for lost_node_timeout_s ends as lost_node: a dead policy sends none,
and a dead arm stops the executor's requests (joint states alone prove nothing: a bridge re-sends
them while idle). Sooner than that, an episode whose executor holds on a sensor fault
(`control.SENSOR_FAULTS`: a stale or missing image or joint state, as from an unplugged camera or a
dead driver; joint states outside the joint limits, as from a spoofed message or a driver publishing
degrees) for sensor_fault_abort_s ends as abort: the arm held, and the rollout says nothing about
the policy.

Times: `now_ns` is the node's clock (sim time in sim), `at_ns` the stamp of the input that called
`advance` (a verdict): under load /clock reaches the node steps after the messages stamped by it, so
an episode ends at the later of the two, or a result stamped early would cut the episode short for
every node that bounds it by its stamp (the recorder's frames). `wall` is a monotonic clock in
seconds, used only by the watchdogs, so a frozen sim clock never hides a dead node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vla_rl_ros.control import HOME, SENSOR_FAULTS
from vla_rl_ros.data.episode import ABORT, ESTOP, FAILURE, LOST_NODE, SUCCESS, TIMEOUT
from vla_rl_ros.episodes.reset import layout_prompt, plan_label
from vla_rl_ros.episodes.schedule import EpisodePlan, Scheduler
from vla_rl_ros.sim.tasks import get_task
from vla_rl_ros.success import OPERATOR

HOME_ASK_S = 0.5  # period of executor/go_home while homing (the executor stops 2 s after the last)
# Executor holds that mean a sensor of the arm is gone or lies (its /diagnostics "hold" value).
SENSOR_FAULT_HOLDS = frozenset(hold.value for hold in SENSOR_FAULTS)
# Operator-reset phases between two episodes.
CLEAR, HOMING, LAYOUT = "clear", "homing", "layout"
INFO, WARNING, ERROR = "info", "warning", "error"


@dataclass(frozen=True)
class ManagerConfig:
    """The node's parameters the state machine reads (same names; see nodes/episode_manager.py), and the
    control rate of its robot config (control.RobotConfig, the executor's: one source for the period)."""

    reset: str  # "sim" or "operator"
    control_rate_hz: float  # Hz, converts max_steps to ROS time
    lost_node_timeout_s: float
    verdict_wait_s: float
    sensor_fault_abort_s: float
    reset_timeout_s: float
    home_timeout_s: float
    max_episodes: int
    eval_every_versions: int


class Peers(Protocol):
    """The graph the manager needs, asked only between episodes (a graph query costs tens of µs)."""

    def served_and_judged(self) -> bool:
        """A policy (a publisher on action_chunk) and a success detector (one on success) are up."""

    def service_ready(self) -> bool:
        """The reset's service answers: reset_episode (sim) or executor/go_home (operator)."""


@dataclass(frozen=True)
class Started:
    """An EpisodeStart to publish."""

    plan: EpisodePlan
    instruction: str
    stamp_ns: int  # the reset state's stamp


@dataclass(frozen=True)
class Finished:
    """An EpisodeResult to publish."""

    plan: EpisodePlan
    instruction: str
    end_reason: str
    steps: int
    policy_version: int
    stamp_ns: int

    @property
    def success(self) -> bool:
        return self.end_reason == SUCCESS


@dataclass(frozen=True)
class Prompt:
    """What the manager waits for now (operator_prompt)."""

    text: str


@dataclass(frozen=True)
class AskReset:
    """Call reset_episode for `plan`; answer with `ManagerCore.reset_answer`."""

    plan: EpisodePlan


@dataclass(frozen=True)
class DropReset:
    """Cancel the reset_episode call in flight: it took longer than reset_timeout_s."""


@dataclass(frozen=True)
class AskHome:
    """Call executor/go_home once; answer with `ManagerCore.home_answer`."""


@dataclass(frozen=True)
class Exit:
    """max_episodes have ended: the node's work is done."""


@dataclass(frozen=True)
class Log:
    """A line for the node's log."""

    level: str  # INFO, WARNING or ERROR
    text: str


Out = Started | Finished | Prompt | AskReset | DropReset | AskHome | Exit | Log


class ManagerCore:
    """One arm's episodes. Call the event methods, then `advance(now_ns, wall)` for the outputs."""

    def __init__(self, scheduler: Scheduler, config: ManagerConfig, peers: Peers) -> None:
        self.scheduler = scheduler
        self.config = config
        self.peers = peers
        self.operator = config.reset == "operator"
        scheduler.request_evaluation()  # the starting point, before any update
        self.plan: EpisodePlan | None = None  # the episode being reset or run
        self.running = False
        self.episodes_done = 0
        self.prompt = ""
        self.estop_latched = False
        self._estop_confirmed = False  # the executor has reported an e-stop latched since the last release
        self._versions_seen: set[int] = set()
        self._out: list[Out] = []
        # The running episode.
        self._start_ns = 0
        self._instruction = ""
        self._policy_version = 0
        self._last_progress = 0.0  # wall s of its last action chunk
        self._ending: str | None = None  # set by events, acted on by advance
        self._judged_ns = -1  # stamp of the newest verdict
        self._per_step_detector = False  # a verdict of a judging backend (not an operator's) was ever seen
        self._limit_reached_at: float | None = None  # wall s the step limit ran out, while waiting for a verdict
        self._fault: tuple[str, float] | None = None  # the executor's sensor-fault hold and since when (wall s)
        # Sim reset.
        self._reset_sent_at: float | None = None  # wall s of the reset_episode call in flight
        self._reset_answer: tuple[bool, str, str, int] | None = None
        self._waiting_logged = False
        self._estop_logged = False  # the wait for an e-stop's release was logged
        # Operator reset: the phase between episodes.
        self.phase = CLEAR  # nothing moves before the operator's first ready
        self._ready = False
        self._joints_ns: int | None = None  # stamp of the arm's newest usable joint state
        self._homing_since = 0.0
        self._home_waiting = False  # a go_home call is in flight or its answer not yet acted on
        self._home_answer: tuple[bool, str] | None = None
        self._home_asked_at = float("-inf")

    # ------------------------------------------------------------------ events
    def verdict(self, episode_id: str, success: bool, source: str, stamp_ns: int) -> bool:
        """A SuccessSignal; False if it is not about the running episode. A success ends the episode; an
        operator's verdict ends it either way. Call advance with at_ns=stamp_ns after one."""
        if not (self.running and self.plan and episode_id == self.plan.episode_id):
            return False
        self._judged_ns = max(self._judged_ns, stamp_ns)
        self._per_step_detector = self._per_step_detector or source != OPERATOR
        if success:
            self._ending = self._ending or SUCCESS
        elif source == OPERATOR:  # an operator's verdict is final
            self._ending = self._ending or FAILURE
        return True

    def chunk(self, episode_id: str, policy_version: int, wall: float) -> None:
        """An ActionChunk: progress, and the policy version acting."""
        if self.running and self.plan and episode_id == self.plan.episode_id:
            self._policy_version = policy_version
            self._last_progress = wall

    def estop(self) -> bool:
        """An e-stop (the executor latches it too; released only by its service, which `executor_status`
        then reports). True if it ends the running episode."""
        self.estop_latched = True
        if self.running:
            self._ending = ESTOP
        return self.running

    def executor_status(self, hold: str, episode_id: str | None, estop: bool | None, wall: float) -> None:
        """The executor's /diagnostics values: why it holds, on which episode, its e-stop (None: not said)."""
        ours = self.running and self.plan is not None and episode_id == self.plan.episode_id
        if not (ours and hold in SENSOR_FAULT_HOLDS):
            self._fault = None
        elif self._fault is None:
            self._fault = (hold, wall)
        if estop:
            self.estop_latched = self._estop_confirmed = True
        elif estop is False and self._estop_confirmed:
            # Only a release after a latch: one sent before the executor saw the e-stop (topics are not
            # ordered with each other) must not release it here.
            self.estop_latched = self._estop_confirmed = False

    def joint_state(self, stamp_ns: int) -> None:
        """A usable joint state of the arm (reset operator): its clock stamps the episode's start."""
        self._joints_ns = stamp_ns

    def policy_update(self, version: int) -> None:
        """A new policy version: every eval_every_versions, an evaluation round."""
        if version in self._versions_seen:
            return
        self._versions_seen.add(version)
        every = self.config.eval_every_versions
        if every and version % every == 0:
            self.scheduler.request_evaluation()

    def ready(self) -> tuple[bool, str]:
        """The operator's ready (reset operator): the arm is clear, or the layout restored."""
        if self.running or self.phase == HOMING or self.plan is None:
            return False, f"not waiting for ready: {self.prompt or 'starting up'}"
        if self.estop_latched:
            return False, "the e-stop is latched: release it first (executor/release_estop), then press r"
        self._ready = True
        return True, "sending the arm home" if self.phase == CLEAR else f"starting {plan_label(self.plan)}"

    def abort(self) -> tuple[bool, str]:
        """End the running episode as abort (the operator takes over)."""
        if not self.running:
            return False, "no episode is running"
        assert self.plan is not None
        self._ending = self._ending or ABORT
        return True, f"aborting {self.plan.episode_id}: the arm holds; it is yours"

    def reset_answer(self, success: bool, message: str, instruction: str = "", stamp_ns: int = 0) -> None:
        """reset_episode's answer (success False, "no response" when none came)."""
        if self._reset_sent_at is not None:
            self._reset_answer = (success, message, instruction, stamp_ns)

    def home_answer(self, success: bool, message: str) -> None:
        """executor/go_home's answer; acted on at the next advance."""
        if self._home_waiting:
            self._home_answer = (success, message)

    @property
    def done(self) -> bool:
        """max_episodes have ended."""
        return bool(self.config.max_episodes) and self.episodes_done >= self.config.max_episodes

    # -------------------------------------------------------------------- loop
    def advance(self, now_ns: int, wall: float, at_ns: int = 0) -> list[Out]:
        """One step of the state machine: what to publish and call now. `at_ns`: the stamp of the input
        that called it (a verdict), which counts when later than `now_ns`."""
        if self.running:
            self._check_running(max(now_ns, at_ns), wall)
        if not (self.running or self.done):
            if self.operator:
                self._operator_reset(now_ns, wall)
            elif self._reset_sent_at is not None:
                self._check_reset(now_ns, wall)
            else:
                self._begin_reset(wall)
        out, self._out = self._out, []
        return out

    # ----------------------------------------------------------------- helpers
    def _log(self, level: str, text: str) -> None:
        self._out.append(Log(level, text))

    def _say(self, prompt: str) -> None:
        if prompt != self.prompt:
            self.prompt = prompt
            self._out.append(Prompt(prompt))

    def _check_running(self, end_ns: int, wall: float) -> None:
        assert self.plan is not None
        cfg = self.config
        if self._ending is None:
            if self._steps(end_ns) >= self.plan.max_steps:
                if not self._last_step_judged(wall):
                    return
                self._ending = TIMEOUT
            elif wall - self._last_progress > cfg.lost_node_timeout_s:
                self._ending = LOST_NODE
            elif self._fault and cfg.sensor_fault_abort_s and wall - self._fault[1] > cfg.sensor_fault_abort_s:
                self._log(WARNING, f"the executor has held on {self._fault[0]} for {cfg.sensor_fault_abort_s:.0f} s; "
                                   "aborting the episode")
                self._ending = ABORT
        if self._ending is not None:
            self._finish(self._ending, end_ns, wall)

    def _steps(self, end_ns: int) -> int:
        """Control steps from the start to `end_ns`."""
        elapsed = (end_ns - self._start_ns) * 1e-9
        return max(0, round(elapsed * self.config.control_rate_hz))

    def _last_step_judged(self, wall: float) -> bool:
        """Whether the detector has judged the episode's last step, or cannot be waited for any longer: one
        that sends no per-step verdicts (an operator; known by none in this episode and none of a judging
        backend ever: a detector lagging a whole episode behind is waited for once it has judged one), or
        still none after verdict_wait_s."""
        assert self.plan is not None
        wait, rate = self.config.verdict_wait_s, self.config.control_rate_hz
        last_step_ns = self._start_ns + round((self.plan.max_steps - 0.5) / rate * 1e9)
        if (self._judged_ns < 0 and not self._per_step_detector) or not wait or self._judged_ns >= last_step_ns:
            return True
        if self._limit_reached_at is None:
            self._limit_reached_at = wall
        if wall - self._limit_reached_at < wait:
            return False
        self._log(WARNING, f"no verdict on the last step of {self.plan.episode_id} within {wait:.1f} s "
                           "(the success detector lags or is gone); ending it as a timeout")
        return True

    def _finish(self, reason: str, end_ns: int, wall: float) -> None:
        assert self.plan is not None
        plan = self.plan
        result = Finished(plan, self._instruction, reason, min(self._steps(end_ns), plan.max_steps),
                          self._policy_version, end_ns)
        self._out.append(result)
        self.running, self.plan, self._ending, self._fault = False, None, None, None
        self.episodes_done += 1
        # Operator reset: after an abort or e-stop the arm stays the operator's until their next ready.
        self.phase = CLEAR if reason in (ABORT, ESTOP) else HOMING
        self._ready, self._homing_since = False, wall
        kind = "eval" if plan.evaluation else f"group {plan.group_id[-6:]}"
        line = (f"episode {self.episodes_done} {plan.task}/{plan.seed} ({kind}, policy v{self._policy_version}): "
                f"{reason} after {result.steps} steps")
        if reason == LOST_NODE:
            self._log(WARNING, line + f" (no progress for {self.config.lost_node_timeout_s:.0f} s)")
        else:
            self._log(INFO, line)
        if self.done:
            self._log(INFO, f"ran the {self.config.max_episodes} episodes asked for; exiting")
            self._out.append(Exit())

    def _start(self, plan: EpisodePlan, instruction: str, reset_ns: int, now_ns: int, wall: float) -> None:
        """Announce `plan`, starting at the reset state's stamp (now if it has none)."""
        self._start_ns = reset_ns or now_ns
        self._last_progress = wall
        self._ending = None
        self._judged_ns, self._limit_reached_at = -1, None
        self.running = True
        self._instruction = instruction
        self._out.append(Started(plan, instruction, self._start_ns))
        self._say(f"{plan_label(plan)} running: s success, f failure, a abort (take over)")

    # -- sim reset
    def _begin_reset(self, wall: float) -> None:
        if self.estop_latched:  # the executor would hold the new episode until it ended as lost_node
            if not self._estop_logged:
                self._log(WARNING, "e-stop latched: no new episode until it is released (executor/release_estop)")
                self._estop_logged = True
            return
        self._estop_logged = False
        if not (self.peers.service_ready() and self.peers.served_and_judged()):
            if not self._waiting_logged:
                self._log(INFO, "waiting for the reset_episode service, a policy (action_chunk) and a success "
                                "detector (success)")
                self._waiting_logged = True
            return
        self._waiting_logged = False
        self.plan = self.plan or self.scheduler.next()
        self._out.append(AskReset(self.plan))
        self._reset_sent_at = wall

    def _check_reset(self, now_ns: int, wall: float) -> None:
        assert self.plan is not None and self._reset_sent_at is not None
        answer = self._reset_answer
        if answer is None:
            if wall - self._reset_sent_at > self.config.reset_timeout_s:
                self._log(WARNING, f"reset of {self.plan.episode_id} took over {self.config.reset_timeout_s:.0f} s; "
                                   "retrying")
                self._out.append(DropReset())
                self._reset_sent_at = None
            return
        self._reset_sent_at = self._reset_answer = None
        success, message, instruction, stamp_ns = answer
        if not success:
            self._log(ERROR, f"reset {self.plan.task}/{self.plan.seed} failed: {message}; skipping it")
            self.plan = None
            return
        # The reset state's own stamp: the node's clock may not have caught up with it yet.
        self._start(self.plan, instruction, stamp_ns, now_ns, wall)

    # -- operator reset
    def _operator_reset(self, now_ns: int, wall: float) -> None:
        if not self.peers.served_and_judged() or self._joints_ns is None:
            self._say("waiting for a policy (action_chunk), a success detector (success) and the arm's joint_states")
            return
        plan = self.plan = self.plan or self.scheduler.next()
        if self.phase == CLEAR:
            self._say("e-stop latched: release it (executor/release_estop), then press r to send the arm home"
                      if self.estop_latched else
                      "the arm is yours and will not move; when it is clear, press r to send it home")
            if self._ready:
                self._ready, self.phase, self._homing_since = False, HOMING, wall
        elif self.phase == HOMING:
            self._home_step(wall)
        else:
            instruction = get_task(plan.task).sample(plan.seed).instruction  # the layout's, as the sim's
            self._say(layout_prompt(plan, instruction))
            if self._ready:
                self._ready = False
                self._start(plan, instruction, self._joints_ns, now_ns, wall)

    def _home_step(self, wall: float) -> None:
        """Keep asking the executor to step the arm home until it answers that it is."""
        if self.estop_latched:  # the arm is the operator's again: it moves only after their next ready
            self.phase = CLEAR
            return
        if wall - self._homing_since > self.config.home_timeout_s:
            self._log(ERROR, f"the arm did not reach home within {self.config.home_timeout_s:.0f} s")
            self._say("homing failed: move the arm home by hand, then press r")
            # No more asking (the executor stops within its keepalive); a late answer is ignored.
            self.phase, self._home_waiting, self._home_answer = CLEAR, False, None
            return
        if self._home_waiting:
            answer = self._home_answer
            if answer is None:
                return
            self._home_waiting, self._home_answer = False, None
            success, message = answer
            if success and message == HOME:
                self._log(INFO, "the arm is home")
                self.phase = LAYOUT
                return
            self._say("sending the arm home" if success else f"sending the arm home (executor: {message})")
        if wall - self._home_asked_at >= HOME_ASK_S and self.peers.service_ready():
            self._out.append(AskHome())
            self._home_waiting, self._home_asked_at = True, wall
