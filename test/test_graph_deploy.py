"""deploy / collect / train_real launch files: what each starts for hardware:=sim and :=real, and the
real-arm path run end to end on the MuJoCo bridge with camera_node replaying a video file: chunks are
executed, an e-stop stops the arm within one control period, episodes are recorded, and a camera
unplugged mid-episode holds the arm and ends the episode without a result the learner trains on."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from rosgraph import TINY_CHUNK, RosGraph, small_config, wait_until
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from test_camera import write_video
from trajectory_msgs.msg import JointTrajectory
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart

from vla_rl_ros.data import EpisodeDataset
from vla_rl_ros.launcher.description import describe, resolve_launch_file
from vla_rl_ros.paths import package_share
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE
from vla_rl_ros.rl.records import DISCARD_REASONS
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    DIAGNOSTICS_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, RESULTS
from vla_rl_ros.sim import TASKS

NS = "/arm0"
PERIOD_S = 0.1  # the robot configs' control period (10 Hz)
CHUNK = TINY_CHUNK
STARTUP_S = 120  # a loaded 2-core machine starts five Python nodes (torch, MuJoCo) in 10-40 s


# -- the launch files, expanded (no processes) ------------------------------------------------------
def expand(name: str, tmp: Path, **args: str) -> dict[str, dict]:
    """node name -> {"params": merged parameters, "remaps": {from: to}} of `name` with `args`."""
    nodes = {}
    for proc in describe(resolve_launch_file(name), args, tmp).processes:
        ros = proc.cmd[proc.cmd.index("--ros-args") + 1:]
        params: dict = {}
        for i, word in enumerate(ros):
            if word == "--params-file":
                for section in yaml.safe_load(Path(ros[i + 1]).read_text()).values():
                    params.update(section["ros__parameters"])
        remaps = dict(ros[i + 1].split(":=") for i, w in enumerate(ros) if w == "-r")
        nodes[remaps.pop("__node")] = {"params": params, "remaps": remaps, "ns": remaps.pop("__ns", "/")}
    return nodes


def test_launch_files_pick_the_hardware_layer_the_camera_and_the_success_backend(tmp_path: Path) -> None:
    deploy = expand("deploy", tmp_path)
    assert sorted(deploy) == ["executor", "policy_node", "sim_bridge"]
    assert {n["ns"] for n in deploy.values()} == {NS}
    assert deploy["sim_bridge"]["remaps"]["camera/image_raw"] == "camera/image_raw"  # the render is the camera
    assert deploy["executor"]["params"].items() >= {"use_sim_time": True, "always_greedy": True, "dry_run": False,
                                                    "request_ahead_steps": 0, "image_timeout_s": 1.0}.items()
    assert deploy["executor"]["params"]["robot_config"].endswith("config/robots/sim_panda.yaml")
    assert deploy["policy_node"]["params"]["checkpoint"] == ""  # an empty argument is a string, not null

    replay = expand("deploy", tmp_path, camera="node", camera_source="/data/replay.mp4", dry_run="true")
    assert replay["sim_bridge"]["remaps"]["camera/image_raw"] == "sim_render/image_raw"  # one camera publisher
    assert replay["camera_node"]["params"].items() >= {"source": "/data/replay.mp4", "use_sim_time": True}.items()
    assert replay["camera_node"]["remaps"]["/clock"] == "/arm0/clock" and replay["executor"]["params"]["dry_run"]

    real = expand("deploy", tmp_path, hardware="real", robot="franka_panda", camera_source="0",
                  joint_states_topic="/joint_states")
    assert sorted(real) == ["camera_node", "executor", "policy_node"]  # the arm's driver is the user's
    assert real["camera_node"]["params"]["source"] == "0"  # a string, as the node requires
    assert real["executor"]["params"].items() >= {"use_sim_time": False, "request_ahead_steps": 1}.items()
    assert real["executor"]["params"]["robot_config"].endswith("robots/franka_panda.yaml")
    assert real["policy_node"]["params"]["robot_config"] == real["executor"]["params"]["robot_config"]
    assert all(real[n]["remaps"]["joint_states"] == "/joint_states" for n in ("executor", "policy_node"))
    assert sorted(expand("deploy", tmp_path, hardware="real", camera="external")) == ["executor", "policy_node"]
    assert sorted(expand("deploy", tmp_path, policy="external")) == ["executor", "sim_bridge"]  # the user's policy
    assert expand("deploy", tmp_path, camera="external")["sim_bridge"]["remaps"]["camera/image_raw"] == \
        "sim_render/image_raw"

    collect = expand("collect", tmp_path, hardware="real", robot="franka_panda", dataset="/data/arm0")
    assert sorted(collect) == ["camera_node", "episode_manager", "executor", "policy_node", "recorder",
                               "success_detector"]
    # success:=auto is the operator on a real arm (nothing publishes the oracle's task_state), on its clock
    assert collect["success_detector"]["params"].items() >= {"type": "operator", "use_sim_time": False}.items()
    assert collect["success_detector"]["params"]["robot_config"] == collect["executor"]["params"]["robot_config"]
    assert collect["executor"]["params"]["estop_at_start"] and not expand("collect", tmp_path)["executor"]["params"][
        "estop_at_start"]  # a real arm starts e-stopped, a simulated one not
    classifier = expand("collect", tmp_path, success="classifier")["success_detector"]["params"]
    assert classifier.items() >= {"type": "classifier", "use_sim_time": True}.items()  # on the sim's clock
    assert collect["episode_manager"]["params"].items() >= {"reset": "operator", "robot_config": collect["executor"][
        "params"]["robot_config"]}.items()
    assert collect["recorder"]["params"].items() >= {"dataset": "/data/arm0", "cameras": ["front"],
                                                 "camera_topics": ["camera/image_raw"]}.items()
    assert collect["recorder"]["params"]["robot_config"] == collect["executor"]["params"]["robot_config"]
    assert not collect["episode_manager"]["params"]["use_sim_time"] and collect["recorder"]["params"]["bag_dir"] == ""
    # A recorder that dies comes back (episodes would otherwise go unrecorded after one launcher line).
    for name in ("collect", "train_real"):
        recorder = next(p for p in describe(resolve_launch_file(name), {}, tmp_path).processes
                        if p.label.startswith("recorder"))
        assert recorder.respawn and recorder.respawn_delay > 0, name

    train = expand("train_real", tmp_path, max_updates="3")
    assert sorted(train) == ["episode_manager", "executor", "learner", "policy_node", "recorder", "sim_bridge",
                             "success_detector"]
    assert train["learner"]["params"].items() >= {"arms": ["arm0"], "max_updates": 3}.items()
    assert not train["executor"]["params"]["always_greedy"]  # GRPO needs sampled rollouts
    assert train["success_detector"]["params"].items() >= {"type": "sim_oracle", "use_sim_time": True}.items()
    assert train["episode_manager"]["params"]["reset"] == "sim"
    # The learner has neither a temperature nor a group size: each Trajectory carries the temperature its
    # policy node sampled at, each EpisodeResult its manager's group size. Every launch file's temperature
    # default is the code's one default.
    assert not {"temperature", "group_size"} & set(train["learner"]["params"])
    for name in ("train_sim", "train_real"):
        assert expand(name, tmp_path, temperature="0.9")["policy_node"]["params"]["temperature"] == 0.9, name
    for name in ("train_sim", "train_real", "deploy", "collect"):
        assert expand(name, tmp_path)["policy_node"]["params"]["temperature"] == ROLLOUT_TEMPERATURE, name
    # GRPO in sim starts both nodes from the starting policy; deploy serves the default.
    sim = expand("train_sim", tmp_path, num_arms="1")
    start = package_share("vla_rl_ros") / "models" / "start_policy"
    assert sim["learner"]["params"]["checkpoint"] == sim["policy_node"]["params"]["checkpoint"] == str(start)
    assert expand("deploy", tmp_path)["policy_node"]["params"]["checkpoint"] == ""


# -- the graphs -------------------------------------------------------------------------------------
class Arm:
    """The probe watching /arm0."""

    def __init__(self, graph: RosGraph) -> None:
        probe = self.probe = graph.probe
        self.commands = probe.collect(JointTrajectory, f"{NS}/{JOINT_TRAJECTORY_TOPIC}", RELIABLE)
        self.command_times: list[float] = []
        self.on_command: Callable[[int], None] = lambda count: None  # called with the number of commands so far
        probe.node.create_subscription(JointTrajectory, f"{NS}/{JOINT_TRAJECTORY_TOPIC}", self._command, RELIABLE)
        self.joints = probe.collect(JointState, f"{NS}/{JOINT_STATES_TOPIC}", qos_profile_sensor_data)
        self.images = probe.collect(Image, f"{NS}/{CAMERA_TOPICS['front']}", qos_profile_sensor_data)
        self.chunks = probe.collect(ActionChunk, f"{NS}/{ACTION_CHUNK_TOPIC}", RELIABLE)
        self.starts = probe.collect(EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", LATCHED)
        self.results = probe.collect(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", RESULTS)
        self.diagnostics = probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)

    def _command(self, _msg: JointTrajectory) -> None:
        self.command_times.append(time.monotonic())
        self.on_command(len(self.command_times))

    def status(self, node: str) -> dict[str, str]:
        """The newest /diagnostics key values of /arm0/<node> (empty before the first)."""
        statuses = [s for d in self.diagnostics for s in d.status if s.name == f"{NS}/{node}"]
        return {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}


def test_deploy_executes_chunks_from_the_replayed_camera_and_an_estop_stops_within_a_period(
        ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path) -> None:
    video = tmp_path / "replay.mp4"
    write_video(video, n=20)
    ros_graph.launch("deploy", "hardware:=sim", "camera:=node", f"camera_source:={video}", "camera_loop:=true",
                     f"checkpoint:={tiny_checkpoint}", f"config_dir:={small_config(tmp_path)}")
    arm = Arm(ros_graph)
    start_pub = arm.probe.publisher(EpisodeStart, f"{NS}/{EPISODE_START_TOPIC}", LATCHED)
    estop_pub = arm.probe.publisher(Bool, f"{NS}/{ESTOP_TOPIC}", RELIABLE)
    wait_until(lambda: arm.joints and arm.images and arm.probe.node.count_publishers(f"{NS}/{ACTION_CHUNK_TOPIC}"),
               STARTUP_S, "the sim bridge, camera_node and the policy")
    wait_until(lambda: arm.probe.node.count_subscribers(f"{NS}/{EPISODE_START_TOPIC}") >= 2, STARTUP_S, "the executor")
    subs = arm.probe.subscriptions
    arm.probe.wait_matched(start_pub, estop_pub,
                           *(subs[f"{NS}/{t}"] for t in (JOINT_TRAJECTORY_TOPIC, ACTION_CHUNK_TOPIC)),
                           subs[DIAGNOSTICS_TOPIC], timeout=STARTUP_S)
    home = np.array(arm.joints[-1].position[:7])
    start = EpisodeStart(episode_id="deploy-1", arm=NS, task="reach", instruction=TASKS["reach"].sample(0).instruction,
                         max_steps=10_000)
    start_pub.publish(start)

    wait_until(lambda: len(arm.commands) >= 5 * CHUNK, 60, "five chunks executed")
    moved = np.abs(np.array(arm.joints[-1].position[:7]) - home).max()
    assert moved > 1e-3, f"the arm did not move ({moved} rad)"
    ours = [c for c in arm.chunks if c.episode_id == "deploy-1"]
    assert len(ours) >= 5 and all(c.chunk_size == CHUNK and c.greedy for c in ours)
    # The policy saw camera_node's frames (the render went to sim_render/), stamped with the arm's sim time.
    assert {m.header.frame_id for m in arm.images} == {"camera"}
    image_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in arm.images}
    assert sum((c.header.stamp.sec, c.header.stamp.nanosec) in image_stamps for c in ours) >= len(ours) // 2

    # E-stop mid-chunk: as soon as the first command of a chunk is seen, while its other steps remain.
    stopped: list[float] = []

    def estop_mid_chunk(count: int) -> None:
        if not stopped and count % CHUNK == 1:
            estop_pub.publish(Bool(data=True))
            stopped.append(time.monotonic())

    arm.on_command = estop_mid_chunk
    wait_until(lambda: arm.status("executor").get("hold") == "estop", 30, "the e-stop hold")
    stopped_at = stopped[0]
    time.sleep(1.0)
    late = [t - stopped_at for t in arm.command_times if t > stopped_at + PERIOD_S]
    assert not late, f"commands {late} s after the e-stop"
    assert ros_graph.procs[0][1].poll() is None


def test_collect_records_episodes_and_an_unplugged_camera_holds_the_arm_and_ends_the_episode(
        ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path) -> None:
    video, dataset = tmp_path / "replay.mp4", tmp_path / "dataset"
    write_video(video, n=20)
    config = small_config(tmp_path, episode_manager={"tasks": ["reach"], "group_size": 2, "lost_node_timeout_s": 60.0,
                                                     "sensor_fault_abort_s": 2.0},
                          recorder={"video_pix_fmt": "yuv444p"})
    ros_graph.launch("collect", "hardware:=sim", "camera:=node", f"camera_source:={video}", "camera_loop:=true",
                     f"checkpoint:={tiny_checkpoint}", f"config_dir:={config}", f"dataset:={dataset}",
                     "image_timeout_s:=0.5")
    arm = Arm(ros_graph)

    def written() -> int:
        return len(EpisodeDataset.open(dataset)) if (dataset / "meta" / "info.json").is_file() else 0

    wait_until(lambda: written() >= 2, STARTUP_S + 120, "two recorded episodes")
    ds = EpisodeDataset.open(dataset)
    first = ds[0]
    assert first.task == "reach" and first.end_reason in ("timeout", "success") and first.images["front"].shape[1:] \
        == (48, 64, 3)  # camera_node's replayed frames, as the policy saw them
    assert len(first.state) == len(first.actions) == (TASKS["reach"].max_steps if first.end_reason == "timeout"
                                                      else len(first.state))

    # Unplug mid-episode: the replay file disappears once an episode has run 2 of its 10 chunks.
    def under_way() -> str | None:
        if not arm.starts or arm.starts[-1].episode_id in {r.episode_id for r in arm.results}:
            return None
        eid = arm.starts[-1].episode_id
        return eid if 2 <= sum(c.episode_id == eid for c in arm.chunks) <= 5 else None

    victim = wait_until(under_way, 60, "an episode under way")
    shutil.move(video, tmp_path / "away.mp4")
    wait_until(lambda: arm.status("executor").get("hold") == "stale_image", 30, "the executor's stale-image hold")
    held = len(arm.commands)
    result = wait_until(lambda: next((r for r in arm.results if r.episode_id == victim), None), 30, "its end")
    assert result.end_reason == EpisodeResult.END_ABORT and not result.success  # the sensor fault, not silence
    assert 0 < result.steps < TASKS["reach"].max_steps  # cut mid-episode, the sim clock stood still meanwhile
    assert result.end_reason in DISCARD_REASONS  # the learner never trains on it
    assert len(arm.commands) <= held + 1  # held until the end: nothing moved without a camera
    assert int(arm.status("camera_node").get("reconnect_attempts", "0")) >= 1

    # Plugged back in: the camera reconnects and the next episode runs to its end.
    shutil.move(tmp_path / "away.mp4", video)
    after = len(arm.results)
    wait_until(lambda: any(r.end_reason in ("timeout", "success") for r in arm.results[after:]), 90,
               "an episode after the camera came back")
    assert arm.status("camera_node")["reconnects"] == "1"
    # The cut episode is in the dataset with its reason, up to where the arm stopped.
    cut = next(e for e in EpisodeDataset.open(dataset) if e.episode_id == victim)
    assert cut.end_reason == "abort" and not cut.success and len(cut.actions) == result.steps
    log = ros_graph.log("launch")
    assert "camera lost" in log and "holding: stale_image" in log and "held on stale_image" in log
