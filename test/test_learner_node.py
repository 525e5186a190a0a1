"""The learner node's worker in this process (real rclpy node, real tiny model, real run directory): it
trains on the groups that are ready while messages keep arriving faster than it takes them in, and a
stop between updates checkpoints what the last checkpoint does not cover."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import rclpy
from rosgraph import TINY_CHUNK, RosGraph, wait_until
from vla_rl_interfaces.msg import EpisodeResult, Trajectory

from vla_rl_ros.nodes.learner import Learner
from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.rl.learner import latest_checkpoint
from vla_rl_ros.ros.convert import image_to_msg, to_stamp
from vla_rl_ros.sim.env import STATE_NAMES

BACKLOG = 100_000  # messages the flood keeps queued: more than the worker takes in between two refills


def group(policy: VLAPolicy) -> list[Trajectory | EpisodeResult]:
    """One training group of two one-chunk episodes, one success and one failure (so it is kept)."""
    rng = np.random.default_rng(0)
    msgs: list[Trajectory | EpisodeResult] = []
    for i, success in enumerate((True, False)):
        eid = f"e{i}"
        tokens = rng.integers(policy.action_token_offset, policy.vocab_size, TINY_CHUNK * 4)
        msgs.append(Trajectory(
            episode_id=eid, arm="/arm0", instruction="reach the red cube", policy_version=0, temperature=1.0,
            chunk_size=TINY_CHUNK, action_dim=4, images=[image_to_msg(np.zeros((32, 32, 3), np.uint8), to_stamp(0))],
            proprio_dim=len(STATE_NAMES), proprio=[0.0] * len(STATE_NAMES), token_ids=tokens.tolist(),
            log_probs=[-10.0], steps=[0]))
        msgs.append(EpisodeResult(
            episode_id=eid, arm="/arm0", group_id="g0", group_size=2, task="reach", seed=0,
            instruction="reach the red cube", success=success, reward=float(success), steps=4, policy_version=0,
            end_reason="success" if success else "timeout"))
    return msgs


def learner(tiny_checkpoint: Path, tmp_path: Path) -> Learner:
    """A learner node of this process (checkpoint_every 5) that updates on every kept group."""
    graph = RosGraph(tmp_path)  # for its random domain id and localhost discovery only
    rclpy.init(args=["--ros-args", "-p", f"run_dir:={tmp_path / 'run'}", "-p", f"checkpoint:={tiny_checkpoint}",
                     "-p", "groups_per_update:=1", "-p", "minibatch_size:=2", "-p", "epochs:=1"],
               domain_id=graph.domain_id)
    return Learner()


def test_a_learner_stopped_between_updates_checkpoints_them(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Ctrl-C lost the updates since the last checkpoint (every 5): the resumed run did them again."""
    node = learner(tiny_checkpoint, tmp_path)
    try:
        for msg in group(node.core.policy):
            node.inbox.put(msg)
        wait_until(lambda: node.core.updates >= 1, 120, "the update")
        assert latest_checkpoint(tmp_path / "run") is None
        node.close()  # what run_node does on SIGINT
        assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "update_000001"
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def test_the_learner_updates_while_messages_keep_arriving(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # Before: the worker moved messages into the buffer until the inbox was empty, so a steady stream of
    # episodes (many arms, a loaded machine) kept it from ever running the update its ready groups allowed.
    node = learner(tiny_checkpoint, tmp_path)
    stop = threading.Event()
    try:
        garbage = Trajectory(episode_id="garbage")  # dropped as malformed, once logged, then counted

        def flood() -> None:
            while not stop.is_set():
                if node.inbox.qsize() < BACKLOG:
                    node.inbox.put(garbage)
                else:
                    stop.wait(0.001)

        threading.Thread(target=flood, daemon=True).start()
        wait_until(lambda: node.drops.counts["malformed Trajectory"] > BACKLOG, 60, "the flood taken in")
        for msg in group(node.core.policy):  # a ready group, amid the stream
            node.inbox.put(msg)
        wait_until(lambda: node.core.updates >= 1, 120, "an update while the inbox is never empty")
        dropped = node.drops.counts["malformed Trajectory"]
        wait_until(lambda: node.drops.counts["malformed Trajectory"] > dropped + BACKLOG, 60, "the flood after it")
        assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 2  # header and the update's row
    finally:
        stop.set()
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
