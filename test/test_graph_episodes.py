"""Episode manager and success detector as real processes: groups, success, time-outs, lost nodes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rosgraph import RosGraph, wait_until
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart, SuccessSignal, TaskState
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.ros.convert import stamp_ns, task_state_to_msg
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    RESET_EPISODE_SERVICE,
    SUCCESS_TOPIC,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.qos import RELIABLE
from vla_rl_ros.sim import make_env

pytestmark = pytest.mark.graph
NS = "/arm0"
REPO = Path(__file__).resolve().parents[1]


def slow_robot(tmp_path: Path, rate_hz: float) -> Path:
    """sim_panda at another control rate: the manager's only source of the step period."""
    text = (REPO / "config" / "robots" / "sim_panda.yaml").read_text()
    text = text.replace("model: ../../sim/panda.xml", f"model: {REPO / 'sim' / 'panda.xml'}")
    text = text.replace("control_rate_hz: 10.0", f"control_rate_hz: {rate_hz}")
    path = tmp_path / "slow_panda.yaml"
    path.write_text(text)
    return path


class FakeArm:
    """Plays the sim bridge's reset service and the policy's presence from the test process."""

    def __init__(self, graph: RosGraph) -> None:
        self.resets: list[ResetEpisode.Request] = []
        probe = graph.probe
        probe.node.create_service(ResetEpisode, f"{NS}/{RESET_EPISODE_SERVICE}", self.on_reset)
        self.chunks = probe.publisher(ActionChunk, f"{NS}/{ACTION_CHUNK_TOPIC}", RELIABLE)
        self.task_state = probe.publisher(TaskState, f"{NS}/{TASK_STATE_TOPIC}", RELIABLE)
        self.starts = probe.collect(EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", RELIABLE)
        self.results = probe.collect(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", RELIABLE)
        self.success = probe.collect(SuccessSignal, f"{NS}/{SUCCESS_TOPIC}", RELIABLE)
        # no episode starts without one
        self.detector = probe.publisher(SuccessSignal, f"{NS}/{SUCCESS_TOPIC}", RELIABLE)

    def on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        self.resets.append(request)
        response.success, response.instruction = True, f"do {request.task}"
        return response


def test_groups_share_a_seed_and_success_ends_the_episode(ros_graph: RosGraph, tmp_path: Path) -> None:
    # A state in which the reach predicate holds: the scripted expert's end state in the real sim.
    env = make_env("reach")
    env.reset(seed=1_000_000)
    while not env.step(env.task.expert(env)).info["episode_success"]:
        pass
    reached = env.task_state()
    env.close()
    arm = FakeArm(ros_graph)
    # A 1 Hz robot, in wall time: reach's 40-step limit cannot run out while the test plays the arm.
    ros_graph.node("episode_manager", "-r", f"__ns:={NS}", "-p", "tasks:=[reach]", "-p", "group_size:=2",
                   "-p", f"robot_config:={slow_robot(tmp_path, 1.0)}")
    ros_graph.node("success_detector", "-r", f"__ns:={NS}")
    ros_graph.probe.wait_matched(arm.task_state, arm.chunks, *ros_graph.probe.subscriptions.values(), timeout=60)

    for episode in range(2):
        wait_until(lambda n=episode: len(arm.starts) > n, 30, f"episode {episode} to start")
        start = arm.starts[episode]
        assert (start.task, start.instruction, start.evaluation) == ("reach", "do reach", False)
        chunk = ActionChunk(episode_id=start.episode_id, policy_version=3)
        arm.chunks.publish(chunk)
        msg = task_state_to_msg(reached, TaskState(episode_id=start.episode_id, task="reach"))
        # One task state per control step, as the bridge sends them, until the episode ends (reach must
        # hold for 3 steps; the detector may see the episode's start after the first few states).
        wait_until(lambda n=episode, m=msg: (arm.task_state.publish(m), len(arm.results) > n)[1], 30,
                   f"episode {episode} to end")
    first, second = arm.results[:2]
    assert first.group_id == second.group_id != "" and first.seed == second.seed
    # The scheduled group size travels with both messages: the learner closes the group at it.
    assert [m.group_size for m in (*arm.starts[:2], first, second)] == [2] * 4
    assert first.episode_id != second.episode_id
    assert [(r.success, r.reward, r.end_reason, r.policy_version) for r in (first, second)] == [
        (True, 1.0, "success", 3)] * 2
    assert [r.seed for r in arm.resets[:2]] == [first.seed] * 2
    # The detector reported success only after the predicate held for the task's 3 steps.
    verdicts = [s.success for s in arm.success if s.episode_id == first.episode_id]
    assert verdicts[:3] == [False, False, True], verdicts


def test_the_detector_offers_verdicts_only_once_its_input_has_a_publisher(ros_graph: RosGraph) -> None:
    """The manager starts episodes once a success publisher exists: a detector that offered one before it had
    its input let a lockstep sim run the first episode unjudged, a time-out of an expert that succeeded."""
    ros_graph.node("success_detector", "-r", f"__ns:={NS}")  # sim_oracle: judges task_state
    node = ros_graph.probe.node
    wait_until(lambda: node.count_subscribers(f"{NS}/{TASK_STATE_TOPIC}") > 0, 60, "the detector")
    time.sleep(1.0)
    assert node.count_publishers(f"{NS}/{SUCCESS_TOPIC}") == 0
    ros_graph.probe.publisher(TaskState, f"{NS}/{TASK_STATE_TOPIC}", RELIABLE)
    wait_until(lambda: node.count_publishers(f"{NS}/{SUCCESS_TOPIC}") == 1, 30, "the detector's success publisher")


def test_silence_ends_the_episode_as_lost_node_and_timeouts_count_steps(ros_graph: RosGraph) -> None:
    arm = FakeArm(ros_graph)
    ros_graph.node("episode_manager", "-r", f"__ns:={NS}", "-p", "tasks:=[reach]", "-p", "group_size:=2",
                   "-p", "lost_node_timeout_s:=1.0", "-p", "max_episodes:=2", label="manager")
    subs = ros_graph.probe.subscriptions
    ros_graph.probe.wait_matched(arm.chunks, subs[f"{NS}/{EPISODE_START_TOPIC}"], subs[f"{NS}/{EPISODE_RESULT_TOPIC}"],
                                 timeout=60)
    wait_until(lambda: arm.starts, 30, "an episode to start")
    arm.chunks.publish(ActionChunk(episode_id=arm.starts[0].episode_id))
    wait_until(lambda: arm.results, 30, "the silent episode to end")
    assert arm.results[0].end_reason == EpisodeResult.END_LOST_NODE and not arm.results[0].success
    # Second episode: keep the arm alive; reach's 40 steps at 10 Hz of ROS (wall) time run out after 4 s.
    wait_until(lambda: len(arm.starts) > 1, 30, "the second episode")
    deadline_chunks = ActionChunk(episode_id=arm.starts[1].episode_id)
    wait_until(lambda: (arm.chunks.publish(deadline_chunks), len(arm.results) > 1)[1], 30, "a time-out")
    assert arm.results[1].end_reason == EpisodeResult.END_TIMEOUT and arm.results[1].steps == 40
    # max_episodes reached: the manager exits by itself, cleanly.
    proc = next(p for name, p, _ in ros_graph.procs if name == "manager")
    assert proc.wait(timeout=30) == 0


def test_a_time_out_waits_for_a_lagging_detectors_verdict_on_the_last_step(ros_graph: RosGraph) -> None:
    """A detector that judges every step but lags (a lockstep sim outrunning a camera classifier on a
    loaded machine) may find success on the last steps after the step limit has run out by the clock:
    that episode is a success. (One whose last verdict never comes ends as a timeout after the wait:
    test_episodes_core.py.)"""
    arm = FakeArm(ros_graph)
    ros_graph.node("episode_manager", "-r", f"__ns:={NS}", "-p", "tasks:=[reach]", "-p", "group_size:=2",
                   "-p", "verdict_wait_s:=2.0", label="manager")
    subs = ros_graph.probe.subscriptions
    ros_graph.probe.wait_matched(arm.chunks, arm.detector, subs[f"{NS}/{EPISODE_START_TOPIC}"],
                                 subs[f"{NS}/{EPISODE_RESULT_TOPIC}"], timeout=60)
    step_s = 1 / 10.0  # sim_panda's control_rate_hz (the manager's robot config), in ROS (here wall) time
    limit_s = 40 * step_s  # reach's 40 steps

    def verdict(start: EpisodeStart, success: bool, after_s: float) -> SuccessSignal:
        msg = SuccessSignal(episode_id=start.episode_id, success=success, source="classifier")
        ns = stamp_ns(start.header.stamp) + round(after_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        return msg

    wait_until(lambda: arm.starts, 30, "the first episode")
    first = arm.starts[0]
    # Keep the policy alive, one early verdict, until 0.5 s past the step limit.
    arm.chunks.publish(ActionChunk(episode_id=first.episode_id))
    arm.detector.publish(verdict(first, False, 0.1))
    while time.time() < stamp_ns(first.header.stamp) * 1e-9 + limit_s + 0.5:
        arm.chunks.publish(ActionChunk(episode_id=first.episode_id))
        time.sleep(0.1)
    assert not arm.results, "ended before the detector judged the last step"
    arm.detector.publish(verdict(first, True, limit_s - 0.05))  # the verdict on the last step, late
    wait_until(lambda: arm.results, 10, "the first result")
    assert (arm.results[0].end_reason, arm.results[0].success, arm.results[0].steps) == ("success", True, 40)


def test_unknown_task_is_refused_at_start(ros_graph: RosGraph) -> None:
    proc = ros_graph.node("episode_manager", "-p", "tasks:=[reach, juggle]")
    assert proc.wait(timeout=60) == 2
    assert "unknown task 'juggle'" in ros_graph.log("episode_manager")
