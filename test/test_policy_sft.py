"""`vla-rl sft` and `vla-rl eval` end to end on real sim demonstrations (tiny settings). What sft cannot
train or evaluate (real-arm tasks, another state or action space, a checkpoint of another camera, an
empty training split) is refused before training with a line that says what to do; an evaluation that
fails all the same costs the evaluations, never the trained weights."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rl_ros.cli import main as vla_rl
from vla_rl_ros.data import EpisodeDataset
from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.policy.sft import LOG_FILE, SFTConfig, draw_batch, load_samples, soft_labels
from vla_rl_ros.sim import action_names
from vla_rl_ros.sim.demos import write_demos

CHUNK = 4
# A few steps of a very small model: what these tests check happens before training, or after it.
TINY = ["--steps", "2", "--batch-size", "8", "--hidden-size", "16", "--layers", "1", "--val-fraction", "0",
        "--eval-episodes", "1", "--threads", "2"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "reach"
    write_demos(root, ["reach"], 3, cameras=("front",), progress=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "ckpt"
    code = vla_rl(["sft", "--data", str(demos), "--out", str(out), "--steps", "30", "--batch-size", "16",
                   "--hidden-size", "32", "--layers", "1", "--val-fraction", "0.34", "--val-every", "10",
                   "--eval-episodes", "2", "--eval-every", "15", "--keep-evaluated", str(out.parent / "kept"),
                   "--chunk-size", str(CHUNK), "--threads", "2"])
    assert code == 0
    return out


def test_samples_take_consecutive_actions_and_mask_past_the_episode_end(demos):
    samples = load_samples([str(demos)], "front", CHUNK)
    episode = EpisodeDataset.open(demos)[0]
    T = episode.length
    first = np.flatnonzero(samples.episode == 0)
    assert len(first) == T
    np.testing.assert_array_equal(samples.chunks[first[0]], episode.actions[:CHUNK])
    np.testing.assert_array_equal(samples.images[first[-1]], episode.images["front"][-1])
    assert samples.valid[first[-1]].tolist() == [True, False, False, False]  # last frame: one real action
    assert samples.valid[first[-CHUNK]].all()
    np.testing.assert_array_equal(samples.chunks[first[-1], 1:], 0.0)
    assert samples.frame[first].tolist() == list(range(T))
    assert samples.frame[np.flatnonzero(samples.episode == 1)][0] == 0


def test_batches_draw_the_early_frames_at_the_configured_share(demos):
    samples = load_samples([str(demos)], "front", CHUNK)
    everything = np.arange(len(samples.frame))
    early = everything[samples.frame < 3]
    assert len(early) / len(everything) < 0.25  # rare when drawn uniformly
    rng = np.random.default_rng(0)
    drawn = np.concatenate([draw_batch(everything, early, 64, 32, rng) for _ in range(20)])
    assert len(drawn) == 20 * 64 and np.mean(samples.frame[drawn] < 3) >= 0.5
    for bad in ({"early_fraction": 1.5}, {"early_frames": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SFTConfig(data=[str(demos)], **bad)


def test_sft_writes_a_loadable_checkpoint_with_a_log_of_falling_loss(checkpoint):
    lines = [json.loads(line) for line in (checkpoint / LOG_FILE).read_text().splitlines()]
    assert lines[0]["config"]["steps"] == 30 and lines[0]["tasks"] == ["reach"]
    records = lines[1:]
    assert [r["step"] for r in records if "loss/val" in r] == [10, 20, 30]
    assert records[-1]["loss/val"] < np.log(256)  # below the uniform guess it started from
    assert 0.0 <= records[-1]["eval/success_rate"] <= 1.0 and "eval/reach" in records[-1]
    policy = VLAPolicy.load(checkpoint)
    assert (policy.chunk_size, policy.action_dim, policy.camera) == (CHUNK, 4, "front")
    kept = checkpoint.parent / "kept"  # --keep-evaluated: every evaluated checkpoint; --out holds the best of them
    assert sorted(p.name for p in kept.iterdir()) == ["step_15", "step_30"]
    best = policy.model.state_dict()
    assert any(all(torch.equal(best[k], v) for k, v in VLAPolicy.load(kept / name).model.state_dict().items())
               for name in ("step_15", "step_30"))


def test_eval_reports_per_task_success_with_a_wilson_interval(checkpoint, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert vla_rl(["eval", "--checkpoint", str(checkpoint), "--tasks", "reach", "--episodes", "2",
                   "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    reach = report["tasks"]["reach"]
    assert reach["episodes"] == 2 and len(reach["episodes_detail"]) == 2
    assert [e["seed"] for e in reach["episodes_detail"]] == [1_000_000, 1_000_001]  # held-out seeds
    low, high = reach["ci95"]
    assert 0.0 <= low <= reach["success_rate"] <= high <= 1.0 and high - low > 0.3  # n=2 is wide
    assert "reach" in capsys.readouterr().out


def test_bad_data_gives_errors_that_say_what_to_do(tmp_path, demos):
    empty = EpisodeDataset.create_like(tmp_path / "empty", EpisodeDataset.open(demos))
    with pytest.raises(ValueError, match=r"no successful episodes.*vla-rl demos"):
        load_samples([str(empty.root)], "front", CHUNK)
    with pytest.raises(ValueError, match="not 'wrist'; pass --camera"):
        load_samples([str(demos)], "wrist", CHUNK)


def test_soft_labels_are_the_gaussian_mass_per_bin_renormalised():
    """HL-Gauss: bin b gets the Gaussian's mass over [b, b + 1), cut at the ends and renormalised."""
    positions = torch.tensor([[2.5, 0.2], [255.9, 100.0]])
    labels = soft_labels(positions, 1.5, 256).numpy()
    assert labels.shape == (2, 2, 256)
    np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-6)
    edges = np.arange(257)
    for position, row in zip(positions.flatten().tolist(), labels.reshape(4, 256), strict=True):
        mass = np.diff([0.5 * (1 + math.erf((e - position) / (1.5 * math.sqrt(2)))) for e in edges])
        np.testing.assert_allclose(row, mass / mass.sum(), atol=1e-6)
    assert labels[0, 0].argmax() == 2 and labels[0, 0, 1] == pytest.approx(labels[0, 0, 3], abs=1e-6)
    assert labels[1, 0].argmax() == 255  # an end bin keeps all that falls off the edge
    np.testing.assert_allclose(soft_labels(torch.tensor([7.5]), 0.05, 256)[0].numpy(), np.eye(256)[7], atol=1e-6)


