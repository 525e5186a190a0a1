"""The recorder's frame alignment without ROS: one arm's episode starts, chunk requests, chunks, joint
states, images and results in (plain values, stamps in ns, in any order), complete episodes out.

Frames: frame k of an episode is control step k as the executor runs it (ExecutorCore's rule,
mirrored). The chunk answering an outstanding chunk_request (validated as the executor does)
holds the actions of steps request.step, request.step + 1, ...; step k's joint state is the first one
stamped at or after the episode's start that ends the previous frame's control period by the
executor's `Lockstep` (the state the executor computed step k's command from: exact in lockstep sim
and mid-chunk; on a real arm that waited for a chunk, the held arm's state at the boundary). The
frame holds that joint state as the policy's proprioception (ros.convert.proprio_from_joint_state,
what the policy node sees), the newest image of each camera stamped at or before it (waiting until an
image stamped at or after it shows that nothing closer can come, or until the episode's end), and
step k's action. Frames are formed from short histories of joint states and images, so messages of
different topics may arrive in any order (they do, when the writer thread keeps the process busy).

Labels come from the EpisodeResult, the instruction from the EpisodeStart. Frames beyond the
result's `steps` or stamped after it are cut (a command sent while the result was on its way, whose
outcome the episode does not contain; the core env's episodes end there too). An episode is written
only if the recorder saw it from step 0 and every frame has an image per camera. One written before
its frames cover its steps (Ctrl-C drained it, or its last frames never came) is incomplete: end
reason `error`, failed, reward 0, whatever its result said (`episode_from`).

Input that no episode of the dataset could hold is refused (the recorder then stops with the reason,
as at a start-up check, instead of losing every episode): a camera's first image of another size than
the dataset's, a chunk whose actions are named otherwise than the dataset's (another action dim; the
first chunk fixes them for a new dataset). An odd-sized image among right-sized ones is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.control import ChunkIn, Lockstep, Rejection, validate_chunk
from vla_rl_ros.data.episode import Episode, EpisodeBuilder
from vla_rl_ros.sim import action_names as sim_action_names

JOINT_HISTORY = 2000  # joint states kept: 2 s of a 1 kHz ros2_control broadcaster
IMAGE_HISTORY = 16  # images kept per camera: a frame takes one within a few camera periods of its stamp
# A busy recorder (the writer thread appending) reads its queues late and in no particular topic
# order, so messages of one episode may be read in any order; these waits (wall s) bound that:
UNANNOUNCED_WAIT_S = 5.0  # requests, chunks and results read before their EpisodeStart wait this long for it
LATE_MESSAGES_S = 5.0  # frames and images stamped before an episode's end may be read this long after its result
RESULT_WAIT_S = 10.0  # an episode ended by the next one's start waits this long for its own result
SKIPPED_IDS = 16  # ids of episodes skipped on purpose, remembered so their messages are not counted as drops
INCOMPLETE = "error"  # EpisodeResult.END_ERROR: the end reason of an episode whose frames do not cover its steps


@dataclass(frozen=True)
class StartIn:
    """The fields of a vla_rl_interfaces/EpisodeStart the recorder reads."""

    episode_id: str
    task: str
    seed: int
    instruction: str
    evaluation: bool
    max_steps: int  # 0: no limit
    stamp_ns: int  # header.stamp: no earlier episode takes frames from here on


@dataclass(frozen=True)
class RequestIn:
    """The fields of a vla_rl_interfaces/ChunkRequest the recorder reads."""

    episode_id: str
    request_id: int
    step: int  # the control step the answering chunk starts at
    stamp_ns: int  # header.stamp: the chunk must come from observations no older


@dataclass(frozen=True)
class ResultIn:
    """The fields of a vla_rl_interfaces/EpisodeResult the recorder reads."""

    episode_id: str
    task: str
    seed: int
    instruction: str
    group_id: str
    success: bool
    reward: float
    steps: int  # control periods the episode ran
    policy_version: int
    evaluation: bool
    end_reason: str
    stamp_ns: int  # header.stamp; 0 (a hand-made result) limits no frame


@dataclass
class Frame:
    """One control step of an episode: what the policy saw and the action the executor then ran."""

    stamp_ns: int  # the joint state's stamp
    state: np.ndarray  # (P,) float32
    action: np.ndarray  # (A,)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8, filled later


@dataclass
class Recording:
    """One episode being recorded: its announcement, actions by step, frames, and its result once out."""

    start: StartIn
    lockstep: Lockstep  # which joint state ends the previous frame's control period (the executor's rule)
    actions: dict[int, np.ndarray] = field(default_factory=dict)  # step -> (A,)
    requests: dict[int, tuple[int, int]] = field(default_factory=dict)  # request_id -> (step, stamp_ns)
    answered: set[int] = field(default_factory=set)  # request ids whose chunk was taken
    early_chunks: list[ChunkIn] = field(default_factory=list)  # chunks whose request has not arrived yet
    from_start: bool = False  # the request for step 0 was seen
    frames: list[Frame] = field(default_factory=list)
    result: ResultIn | None = None
    ended_at: float = 0.0  # wall time its result (or the next episode's start) arrived; 0 while running
    end_ns: int = 2**63 - 1  # no frame from a joint state stamped later: the result's or next start's stamp

    @property
    def episode_id(self) -> str:
        return self.start.episode_id

    def covers_steps(self, newest_joint_ns: int | None) -> bool:
        """Whether every frame of the ended episode is in: one per step of its result, or a joint state
        stamped after its end has arrived (`newest_joint_ns`; joint states arrive in order, so none of
        the episode is still to come) and no chunk waits for its request. The result's `steps` counts
        control periods: exactly the commands in lockstep sim, but on a real arm also periods in which
        the executor held (waiting for a chunk), which have no frame."""
        assert self.result is not None
        return len(self.frames) >= self.result.steps or (
            newest_joint_ns is not None and newest_joint_ns > self.end_ns and not self.early_chunks)


def episode_from(rec: Recording, cameras: list[str], *, covered: bool) -> Episode:
    """The episode to write from an ended recording whose frames all have their images: frames up to
    the result's steps (a command sent while the result was on its way has no outcome in the episode;
    the core env's episode ends after result.steps actions too), labelled by the result and the start.

    Not `covered` (Recording.covers_steps: the recorder stopped, or gave up waiting, before every
    frame came): written as incomplete, end reason `error`, failed, reward 0, whatever the result
    said. A truncated success must not teach a classifier or SFT that its last frames succeeded; the
    learner and classifier training skip `error` episodes. Raises ValueError for frames the episode
    format refuses."""
    r, s = rec.result, rec.start
    assert r is not None
    frames = rec.frames[: r.steps] if 0 < r.steps < len(rec.frames) else rec.frames
    builder = EpisodeBuilder()
    for f in frames:
        builder.add({c: f.images[c] for c in cameras}, f.state, f.action)
    success, reward, end_reason = (r.success, float(r.reward), r.end_reason) if covered else \
        (False, 0.0, INCOMPLETE)
    return builder.build(
        task=r.task or s.task, instruction=s.instruction or r.instruction, seed=r.seed, success=success,
        reward=reward, end_reason=end_reason, policy_version=r.policy_version, group_id=r.group_id,
        episode_id=rec.episode_id, evaluation=r.evaluation)


def recorded_action_names(action_mode: str, joints: Sequence[str], action_dim: int) -> tuple[str, ...]:
    """Names of the action's entries in the dataset: in joint_position mode the robot's arm `joints` and
    the gripper (sim.action_names gives the sim arm's seven, whatever the arm); in ee_delta mode the
    sim's, the same for every arm."""
    return (*joints, "gripper") if action_mode == "joint_position" else sim_action_names(action_mode, action_dim)


@dataclass(frozen=True)
class Finished:
    """An ended episode to append, with the names of its action's entries (the dataset's metadata)."""

    episode: Episode
    action_names: tuple[str, ...]


class FrameAligner:
    """One arm's episodes being recorded: call the event methods as messages arrive (`now`: a
    monotonic wall clock in s, which bounds the waits for late messages), `tick(now)` periodically;
    those that end episodes return them. Drops are reported as `drop(cause, detail)` (ros.causes.DropLog),
    input the dataset cannot hold as `refuse(reason)` (module docstring), the rest as `log(level, text)`.
    `arm_joints`: the robot's (joint_position actions are named after them); `image_sizes` and
    `action_names`: the dataset's, or empty for a new one."""

    def __init__(self, *, cameras: Sequence[str], period_ns: int, action_mode: str, action_dims: tuple[int, ...],
                 arm_joints: Sequence[str], image_sizes: dict[str, tuple[int, int]], action_names: tuple[str, ...],
                 record_evaluation: bool, drop: Callable[[str, str], None], refuse: Callable[[str], None],
                 log: Callable[[str, str], None]) -> None:
        self.cameras, self.period_ns, self.record_evaluation = list(cameras), period_ns, record_evaluation
        self.action_mode, self.action_dims = action_mode, action_dims  # the robot's, which chunks must match
        self.arm_joints = tuple(arm_joints)
        self.drop, self.refuse, self.log = drop, refuse, log
        self.images: dict[str, deque[tuple[int, np.ndarray]]] = {c: deque(maxlen=IMAGE_HISTORY) for c in cameras}
        self.sizes = dict(image_sizes)  # camera -> (H, W): the dataset's, or fixed by the first image if new
        self.action_names = action_names  # the dataset's, or fixed by the first chunk if new
        self.joints: deque[tuple[int, np.ndarray]] = deque(maxlen=JOINT_HISTORY)  # (stamp, state (P,))
        # Episodes not written yet, oldest first: the last is the running one; earlier ones wait for their
        # result, late frames and images.
        self.episodes: list[Recording] = []
        self.skipped: deque[str] = deque(maxlen=SKIPPED_IDS)  # evaluation episodes not recorded (parameter)
        self.unannounced: list[tuple[float, RequestIn | ChunkIn | ResultIn]] = []  # (wall s, message)

    # -- episodes --------------------------------------------------------------------------------
    def episode(self, episode_id: str) -> Recording | None:
        """The episode still being recorded (not yet handed out, nor dropped) with this id."""
        return next((r for r in self.episodes if r.episode_id == episode_id), None)

    def start(self, msg: StartIn, now: float) -> list[Finished]:
        """Open an episode (a latched start seen again is ignored); it ends every earlier one."""
        if self.episode(msg.episode_id) is not None or msg.episode_id in self.skipped:
            return []
        for rec in self.episodes:  # no earlier episode takes frames from this one's time on
            rec.end_ns = min(rec.end_ns, msg.stamp_ns)
            rec.ended_at = rec.ended_at or now
        if msg.evaluation and not self.record_evaluation:
            self.skipped.append(msg.episode_id)
            return []
        self.episodes.append(Recording(msg, Lockstep(self.period_ns)))
        self.log("info", f"episode {msg.episode_id} started ({msg.task}, seed {msg.seed}); recording it")
        early = [m for _, m in self.unannounced if m.episode_id == msg.episode_id]
        self.unannounced = [(t, m) for t, m in self.unannounced if m.episode_id != msg.episode_id]
        finished = []
        for m in sorted(early, key=lambda m: isinstance(m, ResultIn)):  # what overtook the start, result last
            if isinstance(m, RequestIn):
                self.request(m, now)
            elif isinstance(m, ChunkIn):
                self.chunk(m, now)
            else:
                finished += self.result(m, now)
        return finished

    def result(self, msg: ResultIn, now: float) -> list[Finished]:
        """Label the episode and close it to later frames; it is handed out once complete (`tick`)."""
        rec = self.episode(msg.episode_id)
        if rec is None:
            self.wait_for_start(msg, now)
            return []
        if rec.result is not None:
            return []
        rec.result, rec.ended_at = msg, now
        if msg.stamp_ns > 0:  # an unstamped result (a hand-made one) limits nothing
            rec.end_ns = min(rec.end_ns, msg.stamp_ns)
        return self.tick(now)

    def wait_for_start(self, msg: RequestIn | ChunkIn | ResultIn, now: float) -> None:
        if msg.episode_id not in self.skipped:
            self.unannounced.append((now, msg))

    def complete(self, rec: Recording) -> bool:
        """Every frame of the ended episode is in, each with its images (messages stamped before the
        result may be delivered after it: topics are not ordered)."""
        return rec.covers_steps(self.newest_joint_ns()) and all(len(f.images) == len(self.images) for f in rec.frames)

    def newest_joint_ns(self) -> int | None:
        """Stamp of the newest joint state read (they arrive in order); None before the first."""
        return self.joints[-1][0] if self.joints else None

    def tick(self, now: float) -> list[Finished]:
        """Hand out each ended episode once it is complete (or the wait for late messages is over); drop
        one whose result does not come, and messages whose start does not."""
        stale = [m for t, m in self.unannounced if now - t > UNANNOUNCED_WAIT_S]
        self.unannounced = [(t, m) for t, m in self.unannounced if now - t <= UNANNOUNCED_WAIT_S]
        for m in stale:
            kind = "chunk_request" if isinstance(m, RequestIn) else "action_chunk" if isinstance(m, ChunkIn) else \
                "result"
            self.drop(f"{kind} of an episode not being recorded", f"{m.episode_id!r}")
        finished = []
        for rec in list(self.episodes):
            if rec.result is not None and (self.complete(rec) or now - rec.ended_at > LATE_MESSAGES_S):
                self.episodes.remove(rec)
                finished += self.finish(rec)
            elif rec.result is None and rec.ended_at and now - rec.ended_at > RESULT_WAIT_S:
                self.episodes.remove(rec)
                self.drop("episode without a result", f"{rec.episode_id}: none within {RESULT_WAIT_S:.0f} s "
                                                      "of the next episode's start")
        return finished

    def drain(self) -> list[Finished]:
        """Every episode whose result is out, complete or not (the recorder stops); the rest are lost."""
        finished = [f for rec in self.episodes if rec.result is not None for f in self.finish(rec)]
        self.episodes = []
        return finished

    def finish(self, rec: Recording) -> list[Finished]:
        """The ended episode to write (none, with the drop's reason, if it cannot be)."""
        assert rec.result is not None
        for camera in self.images:
            self.fill_images(rec, camera, final=True)
        missing = [i for i, f in enumerate(rec.frames) if len(f.images) != len(self.images)]
        if not rec.from_start or not rec.frames or missing:
            why = ("episode joined after its start (no chunk_request for step 0 seen)" if not rec.from_start else
                   "episode without frames (no joint_states or chunks received)" if not rec.frames else
                   f"frames {missing[:5]} lack a camera image stamped at or before them")
            self.drop("episode not recorded", f"{rec.episode_id}: {why}")
            return []
        covered = rec.covers_steps(self.newest_joint_ns())
        try:
            episode = episode_from(rec, self.cameras, covered=covered)
        except ValueError as exc:
            self.drop("episode not recorded", f"{rec.episode_id}: {exc}")
            return []
        if covered:
            self.log("info", f"episode {rec.episode_id} complete; queued for writing")
        else:
            self.log("warning", f"episode {rec.episode_id} incomplete: {len(rec.frames)} frames of its "
                                f"{rec.result.steps} steps (the recorder stopped, or gave up waiting, before the "
                                f"rest came); queued for writing with end reason error instead of "
                                f"{rec.result.end_reason}")
        return [Finished(episode, self.action_names)]

    # -- actions -----------------------------------------------------------------------------------
    def request(self, msg: RequestIn, now: float) -> None:
        """Note the step a chunk request starts at, and take the chunks that came before it."""
        rec = self.episode(msg.episode_id)
        if rec is None:
            self.wait_for_start(msg, now)
            return
        rec.requests.setdefault(msg.request_id, (msg.step, msg.stamp_ns))
        rec.from_start = rec.from_start or msg.step == 0
        waiting = [c for c in rec.early_chunks if c.request_id == msg.request_id]
        rec.early_chunks = [c for c in rec.early_chunks if c.request_id != msg.request_id]
        for chunk in waiting:
            self.chunk(chunk, now)

    def outstanding(self, rec: Recording, request_id: int) -> bool:
        """The executor still waits for this request's answer: it is known, unanswered, and no later
        request starts at its step or before (a re-request after a time-out supersedes it). Decided
        from the requests, not from arrival order, which differs between topics."""
        if request_id not in rec.requests or request_id in rec.answered:
            return False
        step = rec.requests[request_id][0]
        return not any(r > request_id and s <= step for r, (s, _) in rec.requests.items())

    def chunk(self, msg: ChunkIn, now: float) -> None:
        """Take a chunk's actions as the executor would (the chunk answering the outstanding request)."""
        rec = self.episode(msg.episode_id)
        if rec is None:
            self.wait_for_start(msg, now)
            return
        if msg.request_id not in rec.requests and msg.request_id > max(rec.requests, default=-1):
            rec.early_chunks.append(msg)  # delivered before its request
            return
        ok = self.outstanding(rec, msg.request_id)
        step, request_ns = rec.requests.get(msg.request_id, (0, 0))
        chunk = validate_chunk(msg, episode_id=rec.episode_id, request_id=msg.request_id if ok else None,
                               request_stamp_ns=request_ns, action_mode=self.action_mode,
                               action_dims=self.action_dims)
        if isinstance(chunk, Rejection):
            self.drop(f"action_chunk not executed ({chunk.reason.value})", chunk.detail)
            return
        names = recorded_action_names(self.action_mode, self.arm_joints, chunk.actions.shape[1])
        if self.action_names and names != self.action_names:
            self.refuse(f"the policy sends {len(names)}-dim {self.action_mode} actions {list(names)}; the dataset "
                        f"holds {len(self.action_names)}-dim actions {list(self.action_names)}")
            return
        self.action_names = names
        rec.answered.add(msg.request_id)
        for i, row in enumerate(chunk.actions):  # (C, A): steps step .. step + C - 1
            rec.actions[step + i] = row.astype(np.float32)
        self.take_frames(rec)

    # -- observations ------------------------------------------------------------------------------
    def joint_state(self, stamp_ns: int, state: np.ndarray) -> None:
        """A joint state as the policy's proprioception (P,); a re-sent or out-of-order one is ignored."""
        if self.joints and stamp_ns <= self.joints[-1][0]:
            return  # a re-sent (heartbeat) or out-of-order joint state
        self.joints.append((stamp_ns, state))
        for rec in self.episodes:
            self.take_frames(rec)

    def next_joint_state(self, rec: Recording) -> tuple[int, np.ndarray] | None:
        """The first joint state of the episode that ends the previous frame's period (what the executor acts on)."""
        found = None
        for stamp, state in reversed(self.joints):
            if stamp < rec.start.stamp_ns or not rec.lockstep.due(stamp):
                break
            found = (stamp, state)
        return found

    def take_frames(self, rec: Recording) -> None:
        """Each step's frame once its action and joint state are in (see the module docstring)."""
        while True:
            step = len(rec.frames)
            if (rec.start.max_steps and step >= rec.start.max_steps) or step not in rec.actions or \
                    (rec.result is not None and step >= rec.result.steps):
                return  # no command was sent for it (limit, no action yet, or the episode ended before it)
            joints = self.next_joint_state(rec)
            if joints is None or joints[0] > rec.end_ns:
                return
            rec.frames.append(Frame(joints[0], joints[1], rec.actions.pop(step)))
            rec.lockstep.sent(joints[0])
            for camera in self.images:
                self.fill_images(rec, camera)

    def image(self, camera: str, stamp_ns: int, rgb: np.ndarray) -> None:
        """A camera's (H, W, 3) uint8 RGB image; one of another size than the camera's first is dropped,
        a first one of another size than the dataset's refused."""
        history = self.images[camera]
        size = self.sizes.setdefault(camera, rgb.shape[:2])
        if rgb.shape[:2] != size and not history:
            self.refuse(f"camera {camera} publishes {rgb.shape[1]}x{rgb.shape[0]} images, the dataset holds "
                        f"{size[1]}x{size[0]} (W x H)")
            return
        if rgb.shape[:2] != size:
            self.drop(f"{camera} image size", f"{rgb.shape[1]}x{rgb.shape[0]}, the dataset's is "
                                              f"{size[1]}x{size[0]} (W x H)")
            return
        if history and stamp_ns <= history[-1][0]:
            return  # a re-sent (heartbeat) or out-of-order image
        history.append((stamp_ns, rgb))
        for rec in self.episodes:
            self.fill_images(rec, camera)

    def fill_images(self, rec: Recording, camera: str, final: bool = False) -> None:
        """Give frames their newest `camera` image stamped at or before them, once an image stamped at
        or after them has arrived (nothing closer can come then), or now if `final`."""
        history = self.images[camera]
        if not history:
            return
        for f in rec.frames:
            if camera in f.images:
                continue
            if not final and history[-1][0] < f.stamp_ns:
                return  # later frames are later still
            older = [image for stamp, image in history if stamp <= f.stamp_ns]
            if older:
                f.images[camera] = older[-1]
