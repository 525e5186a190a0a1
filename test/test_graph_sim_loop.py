"""The sim bridge and the executor as real processes: resets, lockstep, refused commands, the scripted
expert succeeding through the graph, adversarial chunks, e-stop latching and dry run."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from rosgraph import SIM_EXECUTOR, RosGraph, wait_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart, TaskState
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.control import SIM_PANDA, RobotConfig
from vla_rl_ros.control.kinematics import ArmModel
from vla_rl_ros.ros.convert import task_state_from_msg, to_stamp
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    CHUNK_REQUEST_TOPIC,
    CLOCK_TOPIC,
    DIAGNOSTICS_TOPIC,
    DRY_RUN_TRAJECTORY_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    RELEASE_ESTOP_SERVICE,
    RESET_EPISODE_SERVICE,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE, STEPS
from vla_rl_ros.sim import JOINT_STATE_NAMES, TASKS, EnvConfig, make_env
from vla_rl_ros.sim.scene import scene_path

pytestmark = pytest.mark.graph

SCRIPTED_POLICY = Path(__file__).parent / "nodes" / "scripted_policy.py"
TASK = "reach"
SEED = TASKS[TASK].heldout_seeds[3]
PERIOD_NS = 100_000_000  # the sim bridge's control period, 0.1 s
QUIET_S = 1.0  # how long "nothing happens" is watched
SETTLE_S = 0.3  # a command sent just before a hold still runs its one period (0.1 s sim, ms of wall time)


def ns(stamp) -> int:
    return Time.from_msg(stamp).nanoseconds


class ManagerProbe:
    """The probe playing the episode manager (and watching the graph)."""

    def __init__(self, graph: RosGraph) -> None:
        probe = self.probe = graph.probe
        self.joints = probe.collect(JointState, JOINT_STATES_TOPIC, qos_profile_sensor_data)
        self.clock = probe.collect(Clock, CLOCK_TOPIC, RELIABLE)
        self.states = probe.collect(TaskState, TASK_STATE_TOPIC, RELIABLE)
        self.commands = probe.collect(JointTrajectory, JOINT_TRAJECTORY_TOPIC, STEPS)  # every one, loaded or not
        self.requests = probe.collect(ChunkRequest, CHUNK_REQUEST_TOPIC, STEPS)
        self.diagnostics = probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
        self.start_pub = probe.publisher(EpisodeStart, EPISODE_START_TOPIC, LATCHED)
        self.result_pub = probe.publisher(EpisodeResult, EPISODE_RESULT_TOPIC, EPISODES)  # as the manager's
        self.chunk_pub = probe.publisher(ActionChunk, ACTION_CHUNK_TOPIC, RELIABLE)
        self.estop_pub = probe.publisher(Bool, ESTOP_TOPIC, RELIABLE)

    def reset(self, task: str, seed: int, episode_id: str) -> ResetEpisode.Response:
        return self.probe.call(ResetEpisode, RESET_EPISODE_SERVICE,
                               ResetEpisode.Request(task=task, seed=seed, episode_id=episode_id), timeout=60)

    def start(self, episode_id: str, *, seed: int = SEED, max_steps: int = 40) -> None:
        """Reset the world, then announce the episode stamped with the reset state's time."""
        assert self.reset(TASK, seed, episode_id).success
        wait_until(lambda: self.states and self.states[-1].episode_id == episode_id, what="the reset state")
        msg = EpisodeStart(episode_id=episode_id, task=TASK, seed=seed, max_steps=max_steps, evaluation=True)
        msg.header.stamp = self.states[-1].header.stamp
        wait_until(lambda: self.probe.node.count_subscribers(EPISODE_START_TOPIC) > 0, what="the executor")
        self.start_pub.publish(msg)

    def sim_ns(self) -> int:
        wait_until(lambda: self.clock, what="/clock")
        return ns(self.clock[-1].clock)

    def status(self) -> DiagnosticStatus:
        wait_until(lambda: self.diagnostics, what="/diagnostics")
        return self.diagnostics[-1].status[0]

    def values(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.status().values}

    def quiet(self) -> tuple[int, int]:
        """(commands, sim time) after QUIET_S of watching: both must not have changed meanwhile."""
        time.sleep(SETTLE_S)
        before = (len(self.commands), self.sim_ns())
        time.sleep(QUIET_S)
        after = (len(self.commands), self.sim_ns())
        assert after == before, f"the arm moved: (commands, sim ns) {before} -> {after}"
        return after


