"""policy_node as a real process: fresh observations only, batching, trajectories, safe weight updates."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rosgraph import RosGraph, wait_until
from sensor_msgs.msg import Image, JointState
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart, PolicyUpdate, Trajectory

from vla_rl_ros.digest import checkpoint_digest
from vla_rl_ros.policy import new_tiny_policy
from vla_rl_ros.ros.convert import image_to_msg
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    CHUNK_REQUEST_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    JOINT_STATES_TOPIC,
    POLICY_UPDATE_TOPIC,
    TRAJECTORY_TOPIC,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE
from vla_rl_ros.sim.env import JOINT_STATE_NAMES, STATE_NAMES

pytestmark = pytest.mark.graph
C, A = 2, 4
ARMS = ("arm0", "arm1")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny real checkpoints (different weights, same shapes)."""
    root = tmp_path_factory.mktemp("ckpt")
    actions = np.random.default_rng(0).uniform(-0.02, 0.02, size=(64, A)).astype(np.float32)
    paths = []
    for i in range(2):
        policy = new_tiny_policy(["reach the red cube"], actions, chunk_size=C, state_dim=len(STATE_NAMES),
                                 image_size=32)
        policy.save(root / f"v{i}")
        paths.append(root / f"v{i}")
    return paths[0], paths[1]


def stamp(sec: int) -> Time:
    return Time(sec=sec)


class Arms:
    """The executors', cameras' and episode manager's side of every arm, played by the probe."""

    def __init__(self, graph: RosGraph) -> None:
        probe = graph.probe
        self.pub = {a: {
            "start": probe.publisher(EpisodeStart, f"/{a}/{EPISODE_START_TOPIC}", LATCHED),
            "result": probe.publisher(EpisodeResult, f"/{a}/{EPISODE_RESULT_TOPIC}", RELIABLE),
            "request": probe.publisher(ChunkRequest, f"/{a}/{CHUNK_REQUEST_TOPIC}", RELIABLE),
            "image": probe.publisher(Image, f"/{a}/{CAMERA_TOPICS['front']}", RELIABLE),
            "joints": probe.publisher(JointState, f"/{a}/{JOINT_STATES_TOPIC}", RELIABLE),
        } for a in ARMS}
        self.update = probe.publisher(PolicyUpdate, POLICY_UPDATE_TOPIC, LATCHED)
        self.chunks = {a: probe.collect(ActionChunk, f"/{a}/{ACTION_CHUNK_TOPIC}", RELIABLE) for a in ARMS}
        self.trajectories = {a: probe.collect(Trajectory, f"/{a}/{TRAJECTORY_TOPIC}", RELIABLE) for a in ARMS}
        self.rng = np.random.default_rng(1)
        self.streams: dict[str, tuple[Image, JointState]] = {}

    def observe(self, arm: str, sec: int, image: Image | None = None) -> None:
        """The arm's newest camera image and joint state, stamped `sec`; `wait` keeps re-sending them
        as a camera and a driver keep streaming (images are best-effort: one may be lost)."""
        if image is None:
            image = image_to_msg(self.rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8), stamp(sec))
        joints = JointState(name=list(JOINT_STATE_NAMES), position=[0.0, -0.5, 0.0, -2.3, 0.0, 1.8, 0.8, 0.04, 0.04])
        joints.header.stamp = stamp(sec)
        self.streams[arm] = (image, joints)
        self.stream()

    def stream(self) -> None:
        for arm, (image, joints) in self.streams.items():
            self.pub[arm]["image"].publish(image)
            self.pub[arm]["joints"].publish(joints)

    def wait(self, predicate, what: str, timeout: float = 30) -> None:
        wait_until(lambda: (self.stream(), predicate())[1], timeout, what)

    def start(self, arm: str, episode: str, evaluation: bool = False) -> None:
        self.pub[arm]["start"].publish(EpisodeStart(episode_id=episode, arm=f"/{arm}", task="reach",
                                                    instruction="reach the red cube", evaluation=evaluation))

    def request(self, arm: str, episode: str, request_id: int, sec: int, step: int = 0, greedy: bool = False) -> None:
        msg = ChunkRequest(episode_id=episode, request_id=request_id, step=step, greedy=greedy)
        msg.header.stamp = stamp(sec)
        self.pub[arm]["request"].publish(msg)

    def end(self, arm: str, episode: str) -> None:
        self.pub[arm]["result"].publish(EpisodeResult(episode_id=episode, arm=f"/{arm}", end_reason="timeout"))


