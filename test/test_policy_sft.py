"""`vla-rl sft` and `vla-rl eval` end to end on real sim demonstrations (tiny settings)."""

import json
import math

import numpy as np
import pytest
import torch

from vla_rl_ros.cli import main as vla_rl
from vla_rl_ros.data import EpisodeDataset
from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.policy.sft import LOG_FILE, SFTConfig, draw_batch, load_samples, soft_labels
from vla_rl_ros.sim.demos import write_demos

CHUNK = 4


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