def point(positions: list[float], seconds: float = 0.1) -> JointTrajectoryPoint:
    return JointTrajectoryPoint(positions=positions, time_from_start=Duration(seconds=seconds).to_msg())


def test_bridge_resets_steps_only_on_commands_and_refuses_bad_ones(ros_graph: RosGraph) -> None:
    ros_graph.node("sim_bridge", "-p", "heartbeat_hz:=10.0")
    ep = ManagerProbe(ros_graph)
    images = ep.probe.collect(Image, CAMERA_TOPICS["front"], qos_profile_sensor_data)
    wrist = ep.probe.collect(Image, CAMERA_TOPICS["wrist"], qos_profile_sensor_data)

    unknown = ep.reset("fly", 0, "e0")
    assert not unknown.success and "unknown task 'fly'" in unknown.message and "reach" in unknown.message
    outside = ep.reset(TASK, 500_000, "e0")
    assert not outside.success and "seed 500000 is in neither seed set" in outside.message
    ok = ep.reset(TASK, SEED, "e1")
    assert ok.success and ok.instruction == TASKS[TASK].sample(SEED).instruction

    # Lockstep: with no command, sim time and the arm stand still (the heartbeat re-sends them).
    wait_until(lambda: ep.states and ep.states[-1].episode_id == "e1", what="the reset state")
    t0, count = ep.sim_ns(), len(ep.joints)
    time.sleep(QUIET_S)
    assert len(ep.joints) >= count + 5 and ep.sim_ns() == t0
    assert {ns(j.header.stamp) for j in ep.joints[count:]} == {t0}
    home = np.array(ep.joints[-1].position)
    assert list(ep.joints[-1].name) == list(JOINT_STATE_NAMES)
    assert images[-1].encoding == "rgb8" and (images[-1].height, images[-1].width) == (64, 64) and wrist

    pub = ep.probe.publisher(JointTrajectory, JOINT_TRAJECTORY_TOPIC, RELIABLE)
    wait_until(lambda: ep.probe.node.count_subscribers(JOINT_TRAJECTORY_TOPIC) > 0, what="the bridge")
    arm = list(JOINT_STATE_NAMES[:7])
    target = [*(home[:7] + 0.05), 0.02]
    bad = {
        "unknown joint names": JointTrajectory(joint_names=[*arm, "elbow"], points=[point([*target[:7], 0.0])]),
        "missing arm joints": JointTrajectory(joint_names=arm[1:], points=[point(target[1:7])]),
        "non-finite or missing positions": JointTrajectory(joint_names=[*arm, "finger_joint1"],
                                                           points=[point([np.nan, *target[1:]])]),
        "point duration": JointTrajectory(joint_names=[*arm, "finger_joint1"], points=[point(target, 0.5)]),
        "another state's stamp": stamped(JointTrajectory(joint_names=arm, points=[point(target[:7])]), t0 + 1),
    }
    for msg in bad.values():
        pub.publish(msg)
    for cause in bad:
        wait_until(lambda c=cause: f"joint_trajectory refused ({c})" in ros_graph.log("sim_bridge"), what=cause)
    assert ep.sim_ns() == t0 and np.array_equal(ep.joints[-1].position, home)

    # One good two-point command: two control steps, sim time advances exactly two periods.
    order = [*reversed(arm), "finger_joint1"]  # matched by name, in any order
    moved = [target[arm.index(n)] if n in arm else 0.02 for n in order]
    pub.publish(JointTrajectory(joint_names=order, points=[point(moved, 0.1), point(moved, 0.2)]))
    wait_until(lambda: ep.states[-1].step == 2, what="two steps")
    time.sleep(0.3)
    assert ep.sim_ns() == t0 + 2 * PERIOD_NS and ep.states[-1].step == 2
    assert np.all(np.abs(np.array(ep.joints[-1].position[:7]) - target[:7]) < 0.02)
    assert ep.joints[-1].position[7] == pytest.approx(0.02, abs=0.005)  # the gripper half closed
    assert ns(ep.states[-1].header.stamp) == ns(ep.joints[-1].header.stamp) == ns(images[-1].header.stamp)

    # A reset moves sim time forward (by the settling time), never back.
    assert ep.reset(TASK, SEED + 1, "e2").success
    wait_until(lambda: ep.states[-1].episode_id == "e2", what="the second reset")
    t2 = ns(ep.states[-1].header.stamp)
    assert t2 > t0 + 2 * PERIOD_NS and ep.states[-1].step == 0
    # A command computed from e1's last state, arriving after the reset: refused, e2's arm stays at its start
    # (the executor's last command of an episode can overtake the manager's reset).
    wait_until(lambda: ns(ep.joints[-1].header.stamp) == t2, what="e2's joint state")
    start = np.array(ep.joints[-1].position)
    pub.publish(stamped(JointTrajectory(joint_names=arm, points=[point(list(home[:7]))]), t0 + 2 * PERIOD_NS))
    time.sleep(QUIET_S)
    assert ep.sim_ns() == t2 and np.array_equal(ep.joints[-1].position, start) and ep.states[-1].step == 0
    # Stamped with the current state, as the executor does on sim time: one step.
    pub.publish(stamped(JointTrajectory(joint_names=arm, points=[point(list(start[:7]))]), t2))
    wait_until(lambda: ep.states[-1].step == 1, what="the current state's command")
    assert ep.sim_ns() == t2 + PERIOD_NS


