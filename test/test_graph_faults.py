"""Faults in the train_sim graph (issue #8): a policy node or a sim bridge killed (SIGKILL) mid-episode.

One `vla-rl launch train_sim` graph (one arm, a learner that never updates so its buffer only counts)
serves both tests; each first waits for an episode under way. The launch file respawns both nodes
(respawn_delay 2 s), as a user's run would; the episode manager's lost_node_timeout_s is cut to 3 s so
the killed episode ends before the respawned node is back (a Python node with torch takes longer
than 1 s to start), and its sensor_fault_abort_s to 0.5 s, so a dead bridge's episode is aborted on
the executor's stale joint-state hold before that."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from rosgraph import TINY_CHUNK, RosGraph, small_config, wait_until
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart, Trajectory

from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    DIAGNOSTICS_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    TRAJECTORY_TOPIC,
)
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE, RESULTS

pytestmark = pytest.mark.graph
NS = "/arm0"
STARTUP_S = 150.0  # six Python nodes (torch, MuJoCo) starting on two loaded cores
LOST_NODE_S = 3.0
JOINT_STATE_TIMEOUT_S = 1.0  # config/executor.yaml: the executor's stale joint_states watchdog
SENSOR_FAULT_S = 0.5  # the manager aborts an episode whose executor holds this long on stale joint states


@dataclass
class Watch:
    """What the arm's topics carried, each message with its wall-clock (monotonic) arrival time."""

    starts: list[tuple[float, EpisodeStart]] = field(default_factory=list)
    results: list[tuple[float, EpisodeResult]] = field(default_factory=list)
    chunks: list[tuple[float, ActionChunk]] = field(default_factory=list)
    commands: list[tuple[float, JointTrajectory]] = field(default_factory=list)
    joints: list[tuple[float, JointState]] = field(default_factory=list)
    trajectories: list[tuple[float, Trajectory]] = field(default_factory=list)
    diagnostics: list[tuple[float, DiagnosticArray]] = field(default_factory=list)

    @staticmethod
    def into(received: list) -> Callable[[Any], None]:
        return lambda msg: received.append((time.monotonic(), msg))

    def result(self, episode_id: str) -> tuple[float, EpisodeResult] | None:
        return next(((t, r) for t, r in self.results if r.episode_id == episode_id), None)

    def holds(self, since: float) -> set[str]:
        """The executor's hold reasons reported on /diagnostics since `since`."""
        return {kv.value for t, array in self.diagnostics if t >= since for status in array.status
                if status.name == f"{NS}/executor" for kv in status.values if kv.key == "hold"}


