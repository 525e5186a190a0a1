"""The recorder as a real process: episodes played by the test's probe round-trip through the dataset,
label_episode relabels persistently, kill -9 keeps earlier episodes and a restart appends, Ctrl-C
drains the writer, garbage is dropped, and a scripted-expert episode from the real sim is recorded."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from rosbags.highlevel import AnyReader
from rosgraph import SIM_EXECUTOR, RosGraph, wait_until
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart, TaskState
from vla_rl_interfaces.srv import LabelEpisode, ResetEpisode

from vla_rl_ros.control import SIM_PANDA, RobotConfig, make_kinematics
from vla_rl_ros.data import EpisodeDataset
from vla_rl_ros.data.video import psnr
from vla_rl_ros.ros.convert import image_from_msg, image_to_msg, proprio_from_joint_state
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    CHUNK_REQUEST_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    LABEL_EPISODE_SERVICE,
    RESET_EPISODE_SERVICE,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, RESULTS, STEPS
from vla_rl_ros.sim import JOINT_STATE_NAMES, STATE_NAMES, TASKS

pytestmark = pytest.mark.graph

NS = "/arm0"
PERIOD_NS = 100_000_000  # sim_panda's 10 Hz control period
H, W = 32, 48  # small frames keep the appends quick; not square, to catch a transposition
STEP_PAUSE_S = 0.03  # between played steps: each step's messages arrive before the next step's
MIN_PSNR_DB = 35.0  # yuv444p at crf 18 on smooth frames measures ~45 dB
ROBOT = RobotConfig.load(SIM_PANDA)
KINEMATICS = make_kinematics(ROBOT)
HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8, 0.02, 0.02])  # 7 arm joints (rad), 2 fingers (m)
CHUNK = 4  # C
ACTION_DIM = 4  # A: ee_delta [dx, dy, dz, gripper]
DISCOVERY_S = 1.0  # after the probe sees the executor's publisher, until the recorder has matched it too
SCRIPTED_POLICY = Path(__file__).parent / "nodes" / "scripted_policy.py"


def recorder(graph: RosGraph, dataset: Path, *extra: str, label: str = "recorder"):
    """Start a recorder and wait until it is up (a killed one may still count as a subscriber)."""
    proc = graph.node("recorder", "-r", f"__ns:={NS}", "-p", f"dataset:={dataset}", "-p", "video_pix_fmt:=yuv444p",
                      *extra, label=label)
    wait_until(lambda: "recording [" in graph.log(label), 60, f"{label} to start")
    return proc


RECORDER_TOPICS = (EPISODE_START_TOPIC, CHUNK_REQUEST_TOPIC, ACTION_CHUNK_TOPIC, JOINT_STATES_TOPIC,
                   *CAMERA_TOPICS.values(), EPISODE_RESULT_TOPIC)


def subscriptions(probe) -> set[tuple[str, bytes]]:
    """(topic, endpoint gid) of every subscription on the recorder's topics."""
    return {(t, bytes(info.endpoint_gid)) for t in RECORDER_TOPICS
            for info in probe.node.get_subscriptions_info_by_topic(f"{NS}/{t}")}


def wait_for_recorder(graph: RosGraph, label: str = "recorder", old: frozenset = frozenset()) -> None:
    """Until a recorder not among `old` subscriptions (a killed one stays in the graph a while) has
    subscribed to every topic and matched a publisher on each (its log says so: a message sent before
    that is lost, and under load discovery takes seconds)."""
    def ready() -> bool:
        new = subscriptions(graph.probe) - old
        return {t for t, _ in new} == set(RECORDER_TOPICS)
    wait_until(ready, 60, "the recorder's subscriptions")
    wait_until(lambda: "every input topic has a publisher" in graph.log(label), 60, "the recorder's publishers")


def frame_image(episode: int, t: int, camera: int) -> np.ndarray:
    """(H, W, 3) uint8: a smooth gradient whose colour depends on episode, step and camera."""
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x * 4, y * 6, np.full_like(x, 40 + 20 * camera)], axis=-1)
    return np.clip(base + 9 * t + 50 * episode, 0, 255).astype(np.uint8)


