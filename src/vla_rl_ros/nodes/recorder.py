"""recorder: writes one arm's episodes to a dataset on disk (LeRobotDataset v3 layout), reward-labelled.

ROS surface (names relative to the arm's namespace)
  subscribes  episode_start      vla_rl_interfaces/EpisodeStart   reliable, transient local, depth 10: opens one
              chunk_request      vla_rl_interfaces/ChunkRequest   reliable: the control step a chunk starts at
              action_chunk       vla_rl_interfaces/ActionChunk    reliable: the actions, accepted as the executor
                                                                  accepts them (control.chunks.validate_chunk)
              joint_states       sensor_msgs/JointState           reliable, depth 100 (the sim bridge and
                                                                  ros2_control's broadcaster publish reliable;
                                                                  a lost one would shift the frames)
              <camera_topics>    sensor_msgs/Image rgb8/bgr8      sensor data QoS, depth 30; one topic per camera
              episode_result     vla_rl_interfaces/EpisodeResult  reliable, depth 100: labels, closes the episode
  services    label_episode      vla_rl_interfaces/LabelEpisode   relabel a recorded episode (operator's
                                                                  correction, persistent); empty id: the last one
  parameters  see Params below (config/recorder.yaml)

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

Writing: finished episodes go through a queue to a writer thread (an append encodes videos for
seconds; no message is missed meanwhile), which creates the dataset with the first episode's camera
sizes if the root holds none, and appends atomically. Relabels go through the same queue, so a label
for an episode still waiting is applied after it is written. On shutdown the queue is drained: a
finished episode is never lost to Ctrl-C; kill -9 loses at most the episodes still queued, never
an earlier one (appends are atomic), and a restarted recorder (the launch files respawn it) appends
to the same dataset; the episode under way at the kill is lost (it was not seen from step 0).
With bag_dir set, each episode is also written as a rosbag2 MCAP (data.bag.export_mcap: cameras,
joint_states, actions, instruction, success, reward, labels). A starting recorder removes the staging
folders (<bag_dir>/episode_*.tmp-<pid>) of exports a kill cut short and writes those bags again.

The success detector's verdicts (`success`) are not subscribed: the episode manager ends an episode
on them and its EpisodeResult carries the label, which is what the dataset and the bag record.
"""

from __future__ import annotations

import dataclasses
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart
from vla_rl_interfaces.srv import LabelEpisode

from vla_rl_ros.control import SIM_PANDA, Lockstep, RobotConfig, make_arm
from vla_rl_ros.control.chunks import Rejection, validate_chunk
from vla_rl_ros.data import DatasetError, Episode, EpisodeBuilder, EpisodeDataset, VideoConfig
from vla_rl_ros.data.atomic import TMP_MARKER, writer_gone
from vla_rl_ros.data.bag import export_mcap
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import MessageError, chunk_from_msg, image_from_msg, proprio_from_joint_state, stamp_ns
from vla_rl_ros.ros.inputs import InputWatch
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.sim import action_names

NS_PER_S = 1_000_000_000
IMAGE_QUEUE = 30  # sensor-data (best effort) queue depth: a second of a 30 Hz camera while busy
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
DEEP = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
IMAGES = QoSProfile(depth=IMAGE_QUEUE, reliability=qos_profile_sensor_data.reliability,
                    durability=qos_profile_sensor_data.durability)
JOINT_HISTORY = 2000  # joint states kept: 2 s of a 1 kHz ros2_control broadcaster
IMAGE_HISTORY = 16  # images kept per camera: a frame takes one within a few camera periods of its stamp
# A busy recorder (the writer thread appending) reads its queues late and in no particular topic
# order, so messages of one episode may be read in any order; these waits (wall s) bound that:
UNANNOUNCED_WAIT_S = 5.0  # requests, chunks and results read before their EpisodeStart wait this long for it
LATE_MESSAGES_S = 5.0  # frames and images stamped before an episode's end may be read this long after its result
RESULT_WAIT_S = 10.0  # an episode ended by the next one's start waits this long for its own result
TICK_S = 0.05  # wall-clock period of those checks
INPUT_CHECK_S = 0.5  # period of the check that every input topic has a publisher
SKIPPED_IDS = 16  # ids of episodes skipped on purpose, remembered so their messages are not counted as drops
BACKLOG_WARNING = 4  # episodes waiting for the writer before the log says it falls behind
LABEL_TIMEOUT_S = 300.0  # how long a label_episode call waits for the writer (behind queued appends)
STATE_EE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")  # after the joints: proprio_from_joint_state's layout
BAG_PREFIX = "episode_"  # <bag_dir>/episode_<6-digit index>: the bag of the dataset's episode <index>
_VIDEO = {f.name: f for f in dataclasses.fields(VideoConfig)}