def start_policy(graph: RosGraph, checkpoint: Path, *args: str) -> Arms:
    arms = Arms(graph)
    graph.node("policy_node", "-p", f"checkpoint:={checkpoint}", "-p", "arms:=[arm0, arm1]",
               "-p", "batch_window_s:=0.5", *args)
    # Every pair must be matched before the test publishes or expects anything.
    graph.probe.wait_matched(arms.update, *[pub for arm in ARMS for pub in arms.pub[arm].values()],
                             *graph.probe.subscriptions.values(), timeout=60)
    return arms


def test_chunks_come_from_fresh_observations_and_trajectories_follow(ros_graph: RosGraph, checkpoints) -> None:
    arms = start_policy(ros_graph, checkpoints[0], "-p", "temperature:=0.75")
    arms.start("arm0", "ep-a")
    arms.start("arm1", "ep-b")
    arms.observe("arm0", sec=5)
    arms.observe("arm1", sec=5)
    # Requests stamped after the newest observation must wait for a newer one (a request may even
    # arrive before its episode's announcement).
    arms.request("arm0", "ep-a", 1, sec=6)
    arms.request("arm1", "ep-b", 1, sec=6)
    time.sleep(1.0)
    assert arms.chunks["arm0"] == [] and arms.chunks["arm1"] == []
    arms.observe("arm0", sec=6)
    arms.observe("arm1", sec=6)
    arms.wait(lambda: arms.chunks["arm0"] and arms.chunks["arm1"], "both chunks")
    for arm, episode in (("arm0", "ep-a"), ("arm1", "ep-b")):
        chunk = arms.chunks[arm][0]
        assert (chunk.episode_id, chunk.request_id, chunk.policy_version) == (episode, 1, 0)
        assert (chunk.chunk_size, chunk.action_dim, len(chunk.actions), len(chunk.token_ids)) == (C, A, C * A, C * A)
        assert np.all(np.isfinite(chunk.actions)) and chunk.header.stamp.sec == 6 and not chunk.greedy
    # A second step, then the end of the episode: the trajectory holds both chunks.
    arms.observe("arm0", sec=7)
    arms.request("arm0", "ep-a", 2, sec=7, step=2)
    arms.wait(lambda: len(arms.chunks["arm0"]) == 2, "the second chunk")
    arms.end("arm0", "ep-a")
    arms.wait(lambda: arms.trajectories["arm0"], "the trajectory")
    traj = arms.trajectories["arm0"][0]
    assert traj.episode_id == "ep-a" and list(traj.steps) == [0, 2] and len(traj.images) == 2
    assert list(traj.token_ids) == [*arms.chunks["arm0"][0].token_ids, *arms.chunks["arm0"][1].token_ids]
    assert traj.proprio_dim == len(STATE_NAMES) and len(traj.proprio) == 2 * len(STATE_NAMES)
    assert traj.temperature == pytest.approx(0.75)  # what it sampled at: the learner scores at it
    assert traj.withheld == ""
    # A training episode with a greedy chunk (an always_greedy executor) has no sampling temperature: withheld,
    # and said so (no chunks, the reason), so that the learner does not wait for it to close the group.
    arms.observe("arm1", sec=7)
    arms.request("arm1", "ep-b", 2, sec=7, step=2, greedy=True)
    arms.wait(lambda: len(arms.chunks["arm1"]) == 2 and arms.chunks["arm1"][1].greedy, "the greedy chunk")
    arms.end("arm1", "ep-b")
    arms.wait(lambda: arms.trajectories["arm1"], "the withheld trajectory's notice")
    notice = arms.trajectories["arm1"][0]
    assert (notice.episode_id, notice.withheld, len(notice.images), len(notice.token_ids), len(notice.steps)) == (
        "ep-b", Trajectory.WITHHELD_GREEDY, 0, 0, 0)
    assert "training episode with greedy chunks" in ros_graph.log("policy_node")


