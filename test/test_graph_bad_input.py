"""Bad input at the boundaries of the nodes that have no garbage test of their own (the policy node,
recorder, sim bridge and the executor's chunks have theirs): the learner, the executor's joint states
and e-stop, the success detector and the episode manager. Each message is malformed, extreme or out of
order and is sent three times; every node stays up, logs each cause once, and the arm never moves on it.

Real processes over Fast DDS; no sim bridge: the probe plays the arm's first joint state and the policy,
so the executor sends one command and would send the next on the first usable joint state, which only
garbage follows.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from rosgraph import SIM_EXECUTOR, TINY_CHUNK, RosGraph, small_config, wait_until
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory
from vla_rl_interfaces.msg import (
    ActionChunk,
    ChunkRequest,
    EpisodeResult,
    EpisodeStart,
    PolicyUpdate,
    SuccessSignal,
    TaskState,
    Trajectory,
)

from vla_rl_ros.control import SIM_PANDA, RobotConfig, make_kinematics
from vla_rl_ros.ros.convert import image_to_msg
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CHUNK_REQUEST_TOPIC,
    DIAGNOSTICS_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    POLICY_UPDATE_TOPIC,
    SUCCESS_TOPIC,
    TASK_STATE_TOPIC,
    TRAJECTORY_TOPIC,
)
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE
from vla_rl_ros.sim import JOINT_STATE_NAMES, STATE_NAMES

pytestmark = pytest.mark.graph
HOME = make_kinematics(RobotConfig.load(SIM_PANDA)).home.tolist()
NS = "/arm0"
REPEATS = 3  # each garbage message several times: still one log line per cause
A = 4  # action dim of the tiny checkpoint
UP = [0.0, 0.0, 0.01, 0.0]  # one valid action row


def trajectory(episode_id: str, *, n: int = 2, chunk: int = TINY_CHUNK, token: int = 0, proprio: float = 0.0,
               image_sizes: tuple[int, ...] = ()) -> Trajectory:
    """A Trajectory of n chunks; token 0 is outside any model's action tokens (the last 256 ids)."""
    sizes = image_sizes or (32,) * n
    images = [image_to_msg(np.zeros((s, s, 3), np.uint8), Time().to_msg()) for s in sizes]
    return Trajectory(episode_id=episode_id, arm=NS, instruction="go to the red cube", temperature=1.0,
                      chunk_size=chunk, action_dim=A,
                      images=images, proprio_dim=len(STATE_NAMES), proprio=[proprio] * (n * len(STATE_NAMES)),
                      token_ids=[token] * (n * chunk * A), log_probs=[-1.0] * n, steps=list(range(n)))