def video_param(name: str, **limits: Any) -> Any:
    """A parameter that is a VideoConfig field: same default and help (used when creating a dataset)."""
    f = _VIDEO[name]
    return param(f.default, f.metadata["help"] + " (applies when the dataset is created)", **limits)


@dataclass
class Params:
    dataset: str = param("", "dataset root directory (required): created with the first episode if it holds "
                         "none, appended to if it does")
    cameras: list[str] = param(["front", "wrist"], "dataset camera names, one per camera_topics entry")
    camera_topics: list[str] = param(["camera/image_raw", "wrist_camera/image_raw"],
                                     "image topic of each camera (relative to the arm's namespace)")
    robot_config: str = param(SIM_PANDA, "robot config YAML (the executor's): model for the state's end-effector "
                              "part, control rate, action mode")
    fps: int = param(0, "dataset frames per second; 0: the robot config's control rate (a frame is a control step, "
                     "so any other value must equal it)", unit="Hz", low=0, high=1000)
    record_evaluation: bool = param(True, "also record held-out evaluation episodes (EpisodeStart.evaluation)")
    bag_dir: str = param("", "if set, also write each episode as a rosbag2 MCAP folder here "
                         "(<bag_dir>/episode_<index>)")
    video_codec: str = video_param("codec")
    video_crf: int = video_param("crf", low=0, high=63)
    video_preset: str = video_param("preset")
    video_pix_fmt: str = video_param("pix_fmt", choices=("yuv420p", "yuv444p"))
    video_gop: int = video_param("gop", low=1, high=1000)

    def __post_init__(self) -> None:
        if len(self.cameras) != len(self.camera_topics) or not self.cameras or len(set(self.cameras)) != \
                len(self.cameras):
            raise ValueError(f"cameras={self.cameras} and camera_topics={self.camera_topics} must be non-empty "
                             "lists of equal length with distinct camera names")

    def video(self) -> VideoConfig:
        return VideoConfig(codec=self.video_codec, crf=self.video_crf, preset=self.video_preset,
                           pix_fmt=self.video_pix_fmt, gop=self.video_gop)


# ------------------------------------------------------------------------------ one episode, the writer
@dataclass
class Frame:
    stamp_ns: int  # the joint state's stamp
    state: np.ndarray  # (P,) float32
    action: np.ndarray  # (A,)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8, filled later


@dataclass
class Recording:
    """One episode being recorded: its announcement, actions by step, frames, and its result once out."""

    start: EpisodeStart
    start_ns: int
    lockstep: Lockstep  # which joint state ends the previous frame's control period (the executor's rule)
    actions: dict[int, np.ndarray] = field(default_factory=dict)  # step -> (A,)
    requests: dict[int, tuple[int, int]] = field(default_factory=dict)  # request_id -> (step, stamp_ns)
    answered: set[int] = field(default_factory=set)  # request ids whose chunk was taken
    early_chunks: list[ActionChunk] = field(default_factory=list)  # chunks whose request has not arrived yet
    from_start: bool = False  # the request for step 0 was seen
    frames: list[Frame] = field(default_factory=list)
    action_mode: str = ""
    result: EpisodeResult | None = None
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
        (False, 0.0, EpisodeResult.END_ERROR)
    return builder.build(
        task=r.task or s.task, instruction=s.instruction or r.instruction, seed=r.seed, success=success,
        reward=reward, end_reason=end_reason, policy_version=r.policy_version, group_id=r.group_id,
        episode_id=rec.episode_id, evaluation=r.evaluation)


