"""`vla-rl tasks` and `vla-rl demos` through the project's command line, writing real datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_rl_ros.cli import main as vla_rl
from vla_rl_ros.data import EpisodeDataset
from vla_rl_ros.sim import STATE_NAMES, TASKS


def test_tasks_lists_every_task_with_limits_and_seed_splits(capsys: pytest.CaptureFixture[str]) -> None:
    assert vla_rl(["tasks"]) == 0
    text = capsys.readouterr().out
    for name, spec in TASKS.items():
        assert f"{name}: " in text and f"episode limit {spec.max_steps} " in text
    assert "held-out [1000000, 1001000)" in text
    assert vla_rl(["tasks", "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in tasks] == list(TASKS)
    assert all(t["train_seeds"][1] <= t["heldout_seeds"][0] for t in tasks)


def test_demos_writes_successful_expert_episodes(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demos"
    args = ["demos", "--tasks", "reach,lift", "--per-task", "2", "--out", str(out), "--image-size", "32"]
    assert vla_rl(args) == 0, capsys.readouterr().err
    assert "reach: wrote 2 episodes" in capsys.readouterr().out
    ds = EpisodeDataset.open(out)
    assert len(ds) == 4 and ds.fps == 10
    meta = ds.episodes_meta()
    assert [m["task"] for m in meta] == ["reach", "reach", "lift", "lift"]
    assert all(m["success"] and m["end_reason"] == "success" for m in meta)
    assert len({(m["task"], m["seed"]) for m in meta}) == 4
    episode = ds[2]
    T = episode.length
    assert episode.state.shape == (T, len(STATE_NAMES)) and episode.actions.shape == (T, 4)
    assert episode.images["front"].shape == (T, 32, 32, 3) and set(episode.images) == {"front", "wrist"}
    assert episode.seed in TASKS["lift"].train_seeds and "lift" in ds.episodes_meta()[2]["task"]
    # the expert closes the gripper at some point and moves smoothly (actions not all at the cap)
    assert episode.actions[:, 3].max() == 1.0
    norms = np.linalg.norm(episode.actions[:, :3], axis=1)
    assert np.mean(norms > 0.039) < 0.8
    # a second run appends
    assert vla_rl([*args[:2], "reach", *args[3:], "--first-seed", "100"]) == 0
    assert len(EpisodeDataset.open(out)) == 6


def test_demos_can_show_each_scene_once_per_object_named(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demos"
    args = ["demos", "--tasks", "reach", "--per-task", "6", "--out", str(out), "--image-size", "32",
            "--cameras", "wrist", "--name-each-object"]
    assert vla_rl(args) == 0, capsys.readouterr().err
    ds = EpisodeDataset.open(out)
    meta = ds.episodes_meta()
    assert len(meta) == 6 and [m["seed"] for m in meta] == [0, 0, 0, 1, 1, 1]  # 2 scenes x 3 objects
    for first in (0, 3):
        episodes = [ds[first + k] for k in range(3)]
        assert len({e.instruction for e in episodes}) == 3  # each names another object
        first_frames = np.stack([e.images["wrist"][0] for e in episodes]).astype(int)
        assert np.abs(first_frames - first_frames[0]).mean() < 2  # one scene (after video coding)
        ends = [e.state[-1, 7:9] for e in episodes]  # the TCP ends above a different object each time
        assert min(np.linalg.norm(a - b) for i, a in enumerate(ends) for b in ends[i + 1:]) > 0.05


def test_demos_rejects_an_unknown_task(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vla_rl(["demos", "--tasks", "fly", "--per-task", "1", "--out", str(tmp_path / "d")]) == 1
    assert "unknown task 'fly'" in capsys.readouterr().err


def test_dart_noise_moves_the_arm_off_course_but_labels_stay_the_experts() -> None:
    """DART demonstrations: executed moves are perturbed, so states leave the clean path, and every
    frame's label is what the expert says at that perturbed state; the same seed repeats exactly."""
    from vla_rl_ros.sim import make_env
    from vla_rl_ros.sim.demos import DART_STREAM, expert_episode

    with make_env("reach", image_size=32, cameras=("front",)) as env:
        clean = expert_episode(env, 3)
        noisy = expert_episode(env, 3, noise=0.01)
        np.testing.assert_array_equal(noisy.state, expert_episode(env, 3, noise=0.01).state)
        assert noisy.success and clean.success
        tcp = [STATE_NAMES.index(n) for n in ("ee_x", "ee_y", "ee_z")]
        steps = min(clean.length, noisy.length)
        assert np.abs(noisy.state[1:steps][:, tcp] - clean.state[1:steps][:, tcp]).max() > 0.005
        # reference loop: at every recorded state the label is the expert's clean action there
        rng = np.random.default_rng([3, DART_STREAM])
        obs = env.reset(3)
        for t in range(noisy.length):
            np.testing.assert_allclose(obs.state, noisy.state[t], atol=1e-6, err_msg=f"frame {t}")
            label = env.task.expert(env)
            np.testing.assert_allclose(noisy.actions[t], label, atol=1e-6, err_msg=f"frame {t}")
            obs = env.step(label + np.array([*rng.normal(0.0, 0.01, 3), 0.0], np.float32)).observation