def stamped(msg: JointTrajectory, stamp_ns: int) -> JointTrajectory:
    msg.header.stamp = to_stamp(stamp_ns)
    return msg


def test_a_camera_subscribed_between_steps_gets_the_current_frame_from_the_heartbeat(ros_graph: RosGraph) -> None:
    """A policy node restarted mid-episode subscribes while the arm stands still; the bridge renders
    only subscribed cameras, so the newcomer's first frame must come from the heartbeat, show the
    state of the last step and carry that step's stamp."""
    ros_graph.node("sim_bridge", "-p", "heartbeat_hz:=10.0")
    ep = ManagerProbe(ros_graph)
    front = ep.probe.collect(Image, CAMERA_TOPICS["front"], qos_profile_sensor_data)
    assert ep.reset(TASK, SEED, "e1").success
    wait_until(lambda: ep.states and ep.states[-1].episode_id == "e1" and ep.joints, what="the reset state")
    home = np.array(ep.joints[-1].position[:7])
    pub = ep.probe.publisher(JointTrajectory, JOINT_TRAJECTORY_TOPIC, RELIABLE)
    wait_until(lambda: ep.probe.node.count_subscribers(JOINT_TRAJECTORY_TOPIC) > 0, what="the bridge")
    arm = list(JOINT_STATE_NAMES[:7])
    pub.publish(JointTrajectory(joint_names=arm, points=[point(list(home + 0.05))]))  # gripper stays open
    wait_until(lambda: ep.states[-1].step == 1, what="one step")
    stepped = ns(ep.states[-1].header.stamp)
    wait_until(lambda: front and ns(front[-1].header.stamp) == stepped, what="the stepped front frame")

    wrist = ep.probe.collect(Image, CAMERA_TOPICS["wrist"], qos_profile_sensor_data)
    wait_until(lambda: wrist, what="a wrist frame from the heartbeat")
    assert ns(wrist[0].header.stamp) == stepped and wrist[0].header.frame_id == "wrist_camera"
    with make_env(TASK, cameras=("wrist",), action_mode="joint_position",
                  config=EnvConfig(binary_gripper=False)) as env:
        at_reset = env.reset(SEED).images["wrist"]
        expected = env.step(np.append(home + 0.05, 0.0)).observation.images["wrist"]
    assert np.any(at_reset != expected)  # the wrist camera moved with the arm
    seen = np.frombuffer(bytes(wrist[0].data), np.uint8).reshape(wrist[0].height, wrist[0].width, 3)
    assert np.array_equal(seen, expected)


