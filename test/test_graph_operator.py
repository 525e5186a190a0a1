"""The operator's loop on a running graph: `vla-rl operator` (keys on stdin) labels episodes, readies
resets and aborts, while the episode manager (reset operator) has the executor home the arm between
episodes (executor/go_home) and names the group and rollout that come next.

Real processes over Fast DDS: sim bridge, executor, success detector (type operator), episode manager,
the operator tool; the probe plays a policy that moves the arm away from home for a few steps.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from rosgraph import RosGraph, wait_until
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart
from vla_rl_interfaces.srv import LabelEpisode

from vla_rl_ros.control import SIM_PANDA, Homing, RobotConfig
from vla_rl_ros.rl import EpisodeBuffer, GRPOConfig
from vla_rl_ros.ros.convert import result_from_msg
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CHUNK_REQUEST_TOPIC,
    DETECTOR_LABEL_SERVICE,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    JOINT_STATES_TOPIC,
    RELEASE_ESTOP_SERVICE,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, RESULTS

pytestmark = pytest.mark.graph
NS = "/arm0"
MOVES = 4  # chunks the probe's policy answers per episode: the arm leaves home, then waits


class AwayPolicy:
    """Answers the first MOVES chunk requests of each episode with a step sideways and down."""

    def __init__(self, graph: RosGraph) -> None:
        probe = graph.probe
        self.pub = probe.publisher(ActionChunk, f"{NS}/{ACTION_CHUNK_TOPIC}", RELIABLE)
        self.answered: dict[str, int] = {}
        probe.node.create_subscription(ChunkRequest, f"{NS}/{CHUNK_REQUEST_TOPIC}", self.on_request, RELIABLE)

    def on_request(self, msg: ChunkRequest) -> None:
        if self.answered.get(msg.episode_id, 0) >= MOVES:
            return
        self.answered[msg.episode_id] = self.answered.get(msg.episode_id, 0) + 1
        chunk = ActionChunk(episode_id=msg.episode_id, request_id=msg.request_id, chunk_size=1, action_dim=4,
                            action_mode="ee_delta", actions=[0.0, 0.04, -0.03, 0.0])
        chunk.header.stamp = msg.header.stamp
        self.pub.publish(chunk)


class Operator:
    """`vla-rl operator` as a subprocess: keys written to its stdin, its output read from a log."""

    def __init__(self, graph: RosGraph) -> None:
        self.log = graph.tmp / "operator.log"
        out = open(self.log, "wb")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen([sys.executable, "-m", "vla_rl_ros.cli", "operator", "--arm", NS],
                                     env=graph.env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        graph.procs.append(("operator", self.proc, self.log))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def press(self, key: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{key}\n".encode())
        self.proc.stdin.flush()

    def wait_for(self, text: str, after: int = 0, timeout: float = 30) -> int:
        """Wait until `text` appears in the output past offset `after`; returns the offset past it."""
        found = wait_until(lambda: (i := self.text().find(text, after)) >= 0 and i + 1, timeout, repr(text))
        return found - 1 + len(text)


def detector_sees(graph: RosGraph, episode_id: str) -> None:
    """Wait until the success detector has the episode's start (its process may read it late)."""
    wait_until(lambda: f"episode {episode_id} running" in graph.log("success_detector"), 30,
               f"the detector to see {episode_id} start")


