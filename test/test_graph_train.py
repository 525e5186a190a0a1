"""train_sim end to end: the whole graph for a few updates, and a learner killed and restarted mid-run."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
from rosgraph import RosGraph, small_config, wait_until

pytestmark = pytest.mark.graph
RUN_TIMEOUT_S = 600


def train_config(tmp: Path, **learner: object) -> Path:
    """config/ for a small run (launched with tasks:=[reach]): groups of 2, one per update, 32 px front camera."""
    return small_config(tmp, episode_manager={"group_size": 2, "lost_node_timeout_s": 120.0},
                        learner={"group_size": 2, "groups_per_update": 1, "minibatch_size": 2, "epochs": 1,
                                 "dynamic_sampling": False, "checkpoint_every": 1, **learner})


def metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


def test_train_sim_runs_updates_and_the_policy_reloads(ros_graph: RosGraph, tiny_checkpoint: Path,
                                                       tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = ros_graph.launch("train_sim", "num_arms:=1", "tasks:=[reach]", "max_updates:=2", f"run_dir:={run_dir}",
                            # Strictly on-policy: update 2 needs episodes of v1, so the policy must reload
                            # (with lag 1 a fast graph can do both updates on v0 episodes).
                            f"checkpoint:={tiny_checkpoint}", f"config_dir:={train_config(tmp_path, max_policy_lag=0)}",
                            "eval_seeds_per_task:=1", "eval_every_versions:=1")
    assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, ros_graph.log("launch")[-5000:]
    log = ros_graph.log("launch")
    rows = metrics(run_dir)
    assert [int(float(r["update"])) for r in rows] == [1, 2], rows
    assert all(float(r["grpo/trajectories"]) == 2 for r in rows)
    assert "now serving policy v1" in log and "update 2/2" in log
    assert "required process learner-1 finished" in log
    assert (run_dir / "success.png").stat().st_size > 0
    assert sorted(p.name for p in (run_dir / "policies").iterdir()) == ["v000001", "v000002"]
    # Evaluation episodes (held-out, greedy) ran and were counted, never trained on.
    final = json.loads((run_dir / "checkpoints/update_000002/learner.json").read_text())
    assert final["buffer"]["evaluation"] >= 1 and final["trajectories_trained"] == 4


def test_learner_killed_mid_run_resumes_without_losing_episodes(ros_graph: RosGraph, tiny_checkpoint: Path,
                                                                tmp_path: Path) -> None:
    run_dir, config = tmp_path / "run", train_config(tmp_path)
    ros_graph.launch("train_sim", "num_arms:=1", "tasks:=[reach]", "learner:=false", f"checkpoint:={tiny_checkpoint}",
                     f"config_dir:={config}", "eval_seeds_per_task:=0")
    args = ("--params-file", str(config / "learner.yaml"), "-p", f"run_dir:={run_dir}",
            "-p", f"checkpoint:={tiny_checkpoint}", "-p", "arms:=[arm0]")
    first = ros_graph.node("learner", *args, label="learner-first")
    wait_until(lambda: len(metrics(run_dir)) >= 1 and (run_dir / "checkpoints/latest").exists(),
               RUN_TIMEOUT_S, "the first update and its checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    before = json.loads((run_dir / "checkpoints/update_000001/learner.json").read_text())
    second = ros_graph.node("learner", *args, "-p", "max_updates:=3", label="learner-second")
    assert second.wait(timeout=RUN_TIMEOUT_S) == 0, ros_graph.log("learner-second")[-4000:]
    log = ros_graph.log("learner-second")
    assert "resumed from" in log and "update_000001" in log
    updates = [int(float(r["update"])) for r in metrics(run_dir)]
    assert updates[-1] == 3 and before["updates"] == 1
    after = json.loads((run_dir / "checkpoints/update_000003/learner.json").read_text())
    assert after["trajectories_trained"] == before["trajectories_trained"] + 4
    acc = after["buffer"]
    buckets = ("evaluation", "aborted", "stale", "incomplete", "filtered_all_same", "used", "pending")
    assert acc["results"] == sum(acc[b] for b in buckets)  # every episode accounted for
