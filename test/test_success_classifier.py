"""The classifier success backend: the labelling rule, `vla-rl train-classifier` on episodes recorded
from the sim (held-out precision/recall it prints), refusal of missing or corrupt model files, and the
success detector judging real sim camera images in a running graph.

The episodes are shaped like a recorder's on an arm (success.sim_episodes): successful ones run on
for a few steps after the task is done, failed ones are the expert that never grasps the handle or
random actions, cut short.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from rosgraph import SIM_EXECUTOR, RosGraph, small_config, wait_until
from sensor_msgs.msg import Image
from vla_rl_interfaces.msg import EpisodeResult, EpisodeStart, SuccessSignal, TaskState
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.data import EpisodeDataset
from vla_rl_ros.ros.convert import image_to_msg, stamp_ns, to_stamp
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    RESET_EPISODE_SERVICE,
    SUCCESS_TOPIC,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE
from vla_rl_ros.sim import TASKS, make_env
from vla_rl_ros.success import backend_class
from vla_rl_ros.success.classifier import CONFIG, WEIGHTS, ClassifierError, SuccessClassifier, load_classifier
from vla_rl_ros.success.sim_episodes import record_episodes
from vla_rl_ros.success.train import frame_labels, split_episodes

TASK = "open_drawer"
SUCCESSES, FAILURES = 24, 12
AFTER_SUCCESS = 8  # steps recorded after success (an operator's reaction time at 10 Hz)
FAILURE_STEPS = 40  # an operator ends a failing episode early
POSITIVE_TAIL = 6  # < AFTER_SUCCESS + 2: only frames that show the open drawer
PERIOD_NS = 100_000_000
SCRIPTED_POLICY = Path(__file__).parent / "nodes" / "scripted_policy.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(model directory, the command's output) of `vla-rl train-classifier` on recorded sim episodes."""
    root = tmp_path_factory.mktemp("classifier")
    record_episodes(root / "episodes", TASK, SUCCESSES, FAILURES, after_success=AFTER_SUCCESS,
                    failure_steps=FAILURE_STEPS)
    # An episode the operator aborted once the drawer was open: no verdict, so no labels from it.
    ds = EpisodeDataset.open(root / "episodes")
    aborted = ds[0]
    aborted.success, aborted.reward, aborted.end_reason, aborted.seed = False, 0.0, "abort", 999
    ds.append(aborted)
    out = subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "train-classifier", "--data", str(root / "episodes"),
                          "--out", str(root / "model"), "--positive-tail", str(POSITIVE_TAIL)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return root / "model", out.stdout


def test_labelling_rule() -> None:
    # success: first half negative, middle left out, the tail positive; failure: all negative
    assert frame_labels(8, True, 2, 0.5).tolist() == [0, 0, 0, 0, -1, -1, 1, 1]
    assert frame_labels(3, True, 2, 0.5).tolist() == [0, 1, 1]
    assert frame_labels(4, False, 2, 0.5).tolist() == [0, 0, 0, 0]
    train, heldout = split_episodes([True] * 8 + [False] * 4, 0.25, seed=3)
    assert not set(train) & set(heldout) and sorted(train + heldout) == list(range(12))
    assert sum(i < 8 for i in heldout) == 2 and sum(i >= 8 for i in heldout) == 1


def test_train_classifier_reaches_its_heldout_precision_and_recall(trained: tuple[Path, str]) -> None:
    model, printed = trained
    found = re.search(r"held-out frames: precision ([0-9.]+) recall ([0-9.]+)", printed)
    assert found, printed
    assert "skipped 1 without a verdict (abort, e-stop, ...)" in printed
    precision, recall = float(found[1]), float(found[2])
    # A detector that says "success" everywhere has precision ~0.1 here, one that never does recall 0.
    assert precision >= 0.75 and recall >= 0.5, printed
    episodes = re.search(r"success found in (\d+)/(\d+) successful, (\d+)/(\d+) failed", printed)
    assert episodes and int(episodes[1]) >= int(episodes[2]) - 1 and int(episodes[3]) == 0, printed
    config = json.loads((model / CONFIG).read_text())
    assert config["heldout"]["precision"] == pytest.approx(precision, abs=1e-3)
    held = config["trained_on"]["heldout_episodes"]
    assert len(held) == round(SUCCESSES * 0.25) + round(FAILURES * 0.25)
    assert (model / WEIGHTS).read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    net, cfg = load_classifier(model)
    assert cfg.positive_tail == POSITIVE_TAIL and sum(p.numel() for p in net.parameters()) < 100_000


