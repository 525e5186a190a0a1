"""One arm's dead or hung executor in a two-arm train_sim graph (issue #21): the other arm trains on,
new weights are still swapped in, and the arm comes back. Composed (#19 item 4): both arms' episodes
end and their results arrive, each on its namespace; a killed sim_arms process comes back whole.

One `vla-rl launch train_sim num_arms:=2` graph whose learner updates after every group of two.
With one process per node (composed:=false), arm1's
executor is killed (SIGKILL), and the launcher respawns it; then the respawned one hangs (SIGSTOP),
which no respawn cures. lost_node_timeout_s is far longer than the test waits, so only the policy
node's swap gate (policy/serving.py's SwapGate: an arm silent for SILENT_ARM_S is not waited for) lets the update
through; when the executor goes on (SIGCONT), its episode ends on the new weights and its trajectory,
which two versions served, is withheld from the learner.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rosgraph import RosGraph, small_config, wait_until
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart, Trajectory

from vla_rl_ros.policy.serving import SILENT_ARM_S
from vla_rl_ros.ros.names import ACTION_CHUNK_TOPIC, EPISODE_RESULT_TOPIC, EPISODE_START_TOPIC, TRAJECTORY_TOPIC
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE, RESULTS

pytestmark = pytest.mark.graph
ARMS = ("arm0", "arm1")
STARTUP_S = 150.0  # ten Python nodes (torch, MuJoCo) starting on two loaded cores
LOST_NODE_S = 120.0  # the manager's give-up: longer than any wait below
EPISODE_S = 60.0  # for an episode (40 steps of reach) to run, under load


class Arms:
    """What each arm's topics carried, with wall-clock (monotonic) arrival times, and the launch log."""

    def __init__(self, graph: RosGraph) -> None:
        self.graph = graph
        self.starts: dict[str, list[tuple[float, EpisodeStart]]] = {a: [] for a in ARMS}
        self.results: dict[str, list[tuple[float, EpisodeResult]]] = {a: [] for a in ARMS}
        self.chunks: dict[str, list[tuple[float, ActionChunk]]] = {a: [] for a in ARMS}
        self.trajectories: dict[str, list[Trajectory]] = {a: [] for a in ARMS}
        node = graph.probe.node
        for arm in ARMS:
            node.create_subscription(EpisodeStart, f"/{arm}/{EPISODE_START_TOPIC}", self.into(self.starts[arm]),
                                     LATCHED)
            node.create_subscription(EpisodeResult, f"/{arm}/{EPISODE_RESULT_TOPIC}", self.into(self.results[arm]),
                                     RESULTS)
            node.create_subscription(ActionChunk, f"/{arm}/{ACTION_CHUNK_TOPIC}", self.into(self.chunks[arm]), RELIABLE)
            node.create_subscription(Trajectory, f"/{arm}/{TRAJECTORY_TOPIC}", self.trajectories[arm].append, EPISODES)

    @staticmethod
    def into(received: list) -> Callable[[Any], None]:
        return lambda msg: received.append((time.monotonic(), msg))

    def pid(self, label: str) -> int:
        """The newest pid of a launched process, from the launcher's "started <label> [pid N]" lines."""
        return int(re.findall(rf"started {label} \[pid (\d+)\]", self.graph.log("launch"))[-1])

    def served(self) -> list[int]:
        """The policy versions the policy node has swapped in, in order."""
        return [int(v) for v in re.findall(r"now serving policy v(\d+)", self.graph.log("launch"))]

    def result(self, arm: str, episode_id: str) -> EpisodeResult | None:
        return next((r for _, r in self.results[arm] if r.episode_id == episode_id), None)

    def under_way(self, arm: str, timeout: float = STARTUP_S) -> str:
        """The id of an episode of `arm` with two to six chunks (of ten), the newest one just now."""
        def running() -> str | None:
            if not self.starts[arm]:
                return None
            eid = self.starts[arm][-1][1].episode_id
            times = [t for t, c in self.chunks[arm] if c.episode_id == eid]
            fresh = 2 <= len(times) <= 6 and time.monotonic() - times[-1] < 0.3
            return eid if fresh and self.result(arm, eid) is None else None
        return wait_until(running, timeout, f"an episode of {arm} under way")

    def completed(self, arm: str, since: float, timeout: float = EPISODE_S) -> EpisodeResult:
        """An episode of `arm` started after `since` that ran to its end (not lost_node), with chunks."""
        def done() -> EpisodeResult | None:
            for t, start in self.starts[arm]:
                found = self.result(arm, start.episode_id)
                if t > since and found is not None and found.end_reason != EpisodeResult.END_LOST_NODE and \
                        any(c.episode_id == start.episode_id for _, c in self.chunks[arm]):
                    return found
            return None
        return wait_until(done, timeout, f"an episode of {arm} that ran to its end")