def test_scripted_expert_succeeds_through_the_graph_as_in_the_core_env(ros_graph: RosGraph) -> None:
    ros_graph.node("sim_bridge")
    ros_graph.node("executor", "-p", "use_sim_time:=true", *SIM_EXECUTOR)  # as launched in sim: on the bridge's /clock
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY)])
    spec = TASKS[TASK]
    core_states, core_joints = {}, {}  # step -> the core env's task state and arm joints after it
    with make_env(TASK, cameras=()) as env:  # the core env's rollout, for comparison
        env.reset(SEED)
        done = False
        while not done:
            result = env.step(spec.expert(env))
            core_states[env.steps], core_joints[env.steps] = env.task_state(), result.observation.state[:7]
            done = result.done
        assert result.info["episode_success"]
        core_steps = env.steps

    ep = ManagerProbe(ros_graph)
    every_step = ep.probe.collect(JointState, JOINT_STATES_TOPIC, STEPS)  # the bridge keeps 1000: none is missed
    wait_until(lambda: ep.probe.node.count_publishers(ACTION_CHUNK_TOPIC) > 0, what="the scripted policy")
    ep.start("ep-expert", max_steps=spec.max_steps)
    start_ns = next(ns(m.header.stamp) for m in ep.states if m.episode_id == "ep-expert")  # the reset state's

    # The same actions on the same physics: the graph reproduces the core env, step by step, to its success.
    # Joint states (the bridge keeps 1000) arrive every one; task states (latched, a history of 1) the probe
    # may miss on a loaded machine, so it compares those it got.
    stamps = [start_ns + k * PERIOD_NS for k in range(1, core_steps + 1)]
    wait_until(lambda: {ns(m.header.stamp) for m in every_step} >= set(stamps), 60, "the steps to the success")
    graph_joints = {ns(m.header.stamp): np.array(m.position[:7]) for m in every_step}
    assert all(np.allclose(graph_joints[t], core_joints[k + 1], atol=1e-6) for k, t in enumerate(stamps))
    graph_states = {m.step: task_state_from_msg(m) for m in ep.states
                    if m.episode_id == "ep-expert" and 0 < m.step <= core_steps}
    assert graph_states and all(np.array_equal(state.ee_pos, core_states[k].ee_pos)
                                and np.array_equal(state.object_pos, core_states[k].object_pos)
                                for k, state in graph_states.items())
    result = EpisodeResult(episode_id="ep-expert", success=True, end_reason=EpisodeResult.END_SUCCESS)
    ep.result_pub.publish(result)
    wait_until(lambda: ep.values()["hold"] == "episode_ended", what="the executor to hold after the result")
    commands, sim = ep.quiet()
    # Lockstep: sim time advanced exactly one control period per command, none while the policy thought.
    assert sim - start_ns == commands * PERIOD_NS
    # On sim time each command is stamped with the state it follows (the bridge refuses any other stamp).
    assert [ns(c.header.stamp) for c in ep.commands] == [start_ns + k * PERIOD_NS for k in range(commands)]
    assert all(r.greedy for r in ep.requests) and ep.requests[0].step == 0
    assert [r.request_id for r in ep.requests] == list(range(1, len(ep.requests) + 1))
    # The probe's chunk publisher is a second policy on this arm: the executor says so, once.
    wait_until(lambda: "2 nodes publish /action_chunk" in ros_graph.log("executor"), what="the two-policies warning")
    log = ros_graph.log("executor")
    assert log.count("nodes publish /action_chunk") == 1 and "/scripted_policy" in log and "/test_probe" in log
    wait_until(lambda: ep.values()["action_chunk_publishers"] == "2", what="/diagnostics counting two")