class EpisodeWriter:
    """Owns the dataset: appends and relabels run in order on one thread, fed by a queue.

    `submit(episode, action_names)` returns at once; `relabel(...)` returns a Future of (accepted,
    message); `close()` writes everything still queued, then joins the thread."""

    def __init__(self, root: Path, *, fps: int, cameras: list[str], state_names: tuple[str, ...], robot_type: str,
                 video: VideoConfig, bag_dir: Path | None, namespace: str, log: Callable[[str, str], None]) -> None:
        self.root, self.fps, self.cameras, self.state_names = root, fps, cameras, state_names
        self.robot_type, self.video, self.bag_dir, self.namespace, self.log = robot_type, video, bag_dir, namespace, log
        self.ds: EpisodeDataset | None = None
        self.last_id = ""  # the episode this writer wrote last, for a relabel with an empty id
        if (root / "meta" / "info.json").is_file():
            self.ds = EpisodeDataset.open(root)  # also removes what a killed append left
            self.check_schema(self.ds)
        else:
            root.mkdir(parents=True, exist_ok=True)
        self.jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        if bag_dir is not None:
            self.recover_bags(bag_dir)
        self.thread = threading.Thread(target=self.run, name="episode_writer", daemon=True)
        self.thread.start()

    def check_schema(self, ds: EpisodeDataset) -> None:
        state = tuple(ds.features["observation.state"]["names"])
        if sorted(ds.cameras) != sorted(self.cameras) or ds.fps != self.fps or state != self.state_names:
            raise ParameterError(f"dataset {self.root} holds cameras {sorted(ds.cameras)} at {ds.fps} fps with state "
                                 f"{list(state)}; this recorder makes cameras {sorted(self.cameras)} at {self.fps} "
                                 f"fps with state {list(self.state_names)}: choose another dataset root")

    def recover_bags(self, bag_dir: Path) -> None:
        """Remove the staging folders of bags whose export a kill -9 cut short (export_mcap writes
        <bag>.tmp-<pid> and renames it when complete) and queue those episodes' bags again, so that
        every episode in the dataset keeps its bag. A live process's staging folder is left alone."""
        for tmp in sorted(bag_dir.glob(f"{BAG_PREFIX}*{TMP_MARKER}*")):
            if not writer_gone(tmp):
                continue
            try:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            except OSError as exc:
                self.log("error", f"cannot remove {tmp}, left by a killed recorder: {exc}")
                continue
            name = tmp.name.partition(TMP_MARKER)[0]
            index = name.removeprefix(BAG_PREFIX)
            again = index.isdigit() and self.ds is not None and int(index) < len(self.ds) and \
                not (bag_dir / name).exists()
            self.log("warning", f"removed {tmp}, left by a recorder killed while writing that bag"
                                f"{f'; writing the bag of episode #{int(index)} again' if again else ''}")
            if again:
                self.jobs.put(("bag", (int(index),)))

    @property
    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """camera -> (H, W) the dataset holds ({} before it exists)."""
        return self.ds.cameras if self.ds is not None else {}

    def backlog(self) -> int:
        """Jobs queued or running."""
        return self.jobs.unfinished_tasks

    def submit(self, episode: Episode, names: tuple[str, ...]) -> None:
        self.jobs.put(("append", (episode, names)))

    def relabel(self, episode_id: str, success: bool) -> Future:
        """Relabel after the appends queued before it; an empty id is the last episode written by then."""
        done: Future = Future()
        self.jobs.put(("relabel", (episode_id, success, done)))
        return done

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            kind, args = job
            try:
                if kind == "append":
                    self.append(*args)
                elif kind == "bag":
                    self.write_bag(*args)
                else:
                    self.do_relabel(*args)
            except Exception as exc:  # a bug in one job must not silently stop every later write
                self.log("error", f"writer {kind} job failed: {exc!r}")
                if kind == "relabel" and not args[-1].done():
                    args[-1].set_result((False, f"relabel failed: {exc!r}"))
            self.jobs.task_done()

    def append(self, episode: Episode, names: tuple[str, ...]) -> None:
        try:
            if self.ds is None:
                self.ds = EpisodeDataset.create(
                    self.root, fps=self.fps, cameras={c: episode.images[c].shape[1:3] for c in self.cameras},
                    state_names=self.state_names, action_names=names, robot_type=self.robot_type, video=self.video)
            if any(m["episode_id"] == episode.episode_id for m in self.ds.episodes_meta()):
                self.log("warning", f"episode {episode.episode_id} is already in {self.root}; not written again")
                return
            index = self.ds.append(episode)
            self.last_id = episode.episode_id
        except (DatasetError, OSError, ValueError) as exc:
            self.log("error", f"episode {episode.episode_id} NOT written to {self.root}: {exc}")
            return
        self.log("info", f"episode {episode.episode_id} written as #{index} ({episode.length} frames, "
                         f"{'success' if episode.success else episode.end_reason})")
        self.write_bag(index)

    def write_bag(self, index: int) -> None:
        """Episode #index as a rosbag2 MCAP in bag_dir, if there is one."""
        if self.bag_dir is None or self.ds is None:
            return
        try:
            bag = export_mcap(self.ds, self.bag_dir / f"{BAG_PREFIX}{index:06d}", namespace=self.namespace,
                              episodes=[index])
        except (DatasetError, OSError, ValueError) as exc:
            self.log("error", f"bag of episode #{index} not written: {exc}")
        else:
            self.log("info", f"episode #{index} also in {bag}")

    def do_relabel(self, episode_id: str, success: bool, done: Future) -> None:
        try:
            if self.ds is None or len(self.ds) == 0:
                raise KeyError(f"no episode is recorded in {self.root} yet")
            episode_id = episode_id or self.last_id
            index = self.ds.index_of(episode_id) if episode_id else len(self.ds) - 1
            self.ds.relabel(index, success=success)
        except (KeyError, DatasetError, OSError) as exc:
            done.set_result((False, str(exc).strip("'\"")))
            return
        self.log("info", f"episode #{index} ({episode_id or 'the last'}) relabelled success={success}")
        done.set_result((True, f"episode #{index} of {self.root} now has success={success}"))