@pytest.fixture
def two_arms(request: pytest.FixtureRequest, tmp_path: Path, tiny_checkpoint: Path) -> Iterator[Arms]:
    """The graph; `composed:=<request.param>`."""
    config = small_config(tmp_path, episode_manager={"group_size": 2, "lost_node_timeout_s": LOST_NODE_S},
                          learner={"groups_per_update": 1, "minibatch_size": 2, "epochs": 1,
                                   "dynamic_sampling": False, "checkpoint_every": 1000})
    graph = RosGraph(tmp_path)
    failed = False
    try:
        arms = Arms(graph)
        graph.launch("train_sim", "num_arms:=2", f"composed:={request.param}", "tasks:=[reach]", "max_updates:=0",
                     f"run_dir:={tmp_path / 'run'}",
                     f"checkpoint:={tiny_checkpoint}", f"config_dir:={config}", "eval_seeds_per_task:=0")
        yield arms
    except BaseException:
        failed = True
        raise
    finally:
        graph.close()
        if failed or os.environ.get("FAULTS_LOGS"):
            print(graph.logs())


@pytest.mark.parametrize("two_arms", ["false"], indirect=True)
def test_a_dead_or_hung_executor_holds_only_its_own_arm(two_arms: Arms) -> None:
    arms = two_arms
    arms.under_way("arm1")
    # Killed: the launcher respawns it (the episode under way goes on with it, or ends as lost_node).
    killed = arms.pid("executor-2")
    os.kill(killed, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: arms.pid("executor-2") != killed, 30, "the respawned executor")
    arms.completed("arm0", killed_at)
    arms.completed("arm1", killed_at, timeout=EPISODE_S + 30)  # the respawned one runs arm1's episodes

    # Hung: arm1's episode stays under way, and no respawn comes; arm0 runs on, and the next update is
    # swapped in without waiting for arm1 (once it has been silent for SILENT_ARM_S).
    eid = arms.under_way("arm1")
    hung = arms.pid("executor-2")
    os.kill(hung, signal.SIGSTOP)
    hung_at = time.monotonic()
    old = max(c.policy_version for _, c in arms.chunks["arm1"] if c.episode_id == eid)
    try:
        wait_until(lambda: f"did not wait for /arm1's episode {eid}" in arms.graph.log("launch"),
                   2 * EPISODE_S + SILENT_ARM_S, "a swap that does not wait for the hung arm")
        assert max(arms.served()) > old and arms.result("arm1", eid) is None
        arms.completed("arm0", hung_at)
    finally:
        os.kill(hung, signal.SIGCONT)
    # arm1 goes on: its episode ends on the new weights, withheld from the learner; the next one is whole.
    back_at = time.monotonic()
    result = wait_until(lambda: arms.result("arm1", eid), EPISODE_S, "the hung episode's result")
    assert result.end_reason in (EpisodeResult.END_TIMEOUT, EpisodeResult.END_SUCCESS)
    assert max(c.policy_version for _, c in arms.chunks["arm1"] if c.episode_id == eid) > old
    wait_until(lambda: "episode served by two policy versions" in arms.graph.log("launch"), 10,
               "the policy node's report")  # piped output lags the topic
    after = arms.completed("arm1", back_at)
    wait_until(lambda: any(t.episode_id == after.episode_id for t in arms.trajectories["arm1"]), 30,
               "the trajectory of arm1's next episode")
    # Withheld: a notice without chunks tells the learner to close its group without it.
    assert [(t.withheld, len(t.images)) for t in arms.trajectories["arm1"] if t.episode_id == eid] == [
        (Trajectory.WITHHELD_TWO_VERSIONS, 0)]


@pytest.mark.parametrize("two_arms", ["true"], indirect=True)
def test_composed_arms_run_episodes_and_a_killed_process_comes_back_whole(two_arms: Arms) -> None:
    """Each arm's four nodes in one sim_arms process: episodes end and results arrive on each arm's
    namespace. SIGKILL of arm1's process takes its episode manager along: that episode never gets a
    result (the learner never waits for it); the respawned process runs arm1's episodes again, and
    arm0 runs on meanwhile."""
    arms = two_arms
    for arm in ARMS:
        result = arms.completed(arm, 0.0, timeout=STARTUP_S)
        assert result.arm == f"/{arm}" and result.end_reason in (EpisodeResult.END_TIMEOUT, EpisodeResult.END_SUCCESS)
    eid = arms.under_way("arm1")
    killed = arms.pid("sim_arms-2")
    os.kill(killed, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: arms.pid("sim_arms-2") != killed, 30, "the respawned sim_arms process")
    arms.completed("arm0", killed_at)
    arms.completed("arm1", killed_at, timeout=STARTUP_S)  # a fresh process starts as slowly as the first
    assert arms.result("arm1", eid) is None