def test_recorded_rollouts_hold_what_the_policy_saw_and_sampled(checkpoint):
    """run_episodes(record=True) gives what the policy node would publish as a Trajectory: one row
    per chunk, sampled tokens whose recomputed log-probs match the behaviour log-probs."""
    from vla_rl_ros.policy.evaluate import run_episodes

    policy = VLAPolicy.load(checkpoint)
    generator = torch.Generator().manual_seed(0)
    results = run_episodes(policy, "reach", [1, 1], greedy=False, temperature=1.6, generator=generator, record=True)
    for result in results:
        t = result["trajectory"]
        N = len(t["steps"])
        assert -(-result["steps"] // CHUNK) == N  # ceil: the last chunk may be cut by the episode's end
        np.testing.assert_array_equal(t["steps"], np.arange(N) * CHUNK)
        assert t["images"].shape == (N, 64, 64, 3) and t["state"].shape == (N, 11)
        assert t["token_ids"].shape == (N, CHUNK * 4)
        recomputed = policy.token_log_probs(t["images"], t["state"], [policy_instruction("reach", 1)] * N,
                                            t["token_ids"], temperature=1.6).sum(-1)
        np.testing.assert_allclose(recomputed.detach().numpy(), t["log_probs"], rtol=1e-4, atol=1e-4)
    assert not np.array_equal(results[0]["trajectory"]["token_ids"], results[1]["trajectory"]["token_ids"])
    # As the learner's records (`vla-rl grpo-local`, benchmarks): a buffer joins them into one group.
    from vla_rl_ros.rl import GRPOConfig
    from vla_rl_ros.rl.buffer import EpisodeBuffer
    from vla_rl_ros.rl.records import rollout_records

    buffer = EpisodeBuffer(GRPOConfig(groups_per_update=1, minibatch_size=2, dynamic_sampling=False))
    for k, result in enumerate(results):
        trajectory, outcome = rollout_records(result, episode_id=f"e{k}", group_id="g", group_size=len(results),
                                              task="reach", seed=1, instruction=policy_instruction("reach", 1),
                                              policy_version=0, temperature=1.6)
        assert (outcome.success, outcome.end_reason, outcome.steps) == (result["success"], result["end_reason"],
                                                                         result["steps"])
        buffer.add_trajectory(trajectory)
        buffer.add_result(outcome)
    (group,) = buffer.pop_batch(1)
    assert [e.trajectory.num_chunks for e in group.episodes] == [len(r["trajectory"]["steps"]) for r in results]


def test_episodes_can_name_another_object_and_be_watched_step_by_step(checkpoint):
    """`named` runs a seed's scene with a distractor named (what scripts/grounding_probe.py asks);
    `on_step` sees every sim step of every episode, with the episode's index."""
    from vla_rl_ros.policy.evaluate import run_episodes
    from vla_rl_ros.sim import get_task

    policy = VLAPolicy.load(checkpoint)
    seen: dict[int, list] = {0: [], 1: []}
    results = run_episodes(policy, "reach", [3, 3], named=[0, 1],
                           on_step=lambda i, env: seen[i].append((env.steps, env.layout.instruction)))
    for i, result in enumerate(results):
        assert [n for n, _ in seen[i]] == list(range(1, result["steps"] + 1))
        assert {text for _, text in seen[i]} == {get_task("reach").sample(3, named=i).instruction}
    assert seen[0][0][1] != seen[1][0][1]
    with pytest.raises(ValueError, match="one per seed"):
        run_episodes(policy, "reach", [3, 3], named=[1])


def policy_instruction(task: str, seed: int) -> str:
    from vla_rl_ros.sim import get_task

    return get_task(task).sample(seed).instruction


def variant(root: Path, demos: Path, *, episodes: int = 3, task: str = "", state_dims: int = 0, action_dim: int = 0,
            wrist: bool = False) -> str:
    """The demonstrations as another robot or set-up would have recorded them: a real-arm task name, fewer
    state dims, 7-dim actions (zero rotation), or a wrist camera (the front view mirrored) beside the front."""
    source = EpisodeDataset.open(demos)
    state_names = source.features["observation.state"]["names"][: state_dims or None]
    actions = list(action_names("ee_delta", action_dim)) if action_dim else source.features["action"]["names"]
    cameras = source.cameras | ({"wrist": source.cameras["front"]} if wrist else {})
    out = EpisodeDataset.create(root, fps=source.fps, cameras=cameras, state_names=state_names, action_names=actions)
    for episode in list(source)[:episodes]:
        A = episode.actions.shape[1]
        out.append(dataclasses.replace(
            episode, task=task or episode.task, state=episode.state[:, : len(state_names)],
            actions=np.insert(episode.actions, [A - 1] * (len(actions) - A), 0.0, axis=1),  # gripper stays last
            images=episode.images | ({"wrist": episode.images["front"][:, :, ::-1].copy()} if wrist else {})))
    return str(root)


def test_sft_refuses_before_training_what_the_sim_could_not_evaluate(tmp_path, demos, capsys):
    """Real-arm data names its own tasks, and another arm's state has other dims: the sim evaluation at
    the first --eval-every (or the end) could not run. It crashed there, after training, writing nothing."""
    real = variant(tmp_path / "real", demos, task="pick_mug")
    assert vla_rl(["sft", "--data", real, "--out", str(tmp_path / "a"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot evaluate in the sim: ['pick_mug'] are not sim tasks" in err and "--eval-tasks none" in err
    assert not (tmp_path / "a").exists()
    assert vla_rl(["sft", "--data", real, "--out", str(tmp_path / "b"), *TINY, "--eval-tasks", "none"]) == 0
    assert VLAPolicy.load(tmp_path / "b").action_dim == 4
    arm = variant(tmp_path / "arm", demos, state_dims=9)
    assert vla_rl(["sft", "--data", arm, "--out", str(tmp_path / "c"), *TINY]) == 2
    assert "the policy takes 9-dim state, the sim's is 11-dim" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_no_opengl_context_for_the_sim_is_refused_before_training(tmp_path, demos):
    """GLFW without a display: MuJoCo cannot render, found out before training instead of at its end."""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"} | {"MUJOCO_GL": "glfw"}
    run = subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "sft", "--data", str(demos), "--out",
                          str(tmp_path / "out"), *TINY], check=False, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2, run.stderr
    assert "cannot evaluate in the sim: no OpenGL context for rendering" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


def test_an_evaluation_failing_mid_run_costs_the_evaluations_not_the_training(tmp_path, demos, monkeypatch, capsys):
    """The renderer lost mid-run (an EGL device gone), stood in for by evaluate raising what make_renderer
    raises: training goes on, --out gets the last weights, the log and the exit status say what failed."""
    from vla_rl_ros.policy import evaluate

    def lost_renderer(*_args, **_kwargs):
        raise RuntimeError("no OpenGL context for rendering")

    monkeypatch.setattr(evaluate, "evaluate", lost_renderer)
    out = tmp_path / "out"
    assert vla_rl(["sft", "--data", str(demos), "--out", str(out), *TINY, "--steps", "4", "--eval-every", "2"]) == 1
    assert "the sim evaluation at step 2 failed: RuntimeError('no OpenGL context" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()][1:]
    assert [(r["step"], "eval/error" in r) for r in records] == [(2, True), (4, False)]
    assert VLAPolicy.load(out).action_dim == 4


def test_init_keeps_its_checkpoints_camera_and_refuses_data_it_does_not_fit(tmp_path, demos, capsys):
    """A wrist checkpoint fine-tuned without --camera trains on wrist images (it was front's, silently); an
    explicit other camera, another state size or another action size is refused before training."""
    both = variant(tmp_path / "both", demos, wrist=True)
    wrist = tmp_path / "wrist"
    assert vla_rl(["sft", "--data", both, "--camera", "wrist", "--out", str(wrist), *TINY]) == 0
    again = tmp_path / "again"
    assert vla_rl(["sft", "--data", both, "--init", str(wrist), "--out", str(again), *TINY]) == 0
    assert json.loads((again / LOG_FILE).read_text().splitlines()[0])["camera"] == "wrist"
    assert VLAPolicy.load(again).camera == "wrist"
    capsys.readouterr()
    assert vla_rl(["sft", "--data", both, "--init", str(wrist), "--camera", "front", "--out",
                   str(tmp_path / "front"), *TINY]) == 2
    assert "sees camera 'wrist', not 'front'; leave --camera out" in capsys.readouterr().err
    for changed, message in (({"state_dims": 9}, "takes 11-dim state; the data's is 9-dim"),
                             ({"action_dim": 7}, "acts with 4-dim actions")):
        data = variant(tmp_path / next(iter(changed)), demos, wrist=True, **changed)
        assert vla_rl(["sft", "--data", data, "--init", str(wrist), "--out", str(tmp_path / "x"), *TINY,
                       "--eval-tasks", "none"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "front").exists() and not (tmp_path / "x").exists()


def test_an_empty_training_split_and_datasets_that_differ_are_refused_by_name(tmp_path, demos, capsys):
    two = variant(tmp_path / "two", demos, episodes=2)
    assert vla_rl(["sft", "--data", two, "--out", str(tmp_path / "out"), *TINY, "--val-fraction", "0.75"]) == 2
    assert "holds back 2 of the 2 successful episodes for validation: the training split is empty" in \
        capsys.readouterr().err
    seven = variant(tmp_path / "seven", demos, action_dim=7)
    with pytest.raises(ValueError, match=f"datasets {demos} and {seven} differ in actions"):
        load_samples([str(demos), seven], "front", CHUNK)
    assert vla_rl(["sft", "--data", str(demos), seven, "--out", str(tmp_path / "out"), *TINY]) == 2
    assert "differ in actions: ['dx', 'dy', 'dz', 'gripper'] and ['dx'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