@dataclass
class Played:
    """What the probe published for one episode, i.e. what the dataset must hold."""

    start: EpisodeStart
    result: EpisodeResult
    states: list[np.ndarray] = field(default_factory=list)  # (P,) per executed step
    actions: list[np.ndarray] = field(default_factory=list)  # (A,)
    images: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (front, wrist) per step


class FakeArm:
    """The probe playing the episode manager, the executor, the bridge and the policy of one arm."""

    def __init__(self, graph: RosGraph) -> None:
        self.graph = graph
        self.graph = graph
        probe = self.probe = graph.probe
        self.start_pub = probe.publisher(EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", LATCHED)
        self.request_pub = probe.publisher(ChunkRequest, f"{NS}/{CHUNK_REQUEST_TOPIC}", RELIABLE)
        self.chunk_pub = probe.publisher(ActionChunk, f"{NS}/{ACTION_CHUNK_TOPIC}", RELIABLE)
        self.joint_pub = probe.publisher(JointState, f"{NS}/{JOINT_STATES_TOPIC}", STEPS)
        self.image_pubs = [probe.publisher(Image, f"{NS}/{CAMERA_TOPICS['front']}", qos_profile_sensor_data),
                           probe.publisher(Image, f"{NS}/{CAMERA_TOPICS['wrist']}", qos_profile_sensor_data)]
        self.result_pub = probe.publisher(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", RESULTS)
        self.request_id = 0
        self.clock_ns = 1_000 * PERIOD_NS

    def wait_for_recorder(self, label: str = "recorder", old: frozenset = frozenset()) -> None:
        """Also until every publisher is matched with every subscription in the graph: after a kill -9 the
        dead recorder stays matched until its lease ends, so one match does not mean the new one is."""
        wait_for_recorder(self.graph, label, old)
        pubs = [self.start_pub, self.request_pub, self.chunk_pub, self.joint_pub, *self.image_pubs, self.result_pub]
        node = self.probe.node
        wait_until(lambda: all(p.get_subscription_count() >= len(node.get_subscriptions_info_by_topic(p.topic_name))
                               for p in pubs), 60, "the publishers to match the recorder")

    def stamp(self, ns: int):
        return Time(nanoseconds=ns).to_msg()

    def observe(self, episode: int, t: int, joints: np.ndarray) -> None:
        for camera, pub in enumerate(self.image_pubs):
            pub.publish(image_to_msg(frame_image(episode, t, camera), self.stamp(self.clock_ns)))
        msg = JointState(name=list(JOINT_STATE_NAMES), position=joints.tolist())
        msg.header.stamp = self.stamp(self.clock_ns)
        self.joint_pub.publish(msg)

    def play(self, episode: int, steps: int, *, success: bool, evaluation: bool = False,
             end_reason: str = EpisodeResult.END_SUCCESS, episode_id: str = "", heard_by: str = "") -> Played:
        """An episode of `steps` executed control steps, chunks of CHUNK, then its result; with `heard_by`,
        once that recorder's log says it records the episode (the first messages to a reader that has just
        matched may take a resend, and the latched start keeps only the newest)."""
        episode_id = episode_id or f"ep-{episode}-{time.monotonic_ns()}"
        rng = np.random.default_rng(episode)
        start = EpisodeStart(episode_id=episode_id, arm=NS, task="push", seed=100 + episode, group_id=f"g{episode}",
                             instruction=f"push the cube {episode}", evaluation=evaluation, max_steps=steps + 10)
        start.header.stamp = self.stamp(self.clock_ns)
        played = Played(start, EpisodeResult(
            episode_id=episode_id, arm=NS, group_id=start.group_id, task=start.task, seed=start.seed,
            instruction="", success=success, reward=1.0 if success else 0.0, steps=steps, policy_version=episode + 2,
            evaluation=evaluation, end_reason=end_reason))
        self.start_pub.publish(start)
        if heard_by:
            wait_until(lambda: f"episode {episode_id} started" in self.graph.log(heard_by), 30, f"{heard_by} to start")
        time.sleep(0.2)
        chunk = np.zeros((0, ACTION_DIM), np.float32)
        for t in range(steps):
            joints = HOME + np.r_[rng.uniform(-0.1, 0.1, 7), 0.0, 0.0]  # arm joints move, fingers stay
            self.observe(episode, t, joints)
            time.sleep(STEP_PAUSE_S / 3)
            if t % CHUNK == 0:
                self.request_id += 1
                request = ChunkRequest(episode_id=episode_id, request_id=self.request_id, step=t, greedy=evaluation)
                request.header.stamp = self.stamp(self.clock_ns)
                self.request_pub.publish(request)
                chunk = rng.uniform(-1, 1, (CHUNK, ACTION_DIM)).astype(np.float32)
                msg = ActionChunk(episode_id=episode_id, request_id=self.request_id, policy_version=episode + 2,
                                  chunk_size=CHUNK, action_dim=ACTION_DIM, action_mode="ee_delta",
                                  actions=chunk.ravel().tolist(), greedy=evaluation)
                msg.header.stamp = self.stamp(self.clock_ns)
                time.sleep(STEP_PAUSE_S / 3)
                self.chunk_pub.publish(msg)
            played.states.append(proprio_from_joint_state(
                ROBOT, KINEMATICS, JointState(name=list(JOINT_STATE_NAMES), position=joints.tolist())))
            played.actions.append(chunk[t % CHUNK])
            played.images.append((frame_image(episode, t, 0), frame_image(episode, t, 1)))
            time.sleep(STEP_PAUSE_S)
            self.clock_ns += PERIOD_NS
        # After the last command: the state it led to (no frame of its own), then the result.
        self.observe(episode, steps, HOME)
        time.sleep(STEP_PAUSE_S)
        played.result.header.stamp = self.stamp(self.clock_ns)
        self.result_pub.publish(played.result)
        self.clock_ns += 10 * PERIOD_NS
        return played


def episodes(root: Path, count: int, timeout: float = 60) -> EpisodeDataset:
    """The dataset once it holds `count` episodes (opened afresh, as another process would)."""
    def opened() -> EpisodeDataset | None:
        if not (root / "meta" / "info.json").is_file():
            return None
        ds = EpisodeDataset.open(root)
        return ds if len(ds) >= count else None
    ds = wait_until(opened, timeout, f"{count} episodes in {root}")
    assert len(ds) == count
    return ds


def check_round_trip(ds: EpisodeDataset, index: int, played: Played) -> None:
    ep = ds[index]
    start, result = played.start, played.result
    assert (ep.episode_id, ep.task, ep.seed, ep.group_id, ep.instruction) == (
        start.episode_id, start.task, start.seed, start.group_id, start.instruction)
    assert (ep.success, ep.reward, ep.end_reason, ep.policy_version, ep.evaluation) == (
        result.success, result.reward, result.end_reason, result.policy_version, result.evaluation)
    assert ep.length == len(played.actions)
    np.testing.assert_array_equal(ep.actions, np.stack(played.actions))  # bit-exact
    np.testing.assert_array_equal(ep.state, np.stack(played.states))
    for camera, k in (("front", 0), ("wrist", 1)):
        expected = np.stack([images[k] for images in played.images])  # (T, H, W, 3)
        assert ep.images[camera].shape == expected.shape
        assert psnr(expected, ep.images[camera]) > MIN_PSNR_DB, camera


def test_episodes_round_trip_labels_persist_and_bags_hold_the_reward(ros_graph: RosGraph, tmp_path: Path) -> None:
    root, bags = tmp_path / "dataset", tmp_path / "bags"
    recorder(ros_graph, root, "-p", f"bag_dir:={bags}")
    arm = FakeArm(ros_graph)
    arm.wait_for_recorder()
    first = arm.play(0, 7, success=True)
    second = arm.play(1, 5, success=False, evaluation=True, end_reason=EpisodeResult.END_TIMEOUT)
    ds = episodes(root, 2)
    check_round_trip(ds, 0, first)
    check_round_trip(ds, 1, second)
    assert ds.cameras == {"front": (H, W), "wrist": (H, W)} and ds.fps == 10
    assert list(ds.features["observation.state"]["names"]) == list(STATE_NAMES)  # mergeable with sim demos
    assert list(ds.features["action"]["names"]) == ["dx", "dy", "dz", "gripper"]

    # label_episode: by id, and an empty id means the last one; both persist for other readers.
    call, label = ros_graph.probe.call, f"{NS}/{LABEL_EPISODE_SERVICE}"
    answer = call(LabelEpisode, label, LabelEpisode.Request(episode_id=first.start.episode_id, success=False))
    assert answer.accepted, answer.message
    assert call(LabelEpisode, label, LabelEpisode.Request(episode_id="", success=True)).accepted
    unknown = call(LabelEpisode, label, LabelEpisode.Request(episode_id="nope", success=True))
    assert not unknown.accepted and "nope" in unknown.message
    meta = EpisodeDataset.open(root).episodes_meta()
    assert [(m["success"], m["reward"]) for m in meta] == [(False, 0.0), (True, 1.0)]
    # An episode id already in the dataset is not written twice (a replayed or re-announced episode).
    arm.play(2, 3, success=True, episode_id=first.start.episode_id)
    wait_until(lambda: "is already in" in ros_graph.log("recorder"), 30, "the duplicate to be refused")
    assert len(EpisodeDataset.open(root)) == 2
    assert call(LabelEpisode, label, LabelEpisode.Request(episode_id="", success=False)).accepted
    assert [m["success"] for m in EpisodeDataset.open(root).episodes_meta()] == [False, False]  # the last written

    # One rosbag2 MCAP per episode, with the reward and success in it.
    wait_until(lambda: len(list(bags.glob("episode_*"))) == 2, 30, "two bags")
    with AnyReader([bags / "episode_000001"]) as reader:
        by_topic = {c.topic: [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([c])]
                    for c in reader.connections}
    assert [m.data for m in by_topic[f"{NS}/success"]] == [False] and [m.data for m in by_topic[f"{NS}/reward"]] == [0]
    assert len(by_topic[f"{NS}/front/image_raw"]) == 5


LATER = 5  # episodes after the restart, played faster than they are written with bags


def test_kill_9_keeps_earlier_episodes_restart_appends_and_ctrl_c_drains(ros_graph: RosGraph, tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    first_proc = recorder(ros_graph, root, label="recorder1")
    arm = FakeArm(ros_graph)
    arm.wait_for_recorder("recorder1")
    kept = arm.play(0, 6, success=True)
    episodes(root, 1)
    # Half an episode, then kill -9 (while the recorder holds its frames in memory).
    partial = arm.play(1, 3, success=True)
    os.kill(first_proc.pid, signal.SIGKILL)
    first_proc.wait(timeout=10)
    ds = episodes(root, 1)
    check_round_trip(ds, 0, kept)

    # A restarted recorder appends to the same dataset; episodes finished just before Ctrl-C are written.
    old = frozenset(subscriptions(arm.probe))
    # Bags make each write slower than an episode, so the writer falls behind (as with big images).
    second_proc = recorder(ros_graph, root, "-p", f"bag_dir:={tmp_path / 'bags'}", "-p", "record_evaluation:=false",
                           label="recorder2")
    arm.wait_for_recorder("recorder2", old)
    later = [arm.play(2 + i, 4, success=bool(i % 2), heard_by="recorder2") for i in range(2)]
    skipped = arm.play(9, 4, success=True, evaluation=True)  # not recorded: record_evaluation is false
    later += [arm.play(4 + i, 4, success=bool(i % 2), heard_by="recorder2") for i in range(LATER - 2)]
    # Once the last result has reached the recorder the writer is usually still busy (the log then says
    # "still queued before exiting"); every finished episode must be on disk after the exit either way.
    last = later[-1].start.episode_id
    wait_until(lambda: f"episode {last} complete; queued" in ros_graph.log("recorder2"), 30, "the last episode")
    os.kill(second_proc.pid, signal.SIGINT)
    assert second_proc.wait(timeout=60) == 0
    assert len(list((tmp_path / "bags").glob("episode_*"))) == LATER
    ds = episodes(root, 1 + LATER, timeout=5)
    check_round_trip(ds, 0, kept)
    for index, played in enumerate(later, start=1):
        check_round_trip(ds, index, played)
    recorded = [m["episode_id"] for m in ds.episodes_meta()]
    assert partial.start.episode_id not in recorded and skipped.start.episode_id not in recorded


def test_bad_parameters_stop_the_recorder_with_a_clear_error(ros_graph: RosGraph, tmp_path: Path) -> None:
    missing = ros_graph.node("recorder", label="no_dataset")
    mismatch = ros_graph.node("recorder", "-p", f"dataset:={tmp_path / 'd'}", "-p", "cameras:=[front]",
                              label="mismatch")
    assert missing.wait(timeout=60) == 2 and mismatch.wait(timeout=60) == 2
    assert "parameter dataset is required" in ros_graph.log("no_dataset")
    assert "cameras=['front'] and camera_topics=" in ros_graph.log("mismatch")
    # A misnamed camera topic: the recorder runs and says which of its inputs nothing publishes.
    FakeArm(ros_graph)
    recorder(ros_graph, tmp_path / "typo", "-p", "camera_topics:=[camera/image_raw, wirst_camera/image_raw]")
    wait_until(lambda: "no publisher on" in ros_graph.log("recorder"), 60, "the warning")
    warning = next(line for line in ros_graph.log("recorder").splitlines() if "no publisher on" in line)
    assert f"{NS}/wirst_camera/image_raw" in warning and EPISODE_START_TOPIC not in warning, warning


def test_garbage_is_dropped_with_one_line_per_cause_and_recording_goes_on(ros_graph: RosGraph,
                                                                           tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    proc = recorder(ros_graph, root)
    arm = FakeArm(ros_graph)
    arm.wait_for_recorder()
    good = arm.play(0, 4, success=True)  # fixes the camera size
    episodes(root, 1)
    stamp = arm.stamp(arm.clock_ns)
    garbage = []
    for _ in range(3):  # each cause several times: still one line each
        mono = Image(height=H, width=W, encoding="mono8", step=W, data=bytes(H * W))
        short = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=bytes(10))
        big = image_to_msg(np.zeros((H * 2, W, 3), np.uint8), stamp)
        for msg in (mono, short, big):
            msg.header.stamp = stamp
            arm.image_pubs[0].publish(msg)
        nan = JointState(name=list(JOINT_STATE_NAMES), position=[float("nan")] * 9)
        few = JointState(name=["joint1"], position=[0.0])
        for msg in (nan, few):
            msg.header.stamp = stamp
            arm.joint_pub.publish(msg)
        arm.result_pub.publish(EpisodeResult(episode_id="never-started", end_reason="success"))
        garbage.append(len(garbage))
    # An episode whose chunks are bad (non-finite, wrong shape, unrequested) and whose end reason is unknown.
    bad_start = EpisodeStart(episode_id="bad", task="push", instruction="x", max_steps=10)
    bad_start.header.stamp = stamp
    arm.start_pub.publish(bad_start)
    time.sleep(0.3)
    arm.request_pub.publish(ChunkRequest(episode_id="bad", request_id=900, step=0, header=bad_start.header))
    for chunk in (ActionChunk(episode_id="bad", request_id=900, chunk_size=1, action_dim=4, action_mode="ee_delta",
                              actions=[float("nan")] * 4, header=bad_start.header),
                  ActionChunk(episode_id="bad", request_id=900, chunk_size=2, action_dim=4, action_mode="ee_delta",
                              actions=[0.0] * 3, header=bad_start.header),
                  ActionChunk(episode_id="bad", request_id=7, chunk_size=1, action_dim=4, action_mode="ee_delta",
                              actions=[0.0] * 4, header=bad_start.header)):
        arm.chunk_pub.publish(chunk)
    time.sleep(0.3)
    arm.result_pub.publish(EpisodeResult(episode_id="bad", end_reason="exploded"))
    time.sleep(0.5)
    after = arm.play(1, 5, success=False, end_reason=EpisodeResult.END_ESTOP)
    ds = episodes(root, 2)
    check_round_trip(ds, 0, good)
    check_round_trip(ds, 1, after)
    assert proc.poll() is None
    causes = ("unusable front image", "front image size", "unusable joint_states",
              "result of an episode not being recorded", "action_chunk not executed (non_finite)",
              "action_chunk not executed (bad_shape)", "action_chunk not executed (unrequested)",
              "episode not recorded")
    # A result without its start waits a few seconds for it before it counts as dropped.
    wait_until(lambda: all(f"dropped input: {c}" in ros_graph.log("recorder") for c in causes), 30, "every cause")
    log = ros_graph.log("recorder")
    for cause in causes:
        assert log.count(f"dropped input: {cause}") == 1, cause
    assert "Traceback" not in log


def test_records_a_scripted_expert_episode_from_the_real_sim(ros_graph: RosGraph, tmp_path: Path) -> None:
    """sim_bridge + executor + the scripted expert + recorder: one frame per command the arm executed,
    each with the state and images the bridge published for it and the action the executor ran."""
    root, task = tmp_path / "dataset", "reach"
    spec = TASKS[task]
    seed = spec.heldout_seeds[3]
    ros_graph.node("sim_bridge", "-r", f"__ns:={NS}")
    ros_graph.node("executor", "-r", f"__ns:={NS}", *SIM_EXECUTOR)
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY), "--ros-args", "-r", f"__ns:={NS}",
                                        "-p", "chunk_size:=3"])
    recorder(ros_graph, root)
    probe = ros_graph.probe
    states = probe.collect(TaskState, f"{NS}/{TASK_STATE_TOPIC}", LATCHED)
    joints = probe.collect(JointState, f"{NS}/{JOINT_STATES_TOPIC}", STEPS)
    images = probe.collect(Image, f"{NS}/{CAMERA_TOPICS['front']}", qos_profile_sensor_data)
    commands = probe.collect(JointTrajectory, f"{NS}/{JOINT_TRAJECTORY_TOPIC}", STEPS)  # counted: every one
    chunks = probe.collect(ActionChunk, f"{NS}/{ACTION_CHUNK_TOPIC}", STEPS)
    start_pub = probe.publisher(EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", LATCHED)
    result_pub = probe.publisher(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", RESULTS)
    wait_for_recorder(ros_graph)
    wait_until(lambda: probe.node.count_publishers(f"{NS}/{ACTION_CHUNK_TOPIC}") > 0, 60, "the scripted policy")
    wait_until(lambda: probe.node.count_subscribers(f"{NS}/{EPISODE_START_TOPIC}") >= 2, 60, "the executor")
    wait_until(lambda: probe.node.count_publishers(f"{NS}/{CHUNK_REQUEST_TOPIC}") > 0, 60, "the executor's requests")
    time.sleep(2 * DISCOVERY_S)  # the recorder must hear the executor's first request (step 0)
    reset = probe.call(ResetEpisode, f"{NS}/{RESET_EPISODE_SERVICE}",
                       ResetEpisode.Request(task=task, seed=seed, episode_id="expert"), timeout=60)
    assert reset.success
    wait_until(lambda: states and states[-1].episode_id == "expert", 30, "the reset state")
    steps = 12  # max_steps: the executor stops there by itself, so no result races a command
    start = EpisodeStart(episode_id="expert", arm=NS, task=task, seed=seed, instruction=reset.instruction,
                         evaluation=True, max_steps=steps)
    start.header.stamp = states[-1].header.stamp
    start_pub.publish(start)
    wait_until(lambda: states[-1].step >= steps, 60, f"{steps} steps")
    result = EpisodeResult(episode_id="expert", arm=NS, task=task, seed=seed, success=True, reward=1.0,
                           steps=steps, evaluation=True, end_reason=EpisodeResult.END_SUCCESS)
    result.header.stamp = states[-1].header.stamp  # as the episode manager stamps it: the sim time at the end
    result_pub.publish(result)
    ep = episodes(root, 1)[0]
    assert len(commands) == ep.length == steps and ep.instruction == reset.instruction
    # Lockstep: step k's command was computed from the joint state stamped start + k periods.
    start_ns = Time.from_msg(start.header.stamp).nanoseconds
    stamps = [start_ns + k * PERIOD_NS for k in range(steps)]
    by_stamp = {Time.from_msg(j.header.stamp).nanoseconds: j for j in joints}
    proprio = [proprio_from_joint_state(ROBOT, KINEMATICS, by_stamp[s]) for s in stamps]
    np.testing.assert_array_equal(ep.state, np.stack(proprio))
    actions = np.concatenate([np.reshape(c.actions, (c.chunk_size, c.action_dim)) for c in chunks
                              if c.episode_id == "expert"])[:steps]
    np.testing.assert_array_equal(ep.actions, actions.astype(np.float32))
    front = {Time.from_msg(m.header.stamp).nanoseconds: image_from_msg(m) for m in images}
    seen = [k for k, s in enumerate(stamps) if s in front]  # the probe's best-effort copy may miss a few
    assert len(seen) >= steps // 2
    assert psnr(np.stack([front[stamps[k]] for k in seen]), ep.images["front"][seen]) > MIN_PSNR_DB