def test_rendering_on_chunk_requests_publishes_only_the_frames_the_policy_asks_for(ros_graph: RosGraph) -> None:
    """train_sim's bridge (render_when chunk_request): the cameras render once per chunk, at the state
    the executor asks from; the episode runs as with every frame rendered. The bridge reads
    chunk_request but answers no chunk: until a policy appears the executor holds as no_policy."""
    ros_graph.node("sim_bridge", "-p", "render_when:=chunk_request")
    ros_graph.node("executor", *SIM_EXECUTOR)
    probe = ros_graph.probe
    images = probe.collect(Image, CAMERA_TOPICS["front"], qos_profile_sensor_data)
    wrist = probe.collect(Image, CAMERA_TOPICS["wrist"], qos_profile_sensor_data)
    requests = probe.collect(ChunkRequest, CHUNK_REQUEST_TOPIC, RELIABLE)
    states = probe.collect(TaskState, TASK_STATE_TOPIC, RELIABLE)
    diagnostics = probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
    start_pub = probe.publisher(EpisodeStart, EPISODE_START_TOPIC, LATCHED)
    spec, chunk_size = TASKS[TASK], 4
    reset = probe.call(ResetEpisode, RESET_EPISODE_SERVICE,
                       ResetEpisode.Request(task=TASK, seed=SEED, episode_id="ep-frames"), timeout=60)
    assert reset.success
    wait_until(lambda: states and states[-1].episode_id == "ep-frames", what="the reset state")
    start = EpisodeStart(episode_id="ep-frames", task=TASK, seed=SEED, max_steps=spec.max_steps, evaluation=True)
    start.header.stamp = states[-1].header.stamp
    wait_until(lambda: probe.node.count_subscribers(EPISODE_START_TOPIC) > 0, what="the executor")
    start_pub.publish(start)
    wait_until(lambda: any("holding: no_policy" in d.status[0].message for d in diagnostics), 30,
               "the no_policy hold on /diagnostics")
    assert not requests and not images  # no request went out unanswered, so nothing was rendered

    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY), "--ros-args",
                                        "-p", f"chunk_size:={chunk_size}"])
    wait_until(lambda: (step := success_step(spec, states, "ep-frames")) and len(requests) * chunk_size >= step, 60,
               "the expert's success through the graph")
    steps = success_step(spec, states, "ep-frames")
    asked = {ns(r.header.stamp) for r in requests}
    for frames in (images, wrist):
        stamps = {ns(m.header.stamp) for m in frames}
        assert stamps <= asked and len(stamps) >= len(asked) - 1  # the last request's frame may be in flight
    # one request, so one frame, per chunk (not per step): at steps 0, C, 2C... up to the success and on
    assert len(asked) == len(requests) and [r.step for r in requests] == list(range(0, chunk_size * len(requests),
                                                                                     chunk_size))
    assert len([r for r in requests if r.step < steps]) == -(-steps // chunk_size) < steps


def success_step(spec, states: list[TaskState], episode_id: str) -> int | None:
    """The step at which the task's predicate had held for hold_steps consecutive steps (the core
    env's episode success), or None."""
    streak = 0
    for msg in states:
        if msg.episode_id == episode_id and msg.step > 0:
            streak = streak + 1 if spec.success(task_state_from_msg(msg)) else 0
            if streak >= spec.hold_steps:
                return msg.step
    return None


def test_adversarial_chunks_never_move_the_arm_and_the_executor_keeps_running(ros_graph: RosGraph) -> None:
    ros_graph.node("sim_bridge")
    ros_graph.node("executor", *SIM_EXECUTOR)
    ep = ManagerProbe(ros_graph)
    ep.start("ep-bad")
    wait_until(lambda: ep.requests, what="the first chunk request")
    request = ep.requests[-1]

    def chunk(actions: list[float], chunk_size: int = 1, action_dim: int = 4, **change) -> ActionChunk:
        msg = ActionChunk(episode_id="ep-bad", request_id=request.request_id, chunk_size=chunk_size,
                          action_dim=action_dim, action_mode="ee_delta", actions=actions)
        msg.header.stamp = request.header.stamp
        for key, value in change.items():
            setattr(msg, key, value)
        return msg

    bad = [chunk([np.nan, 0.0, 0.0, 0.0]), chunk([0.0, np.inf, 0.0, 0.0]), chunk([0.0, 0.0, -np.inf, 1.0]),
           chunk([0.01, 0.0, 0.0]), chunk([0.01] * 8, chunk_size=3), chunk([0.01] * 5, action_dim=5),
           chunk([0.01, 0, 0, 0], episode_id="ep-other"), chunk([0.01, 0, 0, 0], request_id=99)]
    before = len(ep.diagnostics)
    for msg in bad:
        ep.chunk_pub.publish(msg)
    wait_until(lambda: sum(int(v) for k, v in ep.values().items() if k.startswith("rejected/")) == len(bad),
               what="every bad chunk rejected")
    # Not one /diagnostics per rejection (a flood of bad chunks once gave 270 a second): the first at once,
    # the rest paced into a report that counts them by cause.
    burst = [d.status[0].message for d in ep.diagnostics[before:]]
    counted = [int(n) for m in burst for n in re.findall(r"rejected (\d+) chunks since the last report", m)]
    assert sum(counted) == len(bad) and len(burst) <= 3, burst
    assert {k: v for k, v in ep.values().items() if k.startswith("rejected/")} == {
        "rejected/non_finite": "3", "rejected/bad_shape": "3", "rejected/wrong_episode": "1",
        "rejected/unrequested": "1"}
    assert ep.status().level == DiagnosticStatus.OK and "last rejected chunk: unrequested" in ep.status().message
    commands, _ = ep.quiet()
    assert commands == 0 and len(ep.requests) == 1
    log = ros_graph.log("executor")
    assert "action_chunk rejected (non_finite)" in log and log.count("action_chunk rejected (non_finite)") == 1
    wait_until(lambda: ep.values()["action_chunk_publishers"] == "1", what="/diagnostics counting the probe")
    assert "nodes publish" not in ros_graph.log("executor")  # the probe alone answers this arm

    # Still running: a huge but finite chunk is executed, clipped to the per-step and box limits.
    robot = RobotConfig.load(SIM_PANDA)
    ee_before = task_state_from_msg(ep.states[-1]).ee_pos
    ep.chunk_pub.publish(chunk([1e9, -1e9, 1e9, 1e9, 0.0, 0.0, 1e9, 0.0], chunk_size=2))
    wait_until(lambda: len(ep.commands) == 2 and ep.states[-1].step == 2, what="two clipped steps")
    ee_after = task_state_from_msg(ep.states[-1]).ee_pos
    assert np.all(np.abs(ee_after - ee_before) <= 2 * robot.max_translation + 0.01)
    assert robot.workspace.distance(ee_after) <= robot.workspace.tolerance
    wait_until(lambda: len(ep.requests) == 2, what="the next request")
    assert ep.requests[-1].step == 2 and ros_graph.procs[1][0] == "executor" and ros_graph.procs[1][1].poll() is None


def test_estop_stops_motion_and_stays_latched_until_released(ros_graph: RosGraph) -> None:
    ros_graph.node("sim_bridge")
    executor = ros_graph.node("executor", *SIM_EXECUTOR)
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY)])
    ep = ManagerProbe(ros_graph)
    wait_until(lambda: ep.probe.node.count_publishers(ACTION_CHUNK_TOPIC) > 0, what="the scripted policy")
    ep.start("ep-estop", max_steps=10_000)
    wait_until(lambda: len(ep.commands) >= 3, what="motion")
    ep.estop_pub.publish(Bool(data=True))
    wait_until(lambda: ep.values()["hold"] == "estop", what="the e-stop hold")
    assert ep.status().level == DiagnosticStatus.ERROR and ep.status().message.startswith("holding: estop")
    ep.quiet()
    ep.estop_pub.publish(Bool(data=False))  # does not release
    ep.quiet()
    assert ep.values()["estop"] == "true"
    released = ep.probe.call(Trigger, RELEASE_ESTOP_SERVICE, Trigger.Request())
    assert released.success and "released" in released.message
    moving = len(ep.commands)
    wait_until(lambda: len(ep.commands) >= moving + 3, what="motion after the release")
    again = ep.probe.call(Trigger, RELEASE_ESTOP_SERVICE, Trigger.Request())
    assert not again.success and again.message == "e-stop was not latched"
    assert "E-STOP latched" in ros_graph.log("executor")

    # E-stopped again, the executor dies; one restarted with a real arm's default (estop_at_start) rejoins
    # the running episode (latched episode_start) but starts latched: it forgot the e-stop, not the rule.
    ep.estop_pub.publish(Bool(data=True))
    wait_until(lambda: ep.values()["hold"] == "estop", what="the e-stop hold again")
    executor.kill()
    executor.wait()
    restarted = ros_graph.node("executor", label="executor_restarted")
    wait_until(lambda: "e-stop latched at start" in ros_graph.log("executor_restarted"), what="the restarted executor")
    wait_until(lambda: "episode ep-estop" in ros_graph.log("executor_restarted"), what="it to rejoin the episode")
    ep.quiet()  # nothing moves
    assert ep.probe.call(Trigger, RELEASE_ESTOP_SERVICE, Trigger.Request()).success
    moving = len(ep.commands)
    wait_until(lambda: len(ep.commands) >= moving + 3, what="motion after releasing the restarted executor")

    # The episode ends; an executor restarted after that gets its latched start and, in the manager's
    # latched history, its result (in either order): it does not run the episode again (released: on a
    # simulated arm's settings).
    ep.result_pub.publish(EpisodeResult(episode_id="ep-estop", end_reason=EpisodeResult.END_ABORT))
    wait_until(lambda: ep.values()["hold"] == "episode_ended", what="the episode_ended hold")
    restarted.kill()
    restarted.wait()
    ros_graph.node("executor", *SIM_EXECUTOR, label="executor_after_end")
    wait_until(lambda: any(line in ros_graph.log("executor_after_end") for line in (
        "start of an ended episode", "episode ep-estop ended")), what="the restarted executor to see the result")
    ep.quiet()
    assert ep.values()["hold"] in ("no_episode", "episode_ended")


