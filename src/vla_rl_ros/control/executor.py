"""The executor's control loop without ROS: events in (episode start/result, joint states, images,
chunks, e-stop), chunk requests and joint commands out, and always a reason when the arm holds.

The loop (docs: contracts.md, "Executor control loop"): on an episode start it requests chunk 0; it
sends one command per control step, computed from the newest joint state, and sends the next only
when a joint state stamped at the previous command's end arrives (`Lockstep`: lockstep in sim, one
command per period on a real arm); it requests the next chunk when `request_ahead_steps` steps of the
current one remain (0: after the last step, so the policy sees the state the core env would show it);
it holds (sends nothing) without a valid chunk, on stale joint states or images, on a joint state
more than `joint_limit_margin` outside the joint limits, on e-stop, at the episode's step limit and
after its result. A joint state stamped before the newest one is refused while the newest is fresh (a
late message or a second publisher would make a command due at once from where the arm was); after
joint_state_timeout_s without one an older clock is taken (a restarted sim). The stale and
out-of-limits joint states and stale images are `SENSOR_FAULTS`: the
episode manager ends an episode that holds on one for long as abort. Between episodes `go_home` steps
the arm to the robot config's home pose with the same limits and the same lockstep; homing goes on
only while it is asked for again within `home_keepalive_s` (a manager that dies leaves the arm still),
and an e-stop or an episode start ends it.

Times: `stamp_ns` are message stamps in the robot's clock (sim time in sim); `now` is a monotonic wall
clock in seconds, used only by the watchdogs, so a frozen sim clock never hides a dead node.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from vla_rl_ros.control.chunks import Chunk, ChunkIn, Rejection, RejectReason, validate_chunk
from vla_rl_ros.control.command import Command, Commander
from vla_rl_ros.control.homing import Homing

NS_PER_S = 1_000_000_000
ENDED_REMEMBERED = 100  # episodes whose result was seen, refused if their start comes (again) later


@dataclass(frozen=True)
class ExecutorConfig:
    """Timing of the loop and its watchdogs (the robot's limits live in RobotConfig)."""

    request_ahead_steps: int = field(default=0, metadata={
        "help": "request the next chunk when this many steps of the current one remain; 0 (sim): after the "
                "last step, so the policy sees the newest state; 1-2 on a real arm hide the policy's latency"})
    joint_state_timeout_s: float = field(default=1.0, metadata={
        "help": "s (wall) without joint_states after which the arm holds"})
    image_timeout_s: float = field(default=0.0, metadata={
        "help": "s (wall) without a camera image after which the arm holds; 0 disables the image watchdog"})
    chunk_timeout_s: float = field(default=10.0, metadata={
        "help": "s (wall) to wait for an answer before requesting the chunk again under a new request id"})
    home_tolerance: float = field(default=0.02, metadata={
        "help": "rad: largest joint error at which the arm counts as home (go_home)"})
    home_keepalive_s: float = field(default=2.0, metadata={
        "help": "s (wall): homing stops this long after the last go_home request"})
    joint_limit_margin: float = field(default=0.05, metadata={
        "help": "rad a measured joint may lie outside the robot's joint limits (a controller's overshoot); a "
                "joint state further out (a spoofed message, a driver publishing degrees) is a sensor fault: "
                "the arm holds without a command"})

    def __post_init__(self) -> None:
        if self.request_ahead_steps < 0:
            raise ValueError(f"request_ahead_steps={self.request_ahead_steps} must be >= 0 (0 in sim)")
        if self.home_tolerance <= 0 or self.home_keepalive_s <= 0:
            raise ValueError(f"home_tolerance={self.home_tolerance} and home_keepalive_s={self.home_keepalive_s} "
                             "must be > 0")
        if not 0 <= self.joint_limit_margin <= 0.5:
            raise ValueError(f"joint_limit_margin={self.joint_limit_margin} rad must be in [0, 0.5] (try 0.05)")
        if self.joint_state_timeout_s <= 0 or self.image_timeout_s < 0 or self.chunk_timeout_s <= 0:
            raise ValueError(f"timeouts must be positive (image_timeout_s may be 0 to disable): joint_state_timeout_s="
                             f"{self.joint_state_timeout_s}, image_timeout_s={self.image_timeout_s}, "
                             f"chunk_timeout_s={self.chunk_timeout_s}")


class Hold(str, Enum):
    """Why no command goes out now; RUNNING and EXECUTING are not holds."""

    RUNNING = "running"  # a command was just sent
    EXECUTING = "executing"  # the previous command's period has not ended yet
    NO_EPISODE = "no_episode"
    EPISODE_ENDED = "episode_ended"
    MAX_STEPS = "max_steps"
    ESTOP = "estop"
    NO_POLICY = "no_policy"  # no policy is listening for chunk requests
    NO_ROBOT = "no_robot"  # nothing (driver or sim) is listening for joint commands
    NO_JOINT_STATES = "no_joint_states"  # none received yet
    WAITING_FOR_STATE = "waiting_for_state"  # none stamped at or after the episode's start yet
    STALE_JOINT_STATES = "stale_joint_states"
    OUT_OF_LIMITS = "joint_state_out_of_limits"  # the measured joints lie beyond joint_limit_margin
    STALE_IMAGE = "stale_image"
    WAITING_FOR_CHUNK = "waiting_for_chunk"
    CHUNK_TIMEOUT = "chunk_timeout"
    HOMING = "homing"  # stepping towards the home pose between episodes (go_home)


# Holds that mean a sensor of the arm is gone or lies: the episode manager ends an episode held on one for
# sensor_fault_abort_s as abort (the rollout says nothing about the policy).
SENSOR_FAULTS = frozenset({Hold.NO_JOINT_STATES, Hold.STALE_JOINT_STATES, Hold.OUT_OF_LIMITS, Hold.STALE_IMAGE})
# Holds that mean something is wrong (logged once per occurrence, WARN/ERROR on /diagnostics).
FAULTS = SENSOR_FAULTS | {Hold.ESTOP, Hold.NO_POLICY, Hold.NO_ROBOT, Hold.CHUNK_TIMEOUT}
# Faults reported as ERROR on /diagnostics: the arm must not be trusted until someone looks.
ERRORS = frozenset({Hold.ESTOP, Hold.OUT_OF_LIMITS})
# The normal rhythm of a running episode, changing every step (not reported as a hold).
STEPPING = frozenset({Hold.RUNNING, Hold.EXECUTING, Hold.WAITING_FOR_CHUNK, Hold.WAITING_FOR_STATE})
HOME = "the arm is home"  # go_home's answer once it is


@dataclass(frozen=True)
class RequestOut:
    """A ChunkRequest to publish."""

    episode_id: str
    request_id: int
    step: int  # control step at which the chunk will start
    greedy: bool
    stamp_ns: int  # the chunk must come from observations no older than this


@dataclass(frozen=True)
class CommandOut:
    """A joint command to send (one JointTrajectory point lasting one period)."""

    command: Command
    step: int  # 0-based control step of the episode this command executes; -1 for a homing command
    stamp_ns: int  # stamp of the joint state it was computed from


@dataclass
class _Episode:
    episode_id: str
    greedy: bool
    max_steps: int  # 0: no limit
    stamp_ns: int


@dataclass
class _Request:
    request_id: int
    step: int
    stamp_ns: int
    sent_at: float


@dataclass
class _JointState:
    arm: np.ndarray  # (J,) rad
    stamp_ns: int
    received_at: float
    outside_limits: str  # why it must not be commanded from (Commander.outside_limits); "" if it may


@dataclass
class Lockstep:
    """When the next command is due, by the stamps of the joint states (the robot's clock).

    A command computed from the joint state stamped s lasts one period, so the next is computed from
    the state stamped at its end: in a lockstep sim the one the step produced, on a real arm the one
    the driver stamps a period later. A stamp up to a quarter period early counts as on time (a
    driver's clock jitters; a float sim clock once put one step 1 ns short and stalled the loop), and
    the next boundary stays on the grid (max(boundary, s) + period), so early stamps never raise the
    command rate. The recorder applies the same rule to find the joint state of each frame."""

    period_ns: int
    boundary_ns: int = 0  # the nominal stamp of the next command's joint state; 0: due at once

    def due(self, stamp_ns: int) -> bool:
        """Whether a joint state stamped stamp_ns ends the previous command's period."""
        return stamp_ns >= self.boundary_ns - self.period_ns // 4

    def sent(self, stamp_ns: int) -> None:
        """A command was computed from the joint state stamped stamp_ns."""
        self.boundary_ns = max(self.boundary_ns, stamp_ns) + self.period_ns


class ExecutorCore:
    """One arm's executor state machine. Call the event methods, then `advance(now)` for the outputs."""

    def __init__(self, commander: Commander, config: ExecutorConfig | None = None) -> None:
        self.commander = commander
        self.robot = commander.robot
        self.config = config or ExecutorConfig()
        self.period_ns = round(self.robot.period * NS_PER_S)
        self.estopped = False
        self.hold = Hold.NO_EPISODE
        self.rejections: Counter[str] = Counter()
        self.clamps: Counter[str] = Counter()
        self.last_rejection: Rejection | None = None
        self.commands_sent = 0
        self.chunk_timeouts = 0  # requests asked again after chunk_timeout_s
        self._request_ids = 0
        self._episode: _Episode | None = None
        self._ended = False
        self._ended_ids: deque[str] = deque(maxlen=ENDED_REMEMBERED)
        self._js: _JointState | None = None
        self._image_at: float | None = None
        self._policy_connected = True  # the node reports it; the core alone assumes a policy listens
        self._robot_connected = True  # the same for the arm's command topic
        self._js_index: dict[tuple[str, ...], np.ndarray] = {}
        self.homing = Homing(self.robot, self.config.home_tolerance)
        self._home_asked_at: float | None = None  # homing while set (wall s of the last go_home)
        self._reset_episode_state()

    # ------------------------------------------------------------------ events
    def start_episode(self, episode_id: str, *, greedy: bool, max_steps: int, stamp_ns: int) -> bool:
        """A new episode (EpisodeStart); False if it is the running one again (latched re-delivery) or one
        whose result was seen (a restarted executor gets the latched start of an episode that ended)."""
        if (self._episode is not None and self._episode.episode_id == episode_id) or self.has_ended(episode_id):
            return False
        self._episode = _Episode(episode_id, greedy, max(0, max_steps), stamp_ns)
        self._ended = False
        self._home_asked_at = None
        self._reset_episode_state()
        return True

    def end_episode(self, episode_id: str) -> bool:
        """The episode's EpisodeResult is out: hold until the next start. False for another episode (it is
        remembered: its start may come later, topics are not ordered with each other)."""
        if episode_id not in self._ended_ids:
            self._ended_ids.append(episode_id)
        if self._episode is None or self._episode.episode_id != episode_id or self._ended:
            return False
        self._ended = True
        self._drop_plan()
        return True

    def joint_state(self, names: Sequence[str], positions: Sequence[float], stamp_ns: int, now: float) -> str | None:
        """A joint_states message; returns why it was unusable, or None."""
        key = tuple(names)
        index = self._js_index.get(key)
        if index is None:
            missing = [j for j in self.robot.joints if j not in key]
            if missing:
                return f"joint_states lack joints {missing} (has {list(key)})"
            index = self._js_index.setdefault(key, np.array([key.index(j) for j in self.robot.joints]))
        positions = np.asarray(positions, dtype=float)
        if positions.shape != (len(key),):
            return f"joint_states has {len(key)} names but {positions.size} positions"
        arm = positions[index]
        if not np.all(np.isfinite(arm)):
            return f"joint_states positions are not finite: {arm}"
        if self._js is not None and stamp_ns < self._js.stamp_ns:
            if now - self._js.received_at <= self.config.joint_state_timeout_s:
                # Late, or a second publisher: commanding from it would send the arm back to where it was.
                return (f"joint_states stamped {(self._js.stamp_ns - stamp_ns) / 1e6:.1f} ms before the newest one "
                        "(out of order, or another node publishes joint_states too)")
            self._lockstep.boundary_ns = 0  # the robot's clock went back (a restarted sim): do not wait for it
        # Kept, not dropped, when outside the limits: the arm then holds on it and /diagnostics says why.
        self._js = _JointState(arm, stamp_ns, now, self.commander.outside_limits(arm, self.config.joint_limit_margin))
        return None

    def image(self, now: float) -> None:
        """A camera image arrived (feeds the image watchdog)."""
        self._image_at = now

    def chunk(self, chunk: ChunkIn) -> Rejection | None:
        """An ActionChunk; returns its rejection, or None when it was accepted."""
        episode = self._episode if not self._ended else None
        request = self._request
        if self.estopped:
            result: Chunk | Rejection = Rejection(RejectReason.ESTOP, "e-stop latched; release it first")
        else:
            result = validate_chunk(
                chunk, episode_id=episode.episode_id if episode else None,
                request_id=request.request_id if request else None,
                request_stamp_ns=request.stamp_ns if request else 0,
                action_mode=self.robot.action_mode, action_dims=self.robot.action_dims)
        if isinstance(result, Rejection):
            self.rejections[result.reason.value] += 1
            self.last_rejection = result
            return result
        self._request = None
        self.policy_version = result.policy_version
        if self._remaining() == 0:
            self._rows, self._row = result.actions, 0
        else:
            self._next = result.actions
        return None

    def has_ended(self, episode_id: str) -> bool:
        """Whether this episode's result was seen (one of the last ENDED_REMEMBERED)."""
        return episode_id in self._ended_ids

    def estop(self) -> bool:
        """Latch the e-stop and drop the plan. False if it was already latched."""
        was = self.estopped
        self.estopped = True
        self._home_asked_at = None
        self._drop_plan()
        return not was

    def go_home(self, now: float) -> tuple[bool, str]:
        """Step the arm home (between episodes); call it again while waiting. (accepted, why): HOME once
        the newest joint state is within home_tolerance of the home pose."""
        js, cfg = self._js, self.config
        if self.estopped:
            return False, "e-stop latched; release it first"
        if self._episode is not None and not self._ended:
            return False, f"episode {self._episode.episode_id} is running"
        if js is None or now - js.received_at > cfg.joint_state_timeout_s:
            return False, "no fresh joint_states: the arm's position is unknown"
        if js.outside_limits:
            return False, f"joint_states outside the joint limits: {js.outside_limits}"
        if self.homing.at_home(js.arm):
            self._home_asked_at = None
            return True, HOME
        self._home_asked_at = now
        return True, "sending the arm home"

    def policy_connected(self, connected: bool) -> None:
        """Whether a policy listens for requests. A request sent with none listening is lost, so the
        outstanding one is forgotten and a fresh one goes out as soon as a policy (re)appears."""
        if not connected:
            self._request = None
        self._policy_connected = connected

    def robot_connected(self, connected: bool) -> None:
        """Whether anything listens for joint commands. A command sent with none listening is lost, and
        a lockstep sim then never steps (no newer joint state ends the period): the arm holds instead,
        e.g. while a respawned executor's command writer has not yet matched the sim's reader."""
        self._robot_connected = connected

    def release(self) -> tuple[bool, str]:
        """Release a latched e-stop (only the release service calls this)."""
        if not self.estopped:
            return False, "e-stop was not latched"
        self.estopped = False
        return True, "e-stop released; the next chunk is requested from the current state"

    # -------------------------------------------------------------------- loop
    def advance(self, now: float) -> list[RequestOut | CommandOut]:
        """What to send now: at most one chunk request and one command. Sets `hold`."""
        if self._home_asked_at is not None:
            return self._home(now)
        self.hold = self._blocked(now)
        if self.hold is not Hold.RUNNING:
            return []
        js = self._js
        assert js is not None and self._episode is not None
        out: list[RequestOut | CommandOut] = []
        if self._remaining() == 0 and self._next is not None:
            self._rows, self._row, self._next = self._next, 0, None
        remaining = self._remaining()
        request = self._request
        timed_out = request is not None and now - request.sent_at > self.config.chunk_timeout_s
        if timed_out:
            self.chunk_timeouts += 1
        limit = self._episode.max_steps
        if (request is None or timed_out) and self._next is None and remaining <= self.config.request_ahead_steps \
                and (limit == 0 or self.step + remaining < limit):
            out.append(self._new_request(js.stamp_ns, now))
        if remaining == 0:
            self.hold = Hold.CHUNK_TIMEOUT if timed_out else Hold.WAITING_FOR_CHUNK
            return out
        action = self._rows[self._row]
        self._row += 1
        command = self.commander.command(js.arm, action)
        self.clamps.update(command.clamped)
        out.append(CommandOut(command, self.step, js.stamp_ns))
        self.step += 1
        self.commands_sent += 1
        self._lockstep.sent(js.stamp_ns)
        return out

    @property
    def hold_detail(self) -> str:
        """More on the hold than its name, where there is more: which joint lies how far out of its limits."""
        js = self._js
        return js.outside_limits if self.hold is Hold.OUT_OF_LIMITS and js is not None else ""

    def status(self) -> dict[str, str]:
        """Key values for /diagnostics."""
        episode = self._episode
        return {
            "hold": self.hold.value,
            "hold_detail": self.hold_detail,
            "estop": str(self.estopped).lower(),
            "episode_id": episode.episode_id if episode else "",
            "episode_ended": str(self._ended).lower(),
            "step": str(self.step),
            "policy_version": str(self.policy_version),
            "commands_sent": str(self.commands_sent),
            "chunk_timeouts": str(self.chunk_timeouts),
            "last_rejection": str(self.last_rejection or ""),
            **{f"rejected/{k}": str(v) for k, v in sorted(self.rejections.items())},
            **{f"clamped/{k}": str(v) for k, v in sorted(self.clamps.items())},
        }

    # ----------------------------------------------------------------- helpers
    def _home(self, now: float) -> list[RequestOut | CommandOut]:
        """One homing command per control step, as long as go_home keeps asking."""
        js = self._js
        assert js is not None and self._home_asked_at is not None  # go_home needs a joint state
        if now - self._home_asked_at > self.config.home_keepalive_s or self.homing.at_home(js.arm):
            self._home_asked_at = None
            self.hold = self._blocked(now)
            return []
        self.hold = self._joint_fault(js, now) or (Hold.HOMING if self._robot_connected else Hold.NO_ROBOT)
        if self.hold is not Hold.HOMING or not self._lockstep.due(js.stamp_ns):
            return []
        command = self.homing.command(js.arm)  # always step-capped: not counted in `clamps`
        self.commands_sent += 1
        self._lockstep.sent(js.stamp_ns)
        return [CommandOut(command, -1, js.stamp_ns)]

    def _joint_fault(self, js: _JointState, now: float) -> Hold | None:
        """Why the arm must not be commanded from this joint state: too old, or outside the limits."""
        if now - js.received_at > self.config.joint_state_timeout_s:
            return Hold.STALE_JOINT_STATES
        if js.outside_limits:
            return Hold.OUT_OF_LIMITS
        return None

    def _blocked(self, now: float) -> Hold:
        episode, js, cfg = self._episode, self._js, self.config
        if self.estopped:
            return Hold.ESTOP
        if episode is None:
            return Hold.NO_EPISODE
        if self._ended:
            return Hold.EPISODE_ENDED
        if episode.max_steps and self.step >= episode.max_steps:
            return Hold.MAX_STEPS
        if not self._policy_connected:
            return Hold.NO_POLICY
        if not self._robot_connected:
            return Hold.NO_ROBOT
        if js is None:
            return Hold.NO_JOINT_STATES
        fault = self._joint_fault(js, now)
        if fault is not None:
            return fault
        if js.stamp_ns < episode.stamp_ns:
            return Hold.WAITING_FOR_STATE
        if cfg.image_timeout_s and (self._image_at is None or now - self._image_at > cfg.image_timeout_s):
            return Hold.STALE_IMAGE
        if not self._lockstep.due(js.stamp_ns):
            return Hold.EXECUTING
        return Hold.RUNNING

    def _new_request(self, stamp_ns: int, now: float) -> RequestOut:
        assert self._episode is not None
        self._request_ids += 1
        step = self.step + self._remaining()
        self._request = _Request(self._request_ids, step, stamp_ns, now)
        return RequestOut(self._episode.episode_id, self._request_ids, step, self._episode.greedy, stamp_ns)

    def _remaining(self) -> int:
        return len(self._rows) - self._row

    def _drop_plan(self) -> None:
        """Forget chunks and the outstanding request (their answers are then rejected as unrequested)."""
        self._rows: np.ndarray = np.zeros((0, 0))
        self._row = 0
        self._next: np.ndarray | None = None
        self._request: _Request | None = None

    def _reset_episode_state(self) -> None:
        self._drop_plan()
        self.step = 0
        self.policy_version = 0
        self._lockstep = Lockstep(self.period_ns)