def test_weights_change_only_between_episodes_and_bad_updates_are_refused(
    ros_graph: RosGraph, checkpoints
) -> None:
    first, second = checkpoints
    arms = start_policy(ros_graph, first)
    arms.start("arm0", "ep-1")
    arms.observe("arm0", sec=1)
    arms.request("arm0", "ep-1", 1, sec=1)
    arms.wait(lambda: arms.chunks["arm0"], "a chunk")
    # New weights announced mid-episode: ep-1 keeps v0 to its end.
    arms.update.publish(PolicyUpdate(version=2, checkpoint_dir=str(second), digest=checkpoint_digest(second)))
    arms.observe("arm0", sec=2)
    arms.request("arm0", "ep-1", 2, sec=2, step=2)
    arms.wait(lambda: len(arms.chunks["arm0"]) == 2, "a second chunk")
    assert [c.policy_version for c in arms.chunks["arm0"]] == [0, 0]
    arms.end("arm0", "ep-1")
    arms.start("arm0", "ep-2")
    arms.observe("arm0", sec=3)
    arms.request("arm0", "ep-2", 1, sec=3)
    arms.wait(lambda: len(arms.chunks["arm0"]) == 3, "the next episode's chunk")
    assert arms.chunks["arm0"][2].policy_version == 2
    # A wrong digest is refused between episodes; v2 keeps serving.
    arms.update.publish(PolicyUpdate(version=3, checkpoint_dir=str(first), digest="0" * 64))
    arms.end("arm0", "ep-2")
    arms.wait(lambda: "rejected, keeping v2" in ros_graph.log("policy_node"), "the refusal")
    assert "does not match" in ros_graph.log("policy_node")
    arms.start("arm0", "ep-3")
    arms.observe("arm0", sec=4)
    arms.request("arm0", "ep-3", 1, sec=4)
    arms.wait(lambda: len(arms.chunks["arm0"]) == 4, "a chunk after the refusal")
    assert arms.chunks["arm0"][3].policy_version == 2


def test_garbage_is_dropped_and_the_node_keeps_serving(ros_graph: RosGraph, checkpoints) -> None:
    arms = start_policy(ros_graph, checkpoints[0])
    arms.start("arm0", "ep-g")
    bad = Image(height=48, width=48, encoding="rgb8", step=144, data=bytes(10))  # too few bytes
    bad.header.stamp = stamp(4)
    arms.observe("arm0", sec=4, image=bad)
    arms.request("arm0", "ep-g", 1, sec=4)
    arms.wait(lambda: "unusable observation" in ros_graph.log("policy_node"), "the drop to be logged")
    arms.update.publish(PolicyUpdate(version=5, checkpoint_dir="/nonexistent", digest="ab" * 32))
    arms.observe("arm0", sec=5)
    arms.wait(lambda: arms.chunks["arm0"], "a chunk after the garbage")
    # The pending request is answered from the next good image, never from the garbage.
    assert (arms.chunks["arm0"][0].request_id, arms.chunks["arm0"][0].header.stamp.sec) == (1, 5)
    arms.end("arm0", "ep-g")
    arms.wait(lambda: "rejected, keeping v0" in ros_graph.log("policy_node"), "the missing checkpoint")
    proc = next(p for name, p, _ in ros_graph.procs if name == "policy_node")
    assert proc.poll() is None