def test_garbage_at_every_input_is_dropped_with_one_line_per_cause_and_nothing_moves(
        ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path, learner={"groups_per_update": 1, "minibatch_size": 2,
                                             "epochs": 1, "dynamic_sampling": False})
    run_dir = tmp_path / "run"
    learner = ros_graph.node("learner", "--params-file", str(config / "learner.yaml"), "-p", f"run_dir:={run_dir}",
                             "-p", f"checkpoint:={tiny_checkpoint}", "-p", "arms:=[arm0]")
    executor = ros_graph.node("executor", "-r", f"__ns:={NS}", *SIM_EXECUTOR)
    detector = ros_graph.node("success_detector", "-r", f"__ns:={NS}")
    manager = ros_graph.node("episode_manager", "-r", f"__ns:={NS}", "-p", "tasks:=[reach]")
    probe = ros_graph.probe
    commands = probe.collect(JointTrajectory, f"{NS}/{JOINT_TRAJECTORY_TOPIC}", RELIABLE)
    requests = probe.collect(ChunkRequest, f"{NS}/{CHUNK_REQUEST_TOPIC}", RELIABLE)  # the probe is the policy
    verdicts = probe.collect(SuccessSignal, f"{NS}/{SUCCESS_TOPIC}", RELIABLE)
    results = probe.collect(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", EPISODES)
    diagnostics = probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
    pub = {name: probe.publisher(kind, f"{NS}/{name}", qos) for name, kind, qos in [
        (TRAJECTORY_TOPIC, Trajectory, EPISODES), (EPISODE_RESULT_TOPIC, EpisodeResult, EPISODES),
        (EPISODE_START_TOPIC, EpisodeStart, LATCHED), (JOINT_STATES_TOPIC, JointState, qos_profile_sensor_data),
        (ACTION_CHUNK_TOPIC, ActionChunk, RELIABLE), (ESTOP_TOPIC, Bool, RELIABLE),
        (TASK_STATE_TOPIC, TaskState, LATCHED), (SUCCESS_TOPIC, SuccessSignal, RELIABLE)]}
    pub[DIAGNOSTICS_TOPIC] = probe.publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
    pub[POLICY_UPDATE_TOPIC] = probe.publisher(PolicyUpdate, POLICY_UPDATE_TOPIC, LATCHED)
    wait_until(lambda: "learning from" in ros_graph.log("learner"), 120, "the learner")
    wait_until(lambda: "scheduling" in ros_graph.log("episode_manager"), 60, "the episode manager")
    probe.wait_matched(*pub.values(), timeout=60)
    time.sleep(1.0)  # the nodes' side of the matching

    # A start of an unknown task (latched, so it must be read before the next start replaces it); then an
    # episode the executor runs: one good joint state, a request answered with two steps; the first goes
    # out, the second waits for a joint state at or after its period's end, and only garbage comes.
    pub[EPISODE_START_TOPIC].publish(EpisodeStart(episode_id="ep-unknown", task="no_such_task"))
    wait_until(lambda: "dropped input: unknown task" in ros_graph.log("success_detector"), 60, "the unknown task")
    start = EpisodeStart(episode_id="ep-bad", arm=NS, task="reach", seed=3, instruction="go", max_steps=50)
    pub[EPISODE_START_TOPIC].publish(start)
    wait_until(lambda: "episode ep-bad running" in ros_graph.log("success_detector"), 60, "the detector's episode")
    pub[JOINT_STATES_TOPIC].publish(JointState(name=list(JOINT_STATE_NAMES), position=[*HOME, 0.04, 0.04]))
    request = wait_until(lambda: next(iter(requests), None), 60, "the executor's request")
    pub[ACTION_CHUNK_TOPIC].publish(ActionChunk(
        episode_id="ep-bad", request_id=request.request_id, chunk_size=2, action_dim=A, action_mode="ee_delta",
        actions=UP * 2, header=request.header))
    wait_until(lambda: len(commands) == 1, 60, "the first command")
    later = Time(seconds=1).to_msg()  # past the first command's period: usable joints would move the arm
    nan_joints = JointState(name=list(JOINT_STATE_NAMES), position=[float("nan")] * len(JOINT_STATE_NAMES))
    short_joints = JointState(name=list(JOINT_STATE_NAMES), position=[0.0, 1.0])
    # finite but far outside the joint limits (a spoofed message): the arm holds on it, ERROR on /diagnostics
    far_joints = JointState(name=list(JOINT_STATE_NAMES), position=[*HOME[:3], 1000.0, *HOME[4:], 0.04, 0.04])
    nan_joints.header.stamp = short_joints.header.stamp = far_joints.header.stamp = later
    bad_state = TaskState(episode_id="ep-bad", task="reach", object_names=["a", "b"], object_poses=[Pose()])
    # A group of two whose token ids this model cannot score: accepted, its update would fail.
    bad_group = [trajectory(f"g/{i}", token=0) for i in range(2)]
    group_results = [EpisodeResult(episode_id=f"g/{i}", arm=NS, group_id="g", group_size=2, task="reach",
                                   success=bool(i), reward=float(i), steps=10, end_reason="success" if i else "timeout")
                     for i in range(2)]
    for _ in range(REPEATS):
        pub[TRAJECTORY_TOPIC].publish(trajectory("t-sizes", n=2, chunk=TINY_CHUNK + 1))  # token ids of another chunk
        pub[TRAJECTORY_TOPIC].publish(trajectory("t-nan", proprio=float("nan")))
        pub[TRAJECTORY_TOPIC].publish(trajectory("t-images", image_sizes=(32, 16)))
        pub[TRAJECTORY_TOPIC].publish(Trajectory(episode_id="t-empty", arm=NS))
        pub[EPISODE_RESULT_TOPIC].publish(EpisodeResult(episode_id="r-odd", arm=NS, end_reason="exploded"))
        pub[JOINT_STATES_TOPIC].publish(nan_joints)
        pub[JOINT_STATES_TOPIC].publish(short_joints)
        pub[JOINT_STATES_TOPIC].publish(far_joints)
        pub[TASK_STATE_TOPIC].publish(bad_state)
        pub[SUCCESS_TOPIC].publish(SuccessSignal(episode_id="ep-nobody", success=True, source="sim_oracle"))
        pub[DIAGNOSTICS_TOPIC].publish(DiagnosticArray(status=[DiagnosticStatus(
            name=f"{NS}/executor", values=[KeyValue(key="hold", value="\x00" * 1000), KeyValue(key="estop")])]))
        pub[POLICY_UPDATE_TOPIC].publish(PolicyUpdate(version=2**31, checkpoint_dir="/nowhere", digest="zz"))
        time.sleep(0.2)
    wait_until(lambda: any(st.name == f"{NS}/executor" and st.level == DiagnosticStatus.ERROR
                           and "joint_state_out_of_limits: joint4 measured at 1000 rad" in st.message
                           for d in diagnostics for st in d.status), 60, "ERROR on /diagnostics, out of limits")
    for msg in bad_group:
        pub[TRAJECTORY_TOPIC].publish(msg)
    for msg in group_results:
        pub[EPISODE_RESULT_TOPIC].publish(msg)
    pub[ESTOP_TOPIC].publish(Bool(data=True))
    for _ in range(REPEATS):
        pub[ESTOP_TOPIC].publish(Bool(data=False))  # a release by topic: refused, only the service releases

    logs = {label: lambda label=label: ros_graph.log(label)
            for label in ("learner", "executor", "success_detector", "episode_manager")}
    expected = {
        "learner": ["dropped input: malformed Trajectory", "dropped input: malformed EpisodeResult"],
        "executor": ["dropped input: unusable joint_states", "dropped input: estop false while latched"],
        "success_detector": ["dropped input: unknown task", "dropped input: malformed task_state"],
    }
    for label, lines in expected.items():
        for line in lines:
            wait_until(lambda label=label, line=line: line in logs[label](), 60, f"{label}: {line!r}")
    time.sleep(3.0)  # time for a crash, an update or a command to show
    for label in expected:  # each cause once, however often it came
        causes = [line.split("dropped input: ")[1].split(":")[0] for line in logs[label]().splitlines()
                  if "dropped input: " in line]
        assert len(causes) == len(set(causes)), causes
    for label, proc in [("learner", learner), ("executor", executor), ("success_detector", detector),
                        ("episode_manager", manager)]:
        assert proc.poll() is None, f"{label} exited:\n{logs[label]()[-3000:]}"
        assert "Traceback" not in logs[label](), logs[label]()[-3000:]
    assert len(commands) == 1, "the arm moved on garbage"
    assert not any(v.success for v in verdicts if v.episode_id != "ep-nobody")  # the probe's own garbage
    assert {r.episode_id for r in results} == {"r-odd", "g/0", "g/1"}  # only the probe's: no episode ran
    assert "token_ids must be" in logs["learner"]() and not (run_dir / "metrics.csv").exists()  # no update ran