# ------------------------------------------------------------------------------ the node
class Recorder(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.params = p = declare(self, Params)
        if not p.dataset:
            raise ParameterError("parameter dataset is required: the dataset root directory, e.g. "
                                 "-p dataset:=$HOME/vla_rl_data/arm0")
        try:
            self.robot = RobotConfig.load(p.robot_config)
            self.arm = make_arm(self.robot)
            video = p.video()
        except (OSError, ValueError) as exc:
            raise ParameterError(f"recorder: {exc}") from exc
        rate = self.robot.control_rate_hz
        if (p.fps or rate) != rate or rate != round(rate):
            raise ParameterError(f"fps={p.fps} with a {rate:g} Hz robot ({self.robot.source}): a frame is one "
                                 "control step, so fps must be 0 or the control rate, and that rate a whole number")
        self.period_ns = round(NS_PER_S / rate)
        namespace = self.get_namespace().rstrip("/")
        self.state_names = (*self.arm.joint_names, *STATE_EE_NAMES)
        try:
            self.writer = EpisodeWriter(
                Path(p.dataset).expanduser(), fps=p.fps or round(rate), cameras=list(p.cameras),
                state_names=self.state_names, robot_type=self.robot.name, video=video,
                bag_dir=Path(p.bag_dir).expanduser() if p.bag_dir else None, namespace=namespace, log=self.log)
        except (DatasetError, OSError) as exc:
            raise ParameterError(f"dataset {p.dataset!r}: {exc}") from exc
        self.drops = DropLog(self.get_logger())
        self.images: dict[str, deque[tuple[int, np.ndarray]]] = {c: deque(maxlen=IMAGE_HISTORY) for c in p.cameras}
        self.sizes: dict[str, tuple[int, int]] = dict(self.writer.image_sizes)  # fixed by the first image if new
        self.joints: deque[tuple[int, np.ndarray]] = deque(maxlen=JOINT_HISTORY)  # (stamp, state (P,))
        # Episodes not written yet, oldest first: the last is the running one; earlier ones wait for their
        # result, late frames and images.
        self.episodes: list[Recording] = []
        self.skipped: deque[str] = deque(maxlen=SKIPPED_IDS)  # evaluation episodes not recorded (parameter)
        self.unannounced: list[tuple[float, ChunkRequest | ActionChunk | EpisodeResult]] = []  # (wall s, msg)
        self.wall = Clock(clock_type=ClockType.STEADY_TIME)

        subscriptions = [
            self.create_subscription(EpisodeStart, "episode_start", self.on_start, LATCHED),
            self.create_subscription(ChunkRequest, "chunk_request", self.on_request, RELIABLE),
            self.create_subscription(ActionChunk, "action_chunk", self.on_chunk, RELIABLE),
            self.create_subscription(JointState, "joint_states", self.on_joint_states, DEEP),
            *[self.create_subscription(Image, topic, lambda m, c=camera: self.on_image(c, m), IMAGES)
              for camera, topic in zip(p.cameras, p.camera_topics, strict=True)],
            self.create_subscription(EpisodeResult, "episode_result", self.on_result, DEEP)]
        self.inputs, self.started = InputWatch(self.get_logger(), subscriptions), self.now()
        # The service waits for the writer (possibly behind a long append) in its own callback group, so
        # the multi-threaded executor of main() keeps delivering messages to the others meanwhile.
        self.create_service(LabelEpisode, "label_episode", self.on_label,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(TICK_S, self.tick, clock=self.wall)
        self.create_timer(INPUT_CHECK_S, lambda: self.inputs.check(self.now() - self.started), clock=self.wall)
        self.get_logger().info(f"recording {list(p.cameras)} at {p.fps or round(rate)} fps into {p.dataset}")

    def log(self, level: str, text: str) -> None:
        """Log for the writer thread; one call site per severity, as rclpy requires."""
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    # -- episodes --------------------------------------------------------------------------------
    def now(self) -> float:
        return self.wall.now().nanoseconds / NS_PER_S

    def episode(self, episode_id: str) -> Recording | None:
        return next((r for r in self.episodes if r.episode_id == episode_id), None)

    def on_start(self, msg: EpisodeStart) -> None:
        if self.episode(msg.episode_id) is not None or msg.episode_id in self.skipped:
            return  # the latched start again
        start = stamp_ns(msg.header.stamp)
        for rec in self.episodes:  # no earlier episode takes frames from this one's time on
            rec.end_ns = min(rec.end_ns, start)
            rec.ended_at = rec.ended_at or self.now()
        if msg.evaluation and not self.params.record_evaluation:
            self.skipped.append(msg.episode_id)
            return
        self.episodes.append(Recording(msg, start, Lockstep(self.period_ns)))
        self.get_logger().info(f"episode {msg.episode_id} started ({msg.task}, seed {msg.seed}); recording it")
        early = [m for _, m in self.unannounced if m.episode_id == msg.episode_id]
        self.unannounced = [(t, m) for t, m in self.unannounced if m.episode_id != msg.episode_id]
        handlers = {ChunkRequest: self.on_request, ActionChunk: self.on_chunk, EpisodeResult: self.on_result}
        for m in sorted(early, key=lambda m: isinstance(m, EpisodeResult)):  # what overtook the start, result last
            handlers[type(m)](m)

    def on_result(self, msg: EpisodeResult) -> None:
        rec = self.episode(msg.episode_id)
        if rec is None:
            self.wait_for_start(msg)
            return
        if rec.result is None:
            rec.result, rec.ended_at = msg, self.now()
            if stamp_ns(msg.header.stamp) > 0:  # an unstamped result (a hand-made one) limits nothing
                rec.end_ns = min(rec.end_ns, stamp_ns(msg.header.stamp))
            self.tick()

    def wait_for_start(self, msg: ChunkRequest | ActionChunk | EpisodeResult) -> None:
        if msg.episode_id not in self.skipped:
            self.unannounced.append((self.now(), msg))

    def complete(self, rec: Recording) -> bool:
        """Every frame of the ended episode is in, each with its images (messages stamped before the
        result may be delivered after it: topics are not ordered)."""
        return rec.covers_steps(self.newest_joint_ns()) and all(len(f.images) == len(self.images) for f in rec.frames)

    def newest_joint_ns(self) -> int | None:
        """Stamp of the newest joint state read (they arrive in order); None before the first."""
        return self.joints[-1][0] if self.joints else None

    def tick(self) -> None:
        """Write each ended episode once it is complete (or the wait for late messages is over); drop
        one whose result does not come."""
        now = self.now()
        stale = [m for t, m in self.unannounced if now - t > UNANNOUNCED_WAIT_S]
        self.unannounced = [(t, m) for t, m in self.unannounced if now - t <= UNANNOUNCED_WAIT_S]
        for m in stale:
            kind = {ChunkRequest: "chunk_request", ActionChunk: "action_chunk", EpisodeResult: "result"}[type(m)]
            self.drops.drop(f"{kind} of an episode not being recorded", f"{m.episode_id!r}")
        for rec in list(self.episodes):
            if rec.result is not None and (self.complete(rec) or now - rec.ended_at > LATE_MESSAGES_S):
                self.episodes.remove(rec)
                self.finish(rec)
            elif rec.result is None and rec.ended_at and now - rec.ended_at > RESULT_WAIT_S:
                self.episodes.remove(rec)
                self.drops.drop("episode without a result", f"{rec.episode_id}: none within {RESULT_WAIT_S:.0f} s "
                                                           "of the next episode's start")

    def finish(self, rec: Recording) -> None:
        assert rec.result is not None
        for camera in self.images:
            self.fill_images(rec, camera, final=True)
        missing = [i for i, f in enumerate(rec.frames) if len(f.images) != len(self.images)]
        if not rec.from_start or not rec.frames or missing:
            why = ("episode joined after its start (no chunk_request for step 0 seen)" if not rec.from_start else
                   "episode without frames (no joint_states or chunks received)" if not rec.frames else
                   f"frames {missing[:5]} lack a camera image stamped at or before them")
            self.drops.drop("episode not recorded", f"{rec.episode_id}: {why}")
            return
        covered = rec.covers_steps(self.newest_joint_ns())
        try:
            episode = episode_from(rec, list(self.params.cameras), covered=covered)
            names = action_names(rec.action_mode or self.robot.action_mode, episode.actions.shape[1])
        except ValueError as exc:
            self.drops.drop("episode not recorded", f"{rec.episode_id}: {exc}")
            return
        self.writer.submit(episode, names)
        if covered:
            self.get_logger().info(f"episode {rec.episode_id} complete; queued for writing")
        else:
            self.get_logger().warning(
                f"episode {rec.episode_id} incomplete: {len(rec.frames)} frames of its {rec.result.steps} steps (the "
                f"recorder stopped, or gave up waiting, before the rest came); queued for writing with end reason "
                f"error instead of {rec.result.end_reason}")
        if self.writer.backlog() > BACKLOG_WARNING:
            self.get_logger().warning(f"{self.writer.backlog()} episodes wait for the writer: appends are slower "
                                      "than episodes (video settings, disk); memory grows until they catch up")

    # -- actions -----------------------------------------------------------------------------------
    def on_request(self, msg: ChunkRequest) -> None:
        rec = self.episode(msg.episode_id)
        if rec is None:
            self.wait_for_start(msg)
            return
        rec.requests.setdefault(msg.request_id, (msg.step, stamp_ns(msg.header.stamp)))
        rec.from_start = rec.from_start or msg.step == 0
        waiting = [c for c in rec.early_chunks if c.request_id == msg.request_id]
        rec.early_chunks = [c for c in rec.early_chunks if c.request_id != msg.request_id]
        for chunk in waiting:
            self.on_chunk(chunk)

    def outstanding(self, rec: Recording, request_id: int) -> bool:
        """The executor still waits for this request's answer: it is known, unanswered, and no later
        request starts at its step or before (a re-request after a time-out supersedes it). Decided
        from the requests, not from arrival order, which differs between topics."""
        if request_id not in rec.requests or request_id in rec.answered:
            return False
        step = rec.requests[request_id][0]
        return not any(r > request_id and s <= step for r, (s, _) in rec.requests.items())

    def on_chunk(self, msg: ActionChunk) -> None:
        rec = self.episode(msg.episode_id)
        if rec is None:
            self.wait_for_start(msg)
            return
        if msg.request_id not in rec.requests and msg.request_id > max(rec.requests, default=-1):
            rec.early_chunks.append(msg)  # delivered before its request
            return
        ok = self.outstanding(rec, msg.request_id)
        step, request_ns = rec.requests.get(msg.request_id, (0, 0))
        chunk = validate_chunk(chunk_from_msg(msg), episode_id=rec.episode_id,
                               request_id=msg.request_id if ok else None, request_stamp_ns=request_ns,
                               action_mode=self.robot.action_mode, action_dims=self.robot.action_dims)
        if isinstance(chunk, Rejection):
            self.drops.drop(f"action_chunk not executed ({chunk.reason.value})", chunk.detail)
            return
        rec.answered.add(msg.request_id)
        rec.action_mode = msg.action_mode
        for i, row in enumerate(chunk.actions):  # (C, A): steps step .. step + C - 1
            rec.actions[step + i] = row.astype(np.float32)
        self.take_frames(rec)

    # -- observations ------------------------------------------------------------------------------
    def on_joint_states(self, msg: JointState) -> None:
        try:
            state = proprio_from_joint_state(self.arm, msg)
        except MessageError as exc:
            self.drops.drop("unusable joint_states", str(exc))
            return
        stamp = stamp_ns(msg.header.stamp)
        if self.joints and stamp <= self.joints[-1][0]:
            return  # a re-sent (heartbeat) or out-of-order joint state
        self.joints.append((stamp, state))
        for rec in self.episodes:
            self.take_frames(rec)

    def next_joint_state(self, rec: Recording) -> tuple[int, np.ndarray] | None:
        """The first joint state of the episode that ends the previous frame's period (what the executor acts on)."""
        found = None
        for stamp, state in reversed(self.joints):
            if stamp < rec.start_ns or not rec.lockstep.due(stamp):
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

    def on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = image_from_msg(msg)
        except MessageError as exc:
            self.drops.drop(f"unusable {camera} image", str(exc))
            return
        size = self.sizes.setdefault(camera, rgb.shape[:2])
        if rgb.shape[:2] != size:
            self.drops.drop(f"{camera} image size", f"{rgb.shape[1]}x{rgb.shape[0]}, the dataset's is "
                                                    f"{size[1]}x{size[0]} (W x H)")
            return
        history, stamp = self.images[camera], stamp_ns(msg.header.stamp)
        if history and stamp <= history[-1][0]:
            return  # a re-sent (heartbeat) or out-of-order image
        history.append((stamp, rgb))
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

    # -- labels ------------------------------------------------------------------------------------
    def on_label(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        rec = self.episode(request.episode_id)
        if rec is not None:
            response.accepted, response.message = False, (f"episode {rec.episode_id} is still being recorded; "
                                                          "label it once it is written (seconds after its result)")
            return response
        done = self.writer.relabel(request.episode_id, request.success)
        try:
            response.accepted, response.message = done.result(timeout=LABEL_TIMEOUT_S)
        except TimeoutError:
            response.accepted, response.message = False, f"the writer is busy for over {LABEL_TIMEOUT_S:.0f} s"
        return response

    def close(self) -> None:
        """Write what ended (also episodes still waiting for images), then drain the writer's queue."""
        for rec in self.episodes:
            if rec.result is not None:
                self.finish(rec)
        self.episodes = []
        if self.drops.counts:
            self.get_logger().info(f"dropped input, by cause: {dict(self.drops.counts)}")
        backlog = self.writer.backlog()
        if backlog:
            self.get_logger().info(f"writing the {backlog} episode(s) and label(s) still queued before exiting")
        self.writer.close()
        self.get_logger().info("episode writer joined")


def main(args: list[str] | None = None) -> int:
    # Two threads: the label service may wait for the writer while messages keep arriving.
    return run_node(Recorder, args, lambda: MultiThreadedExecutor(num_threads=2))