def test_operator_labels_resets_and_aborts_episodes_of_a_running_graph(ros_graph: RosGraph) -> None:
    robot = RobotConfig.load(SIM_PANDA)
    home = Homing(robot, 0.02).home
    ros_graph.node("sim_bridge", "-r", f"__ns:={NS}")
    ros_graph.node("executor", "-r", f"__ns:={NS}")
    ros_graph.node("success_detector", "-r", f"__ns:={NS}", "-p", "type:=operator")
    ros_graph.node("episode_manager", "-r", f"__ns:={NS}", "-p", "reset:=operator", "-p", "tasks:=[reach]",
                   "-p", "group_size:=2", "-p", "use_sim_time:=true")
    probe = ros_graph.probe
    joints = probe.collect(JointState, f"{NS}/{JOINT_STATES_TOPIC}", qos_profile_sensor_data)
    starts = probe.collect(EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", LATCHED)
    results = probe.collect(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", RESULTS)
    AwayPolicy(ros_graph)
    op = Operator(ros_graph)

    def arm_error() -> float:
        return float(np.max(np.abs(np.array(joints[-1].position[:7]) - home)))

    def moved_away() -> bool:
        return bool(joints) and arm_error() > 0.1

    # Start-up: the executor's e-stop is latched (estop_at_start, as on a real arm): r is refused until it
    # is released; then nothing moves before the operator's first r, which sends the arm home (it is).
    at = op.wait_for("e-stop latched: release it", timeout=60)
    op.press("r")
    at = op.wait_for("[ready] refused: the e-stop is latched", at)
    assert probe.call(Trigger, f"{NS}/{RELEASE_ESTOP_SERVICE}", Trigger.Request()).success
    at = op.wait_for("press r to send it home", at)
    op.press("x")  # not a key: explained, and the tool keeps going
    at = op.wait_for("unknown key 'x'", at)
    op.press("r")
    at = op.wait_for("group 1, rollout 1/2 (reach, layout ", at)
    at = op.wait_for("then press r", at)
    # A label with no episode running, and for an unknown episode, is refused with the reason.
    refused = probe.call(LabelEpisode, f"{NS}/{DETECTOR_LABEL_SERVICE}",
                         LabelEpisode.Request(episode_id="", success=True))
    assert not refused.accepted and "no episode is running" in refused.message
    op.press("r")
    wait_until(lambda: starts, 30, "episode 1 to start")
    first = starts[-1]
    wait_until(moved_away, 30, "the policy to move the arm away from home")
    detector_sees(ros_graph, first.episode_id)
    wrong = probe.call(LabelEpisode, f"{NS}/{DETECTOR_LABEL_SERVICE}",
                       LabelEpisode.Request(episode_id="arm0-ep-nosuch", success=True))
    assert not wrong.accepted and "'arm0-ep-nosuch' is not the running episode" in wrong.message
    op.press("r")  # ready while an episode runs: refused, nothing happens
    at = op.wait_for("[ready] refused: not waiting for ready", at)
    op.press("s")
    wait_until(lambda: results, 30, "episode 1's result")
    assert (results[0].episode_id, results[0].success, results[0].end_reason) == (first.episode_id, True, "success")

    # Between rollouts of the group the arm goes home, then the operator is asked for the same layout.
    at = op.wait_for("group 1, rollout 2/2", at)
    assert arm_error() <= 0.03, f"the arm is {arm_error():.3f} rad from home when the operator is asked"
    assert "go_home: sending the arm home" in ros_graph.log("executor")  # the executor's limits moved it
    at = op.wait_for("restore the layout of rollout 1", at)
    op.press("r")
    wait_until(lambda: len(starts) > 1 and starts[-1].episode_id != first.episode_id, 30, "episode 2")
    second = starts[-1]
    assert (second.group_id, second.seed) == (first.group_id, first.seed)
    wait_until(moved_away, 30, "the arm to move in episode 2")
    detector_sees(ros_graph, second.episode_id)
    op.press("f")
    wait_until(lambda: len(results) > 1, 30, "episode 2's result")
    assert (results[1].success, results[1].reward, results[1].end_reason) == (False, 0.0, EpisodeResult.END_FAILURE)

    # A new group; the operator aborts and takes over: the arm holds where it is until r.
    at = op.wait_for("group 2, rollout 1/2", at)
    op.press("r")
    wait_until(lambda: len(starts) > 2 and starts[-1].episode_id != second.episode_id, 30, "episode 3")
    wait_until(moved_away, 30, "the arm to move in episode 3")
    time.sleep(0.5)  # the policy's few steps are done
    op.press("a")
    wait_until(lambda: len(results) > 2, 30, "episode 3's result")
    assert results[2].end_reason == EpisodeResult.END_ABORT and not results[2].success
    at = op.wait_for("the arm is yours", at)
    held = np.array(joints[-1].position)
    time.sleep(1.0)
    assert np.allclose(joints[-1].position, held, atol=1e-3) and arm_error() > 0.1, "the arm moved after abort"
    op.press("r")
    at = op.wait_for("group 2, rollout 2/2", at)
    assert arm_error() <= 0.03

    # An e-stop ends the episode; nothing moves until it is released at the executor and r is pressed.
    op.press("r")
    wait_until(lambda: len(starts) > 3, 30, "episode 4")
    wait_until(moved_away, 30, "the arm to move in episode 4")
    estop = probe.publisher(Bool, f"{NS}/{ESTOP_TOPIC}", RELIABLE)
    probe.wait_matched(estop)
    estop.publish(Bool(data=True))
    wait_until(lambda: len(results) > 3, 30, "episode 4's result")
    assert results[3].end_reason == EpisodeResult.END_ESTOP
    at = op.wait_for("e-stop latched: release it", at)
    op.press("r")
    at = op.wait_for("[ready] refused: the e-stop is latched", at)
    assert arm_error() > 0.1
    assert probe.call(Trigger, f"{NS}/{RELEASE_ESTOP_SERVICE}", Trigger.Request()).success
    at = op.wait_for("the arm is yours and will not move", at)  # the executor reported the release
    op.press("r")
    at = op.wait_for("group 3, rollout 1/2", at)
    assert arm_error() <= 0.03
    op.press("q")
    assert op.proc.wait(timeout=15) == 0

    # What the learner makes of them: the aborted episode is discarded, the others count.
    buffer = EpisodeBuffer(GRPOConfig(minibatch_size=2))
    for msg in results[:4]:
        buffer.add_result(result_from_msg(msg))
    assert buffer.counters["aborted/abort"] == 1 and buffer.counters["aborted/estop"] == 1
    assert buffer.counters["results"] == 4
    text = op.text()
    assert f"[episode] {first.episode_id} started" in text and f"[result] {first.episode_id}: success" in text