class TrainGraph:
    def __init__(self, graph: RosGraph, run_dir: Path) -> None:
        self.graph, self.run_dir, self.watch = graph, run_dir, Watch()
        node, w = graph.probe.node, self.watch
        for msg_type, topic, received, qos in (
                (EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", w.starts, LATCHED),
                (EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", w.results, RESULTS),
                (ActionChunk, f"{NS}/{ACTION_CHUNK_TOPIC}", w.chunks, RELIABLE),
                (JointTrajectory, f"{NS}/{JOINT_TRAJECTORY_TOPIC}", w.commands, RELIABLE),
                (JointState, f"{NS}/{JOINT_STATES_TOPIC}", w.joints, qos_profile_sensor_data),
                (Trajectory, f"{NS}/{TRAJECTORY_TOPIC}", w.trajectories, EPISODES),
                (DiagnosticArray, DIAGNOSTICS_TOPIC, w.diagnostics, RELIABLE)):
            node.create_subscription(msg_type, topic, w.into(received), qos)

    def pid(self, label: str) -> int:
        """The newest pid of a launched process, from the launcher's "started <label> [pid N]" lines."""
        return int(re.findall(rf"started {label} \[pid (\d+)\]", self.graph.log("launch"))[-1])

    def episode_under_way(self, timeout: float = STARTUP_S) -> str:
        """The id of a running episode that has had two chunks, the newest one just now."""
        def running() -> str | None:
            if not self.watch.starts:
                return None
            eid = self.watch.starts[-1][1].episode_id
            times = [t for t, c in self.watch.chunks if c.episode_id == eid]
            fresh = len(times) >= 2 and time.monotonic() - times[-1] < 0.3
            return eid if fresh and self.watch.result(eid) is None else None
        return wait_until(running, timeout, "an episode under way")

    def recovered(self, since: float, timeout: float = STARTUP_S) -> EpisodeResult:
        """An episode started after `since` that ran to its end (not lost_node), with chunks."""
        def done() -> EpisodeResult | None:
            for t, start in self.watch.starts:
                found = self.watch.result(start.episode_id)
                if t > since and found is not None and found[1].end_reason != EpisodeResult.END_LOST_NODE and \
                        any(c.episode_id == start.episode_id for _, c in self.watch.chunks):
                    return found[1]
            return None
        return wait_until(done, timeout, "an episode that ran to its end")

    def buffer_state(self) -> dict:
        return json.loads((self.run_dir / "buffer" / "state.json").read_text())


@pytest.fixture(scope="module")
def train_graph(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[TrainGraph]:
    tmp = tmp_path_factory.mktemp("faults")
    config = small_config(tmp, episode_manager={"group_size": 2,
                                                "lost_node_timeout_s": LOST_NODE_S, "reset_timeout_s": 5.0,
                                                "sensor_fault_abort_s": SENSOR_FAULT_S},
                          learner={"groups_per_update": 50, "minibatch_size": 2, "epochs": 1,
                                   "dynamic_sampling": False})
    graph = RosGraph(tmp)
    failed = False
    try:
        train = TrainGraph(graph, tmp / "run")
        graph.launch("train_sim", "num_arms:=1", "composed:=false", "tasks:=[reach]", "max_updates:=0",
                     f"run_dir:={train.run_dir}",
                     f"checkpoint:={tiny_checkpoint}", f"config_dir:={config}", "eval_seeds_per_task:=0")
        yield train
    except BaseException:
        failed = True
        raise
    finally:
        graph.close()
        if failed or os.environ.get("FAULTS_LOGS"):
            print(graph.logs())


def kill(train: TrainGraph, label: str) -> tuple[int, float]:
    pid = train.pid(label)
    os.kill(pid, signal.SIGKILL)
    return pid, time.monotonic()


def test_policy_killed_mid_episode_holds_the_arm_and_the_episode_never_reaches_the_learner(
        train_graph: TrainGraph) -> None:
    train, w = train_graph, train_graph.watch
    eid = train.episode_under_way()
    pid, killed_at = kill(train, "policy_node-1")
    # The episode ends as lost_node (before the respawned policy is back).
    ended_at, result = wait_until(lambda: w.result(eid), 30, "the killed episode's result")
    assert (result.end_reason, result.success) == (EpisodeResult.END_LOST_NODE, False)
    # Meanwhile the arm held: at most the rest of the chunk under way and one chunk the policy had
    # already answered went out (the watcher may also receive those late), within the joint-state
    # period; then no command, and the joints stayed put (lockstep: sim time stood still).
    after = [t for t, _ in w.commands if killed_at < t < ended_at]
    assert len(after) <= 2 * TINY_CHUNK and all(t - killed_at < JOINT_STATE_TIMEOUT_S for t in after), after
    held = [j.position for t, j in w.joints if killed_at + JOINT_STATE_TIMEOUT_S < t < ended_at - 0.1]
    assert len(held) >= 3 and np.allclose(held, held[0]), f"{len(held)} joint states while holding"
    # The launcher respawns the policy; episodes run to their end again.
    wait_until(lambda: train.pid("policy_node-1") != pid, 30, "the respawned policy node")
    back = train.recovered(ended_at)
    assert back.end_reason in (EpisodeResult.END_TIMEOUT, EpisodeResult.END_SUCCESS)
    # Never reaches the learner: no trajectory of it was published and the learner counts it aborted
    # (lost_node), while the recovered episode's trajectory does reach it.
    wait_until(lambda: any(t.episode_id == back.episode_id for _, t in w.trajectories), 30,
               "the recovered episode's trajectory")
    assert not any(t.episode_id == eid for _, t in w.trajectories)
    state = wait_until(lambda: (s := train.buffer_state())["counters"].get("trajectories") and s, 30,
                       "the learner's buffer to take a trajectory")
    assert state["counters"]["aborted/lost_node"] >= 1 and eid in state["settled"]
    assert eid not in state["trajectories"] and state["counters"].get("used", 0) == 0


def test_sim_bridge_killed_mid_episode_is_reported_and_recovered_from(train_graph: TrainGraph) -> None:
    train, w = train_graph, train_graph.watch
    eid = train.episode_under_way()
    pid, killed_at = kill(train, "sim_bridge-1")
    # The executor's watchdog holds the arm on stale joint states; the manager reports the arm lost.
    wait_until(lambda: "stale_joint_states" in w.holds(killed_at), JOINT_STATE_TIMEOUT_S + 10,
               "the stale joint-state hold")
    ended_at, result = wait_until(lambda: w.result(eid), 30, "the killed bridge's episode result")
    # The sensor-fault abort normally comes first (joint-state timeout + SENSOR_FAULT_S < LOST_NODE_S);
    # on a loaded machine lost_node may win the race: both say "the arm is gone", both are discarded.
    assert result.end_reason in (EpisodeResult.END_ABORT, EpisodeResult.END_LOST_NODE) and not result.success
    why = {EpisodeResult.END_ABORT: "has held on stale_joint_states",
           EpisodeResult.END_LOST_NODE: f"no progress for {LOST_NODE_S:.0f} s"}[result.end_reason]
    line = f"{result.task}/{result.seed} (group {result.group_id[-6:]}, policy v0): {result.end_reason} after"
    wait_until(lambda: line in train.graph.log("launch") and why in train.graph.log("launch"), 10,
               "the manager's report")  # piped output lags the topic
    # The respawned bridge (its sim time starts again at 0) serves resets; episodes run to their end.
    wait_until(lambda: train.pid("sim_bridge-1") != pid, 30, "the respawned sim bridge")
    back = train.recovered(ended_at)
    assert back.end_reason in (EpisodeResult.END_TIMEOUT, EpisodeResult.END_SUCCESS) and back.steps > 0