def test_missing_or_corrupt_model_files_are_refused_clearly(trained: tuple[Path, str], tmp_path: Path) -> None:
    model, _ = trained
    with pytest.raises(ClassifierError, match="needs the model parameter"):
        SuccessClassifier("")
    with pytest.raises(ClassifierError, match=f"no {CONFIG} in .*nowhere"):
        load_classifier(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG).write_text((model / CONFIG).read_text())
    (broken / WEIGHTS).write_bytes((model / WEIGHTS).read_bytes()[:100])  # truncated
    with pytest.raises(ClassifierError, match="not a readable safetensors file"):
        load_classifier(broken)
    (broken / WEIGHTS).write_bytes((model / WEIGHTS).read_bytes())
    (broken / CONFIG).write_text('{"format": "vla_rl_ros.success_classifier/1", "channels": [8, 8, 8]}')
    with pytest.raises(ClassifierError, match="does not match the architecture"):
        load_classifier(broken)
    (broken / CONFIG).write_text("{not json")
    with pytest.raises(ClassifierError, match="is corrupt"):
        load_classifier(broken)
    with pytest.raises(ValueError, match="unknown success detector type 'magic'"):
        backend_class("magic")


@pytest.mark.graph
def test_classifier_detects_success_from_sim_camera_images(ros_graph: RosGraph, trained: tuple[Path, str]) -> None:
    model, _ = trained
    seed = TASKS[TASK].heldout_seeds[0]  # a layout no training episode had
    with make_env(TASK, cameras=()) as env:  # the oracle's success step in the core env (the graph matches it)
        env.reset(seed)
        while not (step := env.step(env.task.expert(env))).done:
            pass
        assert step.info["episode_success"]
        oracle_step = env.steps

    bad = ros_graph.node("success_detector", "-p", "type:=classifier", "-p", f"model:={model.parent / 'nowhere'}",
                         label="bad_model")
    ros_graph.node("sim_bridge", "-p", f"task:={TASK}", "-p", "cameras:=[front]")
    ros_graph.node("executor", *SIM_EXECUTOR)
    ros_graph.node("success_detector", "-p", "type:=classifier", "-p", f"model:={model}")
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY)])
    probe = ros_graph.probe
    verdicts = probe.collect(SuccessSignal, SUCCESS_TOPIC, RELIABLE)
    states = probe.collect(TaskState, TASK_STATE_TOPIC, LATCHED)
    start_pub = probe.publisher(EpisodeStart, EPISODE_START_TOPIC, LATCHED)
    garbage = probe.publisher(Image, CAMERA_TOPICS["front"], qos_profile_sensor_data)
    assert bad.wait(timeout=60) == 2
    assert f"no {CONFIG} in" in ros_graph.log("bad_model")

    wait_until(lambda: probe.node.count_publishers(ACTION_CHUNK_TOPIC) > 0 and
               probe.node.count_subscribers(EPISODE_START_TOPIC) >= 2, 60, "the policy, executor and detector")
    probe.wait_matched(probe.subscriptions[SUCCESS_TOPIC], start_pub, timeout=60)
    reset = probe.call(ResetEpisode, RESET_EPISODE_SERVICE,
                       ResetEpisode.Request(task=TASK, seed=seed, episode_id="ep-cls"), timeout=60)
    assert reset.success
    wait_until(lambda: states and states[-1].episode_id == "ep-cls", what="the reset state")
    start = EpisodeStart(episode_id="ep-cls", task=TASK, seed=seed, max_steps=TASKS[TASK].max_steps, evaluation=True)
    start.header.stamp = reset.stamp
    start_pub.publish(start)
    wait_until(lambda: verdicts, 30, "the detector's first verdict")
    junk = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))
    junk.header.stamp.sec, junk.header.stamp.nanosec = reset.stamp.sec, reset.stamp.nanosec + 1
    garbage.publish(junk)  # dropped with a log line; the detector goes on

    found = wait_until(lambda: next((v for v in verdicts if v.success), None), 60, "the classifier's success")
    first = (stamp_ns(found.header.stamp) - stamp_ns(reset.stamp)) // PERIOD_NS
    # Held for 3 frames, it comes about when the oracle's does (success held 3 steps), never in the first half.
    assert oracle_step - 5 <= first <= oracle_step + 10, (first, oracle_step)
    early = [v for v in verdicts if (stamp_ns(v.header.stamp) - stamp_ns(reset.stamp)) // PERIOD_NS < oracle_step // 2]
    assert early and not any(v.success for v in early) and max(v.confidence for v in early) < 0.5
    assert all(v.source == "classifier" and v.episode_id == "ep-cls" for v in verdicts)
    # One verdict per camera frame: the bridge's idle re-sends of a frame are not judged again.
    stamps = [stamp_ns(v.header.stamp) for v in verdicts]
    assert len(stamps) == len(set(stamps))
    assert "dropped input: unusable image" in ros_graph.log("success_detector")


@pytest.mark.graph
def test_a_camera_faster_than_the_control_rate_is_judged_once_per_control_period(
        ros_graph: RosGraph, trained: tuple[Path, str]) -> None:
    """hold_steps counts control steps (the datasets it was trained on hold one frame per step): judging
    every frame of a 30 fps camera held a 3-step success for 0.1 s instead of 0.3 s."""
    model, _ = trained
    ros_graph.node("success_detector", "-p", "type:=classifier", "-p", f"model:={model}")  # sim_panda: 10 Hz
    probe = ros_graph.probe
    verdicts = probe.collect(SuccessSignal, SUCCESS_TOPIC, RELIABLE)
    start_pub = probe.publisher(EpisodeStart, EPISODE_START_TOPIC, LATCHED)
    camera = probe.publisher(Image, CAMERA_TOPICS["front"], qos_profile_sensor_data)
    start = EpisodeStart(episode_id="ep-30fps", task=TASK, seed=0, max_steps=100)
    start.header.stamp = to_stamp(10**9)
    wait_until(lambda: probe.node.count_subscribers(EPISODE_START_TOPIC) > 0, 60, "the detector")
    start_pub.publish(start)
    wait_until(lambda: "episode ep-30fps running" in ros_graph.log("success_detector"), 30, "the episode's start")
    frame = np.zeros((48, 64, 3), np.uint8)
    for k in range(30):  # 1 s of a 30 fps camera, by the stamps
        camera.publish(image_to_msg(frame, to_stamp(10**9 + k * 10**9 // 30)))
        time.sleep(0.02)
    wait_until(lambda: verdicts and stamp_ns(verdicts[-1].header.stamp) >= 10**9 + 27 * 10**9 // 30, 30,
               "the verdict on the last frame due (the 28th)")
    stamps = [stamp_ns(v.header.stamp) for v in verdicts]
    assert len(stamps) <= 10 and min(np.diff(stamps)) >= 3 * PERIOD_NS // 4, stamps


@pytest.mark.graph
def test_collect_launch_ends_and_records_episodes_on_the_classifiers_verdict(
        ros_graph: RosGraph, trained: tuple[Path, str], tmp_path: Path) -> None:
    """collect.launch with success:=classifier and an external policy (the scripted expert): the camera
    classifier, not the oracle, ends each episode as a success, and the recorder writes it so."""
    model, _ = trained
    dataset = tmp_path / "dataset"
    config = small_config(tmp_path, sim_bridge={"image_size": 64, "cameras": ["front"]},
                          episode_manager={"tasks": [TASK], "group_size": 2},
                          recorder={"video_pix_fmt": "yuv444p"})
    # Subscribed before the launch: the expert's episodes are over within seconds of the manager's start.
    results = ros_graph.probe.collect(EpisodeResult, f"/arm0/{EPISODE_RESULT_TOPIC}", EPISODES)
    ros_graph.launch("collect", "hardware:=sim", "policy:=external", "success:=classifier", f"success_model:={model}",
                     f"config_dir:={config}", f"dataset:={dataset}")
    ros_graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY), "--ros-args", "-r", "__ns:=/arm0"])
    wait_until(lambda: len(results) >= 2, 300, "two episodes")
    max_steps = TASKS[TASK].max_steps
    assert all((r.success, r.end_reason) == (True, EpisodeResult.END_SUCCESS) and r.steps < max_steps
               for r in results[:2]), [(r.end_reason, r.steps) for r in results]
    log = ros_graph.log("launch")
    assert "policy_node" not in log and "classifier" in log
    # The recorder may join after the first episodes (they run in well under a second each): compare
    # by episode id. Every episode it wrote carries the manager's verdict; at least two of them the
    # classifier's success.
    verdicts = lambda: {r.episode_id: (r.success, r.end_reason) for r in results}  # noqa: E731

    def recorded() -> list[tuple[str, tuple[bool, str]]]:
        if not (dataset / "meta" / "info.json").is_file():
            return []
        meta = EpisodeDataset.open(dataset).episodes_meta()
        return [(m["episode_id"], (m["success"], m["end_reason"])) for m in meta]

    wait_until(lambda: sum(label == (True, "success") for _, label in recorded()) >= 2, 120,
               "the recorder to write two successes")
    wait_until(lambda: all(i in verdicts() for i, _ in recorded()), 60, "the results of the recorded episodes")
    assert all(verdicts()[i] == label for i, label in recorded()), (recorded(), verdicts())
