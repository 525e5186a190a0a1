"""train_real end to end on the MuJoCo bridge (hardware:=sim): the namespaced policy node's sampled
episodes reach the learner, which updates once and ends the run; the recorder keeps every episode."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from rosgraph import RosGraph, small_config

from vla_rl_ros.data import EpisodeDataset

pytestmark = pytest.mark.graph
RUN_TIMEOUT_S = 420


def test_train_real_in_sim_updates_once_from_recorded_sampled_episodes(ros_graph: RosGraph, tiny_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    run_dir, dataset = tmp_path / "run", tmp_path / "dataset"
    config = small_config(
        tmp_path, episode_manager={"tasks": ["reach"], "group_size": 2, "lost_node_timeout_s": 120.0},
        learner={"groups_per_update": 1, "minibatch_size": 2, "epochs": 1,
                 "dynamic_sampling": False, "checkpoint_every": 1},
        recorder={"video_pix_fmt": "yuv444p"})
    proc = ros_graph.launch("train_real", "hardware:=sim", "max_updates:=1", f"run_dir:={run_dir}",
                            f"checkpoint:={tiny_checkpoint}", f"config_dir:={config}", f"dataset:={dataset}")
    assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, ros_graph.log("launch")[-5000:]
    log = ros_graph.log("launch")
    assert "required process learner-1 finished" in log
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(float(r["update"])) for r in rows] == [1] and float(rows[0]["grpo/trajectories"]) == 2
    assert sorted(p.name for p in (run_dir / "policies").iterdir()) == ["v000001"]
    # Every episode the learner trained on was recorded, from the sim render, labelled by the manager.
    episodes = list(EpisodeDataset.open(dataset))
    assert len(episodes) >= 2 and {e.task for e in episodes} == {"reach"}
    assert all(e.end_reason in ("timeout", "success") and not e.evaluation for e in episodes)
    assert episodes[0].images["front"].shape[1:] == (32, 32, 3)