def test_dry_run_computes_commands_but_sends_none(ros_graph: RosGraph) -> None:
    ros_graph.node("sim_bridge")
    ros_graph.node("executor", "-p", "dry_run:=true", *SIM_EXECUTOR)
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY)])
    ep = ManagerProbe(ros_graph)
    dry = ep.probe.collect(JointTrajectory, DRY_RUN_TRAJECTORY_TOPIC, RELIABLE)
    wait_until(lambda: ep.probe.node.count_publishers(ACTION_CHUNK_TOPIC) > 0, what="the scripted policy")
    ep.start("ep-dry")
    wait_until(lambda: dry, what="a dry-run command")
    commands, _ = ep.quiet()
    assert commands == 0 and ep.states[-1].step == 0
    assert list(dry[0].joint_names) == [*ArmModel.from_mjcf(scene_path()).joint_names, "finger_joint1"]
    assert "DRY RUN" in ros_graph.log("executor")


def test_no_command_goes_out_while_nothing_listens_for_it(ros_graph: RosGraph) -> None:
    """A command published before any reader matched is lost (reliable, volatile) and a lockstep sim
    then waits for it forever: the executor holds as no_robot until its command topic has a reader."""
    ros_graph.node("sim_bridge")
    ros_graph.node("executor", "-r", f"{JOINT_TRAJECTORY_TOPIC}:=unheard", *SIM_EXECUTOR)
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY)])
    ep = ManagerProbe(ros_graph)
    wait_until(lambda: ep.probe.node.count_publishers(ACTION_CHUNK_TOPIC) > 0, what="the scripted policy")
    ep.start("ep-unheard")
    wait_until(lambda: any("holding: no_robot" in d.status[0].message for d in ep.diagnostics), 30,
               "the no_robot hold on /diagnostics")
    ep.quiet()
    assert ep.values()["commands_sent"] == "0" and ep.states[-1].step == 0
    heard = ep.probe.collect(JointTrajectory, "unheard", RELIABLE)
    wait_until(lambda: heard, 30, "the first command, once something listens")


@pytest.mark.parametrize(("node", "args", "message"), [
    ("executor", ["-p", "robot_config:=/no/such/robot.yaml"], "no robot config at /no/such/robot.yaml"),
    ("sim_bridge", ["-p", "seed:=500000"], "seed 500000 is in neither seed set of task 'reach'"),
    ("sim_bridge", ["-p", "cameras:=[front, top]"], "each must be one of ['front', 'wrist']"),
])
def test_bad_configuration_stops_the_node_with_a_clear_message(ros_graph: RosGraph, node: str, args: list[str],
                                                               message: str) -> None:
    proc = ros_graph.node(node, *args)
    assert proc.wait(timeout=60) == 2
    assert message in ros_graph.log(node)
