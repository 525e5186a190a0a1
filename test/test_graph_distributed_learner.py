"""The learner node as 2 CPU ranks under torchrun, the model replicated or sharded (fsdp): rank 0 takes
a group from the graph, both ranks compute the update, rank 0 publishes it, and the whole run ends
cleanly after max_updates."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.time import Time
from rosgraph import RosGraph, small_config, wait_until
from vla_rl_interfaces.msg import EpisodeResult, PolicyUpdate, Trajectory

from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.rl import read_metrics
from vla_rl_ros.ros.convert import image_to_msg
from vla_rl_ros.ros.names import EPISODE_RESULT_TOPIC, POLICY_UPDATE_TOPIC, TRAJECTORY_TOPIC
from vla_rl_ros.ros.qos import EPISODES, LATCHED
from vla_rl_ros.sim import STATE_NAMES

pytestmark = pytest.mark.graph

NS = "/arm0"
GROUP = 3  # rollouts: 2 on rank 0, 1 on rank 1
CHUNKS = 2


def sampled_group(checkpoint: Path) -> list[tuple[Trajectory, EpisodeResult]]:
    """One group of rollouts the tiny policy sampled from one observation; the first succeeds."""
    policy = VLAPolicy.load(checkpoint)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (CHUNKS, 32, 32, 3), dtype=np.uint8)
    state = rng.normal(size=(CHUNKS, len(STATE_NAMES))).astype(np.float32)
    out = []
    for i in range(GROUP):
        act = policy.act(images, state, ["go to the red cube"] * CHUNKS, greedy=False, temperature=1.0)
        eid = f"g/{i}"
        out.append((
            Trajectory(episode_id=eid, arm=NS, instruction="go to the red cube", temperature=1.0,
                       chunk_size=policy.chunk_size, action_dim=policy.action_dim,
                       images=[image_to_msg(image, Time().to_msg()) for image in images],
                       proprio_dim=len(STATE_NAMES), proprio=state.ravel().tolist(),
                       token_ids=act.token_ids.ravel().tolist(), log_probs=act.log_probs.tolist(),
                       steps=[c * policy.chunk_size for c in range(CHUNKS)]),
            EpisodeResult(episode_id=eid, arm=NS, group_id="g", group_size=GROUP, task="reach", success=i == 0,
                          reward=float(i == 0), steps=CHUNKS * policy.chunk_size,
                          end_reason="success" if i == 0 else "timeout")))
    return out


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "sharded"])
def test_the_learner_node_runs_as_two_ranks_under_torchrun(
        ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path, fsdp: bool) -> None:
    config = small_config(tmp_path, learner={"groups_per_update": 1, "minibatch_size": 2, "epochs": 1,
                                             "max_updates": 1})
    run_dir = tmp_path / "run"
    torchrun = ros_graph.start("learner", [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(Path(sys.executable).parent / "learner"), "--ros-args", "--params-file", str(config / "learner.yaml"),
        "-p", f"run_dir:={run_dir}", "-p", f"checkpoint:={tiny_checkpoint}", "-p", "arms:=[arm0]",
        "-p", f"fsdp:={str(fsdp).lower()}"])
    probe = ros_graph.probe
    updates = probe.collect(PolicyUpdate, POLICY_UPDATE_TOPIC, LATCHED)
    trajectories = probe.publisher(Trajectory, f"{NS}/{TRAJECTORY_TOPIC}", EPISODES)
    results = probe.publisher(EpisodeResult, f"{NS}/{EPISODE_RESULT_TOPIC}", EPISODES)
    group = sampled_group(tiny_checkpoint)
    wait_until(lambda: "mini-batches of 2 on 2 ranks" in ros_graph.log("learner"), 120, "both ranks")
    probe.wait_matched(trajectories, results, timeout=60)
    for trajectory, result in group:
        trajectories.publish(trajectory)
        results.publish(result)

    update = wait_until(lambda: next(iter(updates), None), 60, "the update")
    assert update.version == 1 and Path(update.checkpoint_dir).is_dir()
    # what the policy nodes load: whole weights, moved by the update (sharded: gathered from both ranks)
    trained, start = VLAPolicy.load(update.checkpoint_dir), VLAPolicy.load(tiny_checkpoint)
    moved = [not torch.equal(a, b) for a, b in zip(trained.model.parameters(), start.model.parameters(), strict=True)]
    assert all(moved)
    assert torchrun.wait(timeout=60) == 0  # rank 0 finished, rank 1 ended on its stop signal
    rows = read_metrics(run_dir / "metrics.csv")
    assert len(rows) == 1 and float(rows[0]["grpo/trajectories"]) == GROUP
    assert float(rows[0]["grpo/optimizer_steps"]) == 2  # mini-batches of 2 and 1, one rank idle in the last


def test_fsdp_without_torchrun_is_refused(ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path) -> None:
    proc = ros_graph.node("learner", "-p", "fsdp:=true", "-p", f"run_dir:={tmp_path / 'run'}",
                          "-p", f"checkpoint:={tiny_checkpoint}")
    assert proc.wait(timeout=60) == 2
    assert "run the learner under torchrun" in ros_graph.log("learner")
