"""GRPOLearner with a small real torch policy that meets the learner's contract."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vla_rl_ros.digest import checkpoint_digest
from vla_rl_ros.rl import (
    EpisodeBuffer,
    GRPOConfig,
    GRPOLearner,
    ResultRecord,
    TrajectoryRecord,
    clipped_policy_loss,
    group_advantages,
    latest_checkpoint,
    read_metrics,
)
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE

P, TOKENS, VOCAB = 3, 6, 16  # state dim, tokens per chunk (C*A), action tokens
SEQUENCE = 10  # positions a chunk takes in a forward pass, as the policy reports them
GROUPS = 20  # rollout groups in the bandit test
G = 4  # rollouts per group, as an episode manager would schedule (carried by each result)


class StatePolicy(torch.nn.Module):
    """Logits over VOCAB tokens for each of TOKENS positions from a tiny MLP over state (images unused)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(P, 32), torch.nn.Tanh(), torch.nn.Linear(32, TOKENS * VOCAB))
        self.forward_sizes = []  # chunks per forward pass, to check batching

    def token_log_probs(self, images, state, instructions, token_ids, *, temperature):
        assert images.shape[0] == state.shape[0] == len(instructions) == token_ids.shape[0]
        self.forward_sizes.append(images.shape[0])
        logits = self.net(torch.as_tensor(state)).reshape(-1, TOKENS, VOCAB) / temperature
        return torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(token_ids)[..., None])[..., 0]

    def trainable_parameters(self):
        return list(self.parameters())

    def sequence_length(self, instruction):
        return SEQUENCE

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(path) / "model.safetensors"))


def episode(eid, gid, success, *, n=3, version=0, rng, temperature=ROLLOUT_TEMPERATURE, size=G):
    """Successful rollouts sample low tokens, failed ones high tokens, from the same states."""
    low, high = (0, VOCAB // 2) if success else (VOCAB // 2, VOCAB)
    t = TrajectoryRecord(episode_id=eid, arm="/arm0", instruction="reach", policy_version=version,
                         temperature=temperature, images=np.zeros((n, 2, 2, 3), np.uint8),
                         state=np.tile(np.linspace(-1, 1, P), (n, 1)) + 0.01 * rng.normal(size=(n, P)),
                         token_ids=rng.integers(low, high, (n, TOKENS)), log_probs=np.zeros(n),
                         steps=np.arange(n))
    r = ResultRecord(episode_id=eid, arm="/arm0", group_id=gid, task="reach", seed=1, success=success,
                     reward=float(success), steps=n, policy_version=version, evaluation=False,
                     end_reason="success" if success else "timeout", group_size=size)
    return t, r


def fill(buffer, n_groups, *, seed=0, start=0, version=0):
    rng = np.random.default_rng(seed)
    for g in range(start, start + n_groups):
        successes = [i < 1 + g % (G - 1) for i in range(G)]  # mixed groups
        for i, s in enumerate(successes):
            t, r = episode(f"g{g}/{i}", f"g{g}", s, n=2 + (i % 3), version=version, rng=rng)
            buffer.add_trajectory(t)
            buffer.add_result(r)


CFG = GRPOConfig(groups_per_update=2, epochs=2, minibatch_size=4, lr=3e-3, forward_tokens=64 * SEQUENCE)


PAD = 1e9  # marks padding in token_logp


def token_rows(policy, groups):
    """Each trajectory's token log-probs (T_b,) under the policy now, in batch order."""
    with torch.no_grad():
        return [policy.token_log_probs(t.images, t.state, [t.instruction] * t.num_chunks,
                                       torch.from_numpy(t.token_ids), temperature=t.temperature).flatten()
                for t in (e.trajectory for g in groups for e in g.episodes)]


def token_logp(policy, groups):
    """(B, T) token log-probs of every trajectory, padded with PAD."""
    return torch.nn.utils.rnn.pad_sequence(token_rows(policy, groups), batch_first=True, padding_value=PAD)


def sequence_logp(policy, groups):
    """Per trajectory: (sum of its tokens' log-probs, success)."""
    successes = [e.result.success for g in groups for e in g.episodes]
    return [(float(row.sum()), s) for row, s in zip(token_rows(policy, groups), successes, strict=True)]


def test_update_raises_advantaged_tokens_and_lowers_the_others(tmp_path):
    policy = StatePolicy()
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    fill(learner.buffer, 2)
    groups = learner.buffer.pop_batch(1)
    before = sequence_logp(policy, groups)
    metrics = learner.update(groups)
    after = sequence_logp(policy, groups)
    for (b, success), (a, _) in zip(before, after, strict=True):
        assert (a > b) if success else (a < b), (success, b, a)
    # 8 trajectories, mini-batches of 4, 2 epochs -> 4 clipped steps; the first sees ratio 1 exactly
    assert metrics["grpo/optimizer_steps"] == 4 and learner.optimizer_steps == 4
    assert metrics["grpo/ratio_min"] <= 1.0 <= metrics["grpo/ratio_max"]
    assert learner.policy_version == 1 and metrics["policy/version"] == 1
    assert metrics["policy/entropy"] > 0 and math.isfinite(metrics["loss/policy"])


def test_update_lowers_the_surrogate_loss_and_the_clip_engages(tmp_path):
    policy = StatePolicy()
    cfg = GRPOConfig(groups_per_update=2, epochs=4, minibatch_size=4, lr=1e-2)
    learner = GRPOLearner(policy, cfg, tmp_path, tensorboard=False)
    fill(learner.buffer, 2)
    groups = learner.buffer.pop_batch(1)
    old = token_logp(policy, groups)
    adv = torch.cat([group_advantages(g.rewards) for g in groups])
    mask = torch.ones_like(old, dtype=torch.bool)
    mask[old == PAD] = False
    # at ratio 1 the surrogate is -mean(A) = 0: advantages sum to zero within each group
    start, _ = clipped_policy_loss(old, old, adv, mask, clip_low=0.2, clip_high=0.28)
    metrics = learner.update(groups)
    end, _ = clipped_policy_loss(token_logp(policy, groups), old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert start.item() == pytest.approx(0.0, abs=1e-6)
    assert end.item() < -0.1
    assert metrics["grpo/clip_fraction"] > 0 and metrics["grpo/approx_kl"] > 0
    learner.update(learner.buffer.pop_batch(2) or groups)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["update"]) for r in rows] == [1, 2]
    assert {"loss/policy", "grpo/clip_fraction", "grpo/approx_kl", "policy/entropy", "time/update_s"} <= set(rows[0])


def test_split_forward_passes_give_the_same_update(tmp_path):
    """Gradient accumulation over forward passes of at most forward_tokens positions equals one pass,
    down to one chunk a pass, where every trajectory of 2-4 chunks is split over passes (each piece's
    token sum is divided by its whole trajectory's count)."""
    results = []
    for chunks in (64, 3, 1):
        policy = StatePolicy()
        cfg = GRPOConfig(groups_per_update=2, epochs=2, minibatch_size=4, lr=3e-3, forward_tokens=chunks * SEQUENCE)
        learner = GRPOLearner(policy, cfg, tmp_path / str(chunks), tensorboard=False)
        fill(learner.buffer, 2)
        learner.maybe_update()
        results.append((torch.cat([p.detach().flatten() for p in policy.parameters()]), policy.forward_sizes))
    (one, sizes_one), *split = results
    assert max(sizes_one) > 4  # chunks of several trajectories batched
    for chunks, (weights, sizes) in zip((3, 1), split, strict=True):
        assert max(sizes) == chunks  # the budget filled, never exceeded
        torch.testing.assert_close(weights, one, rtol=1e-5, atol=1e-6)


def test_each_trajectory_is_scored_at_the_temperature_it_was_sampled_at(tmp_path):
    """Groups sampled at 1.0 and at 2.0 in one update: the learner's old log-probs equal those the sampler
    reported at each one's own temperature (one temperature for all would miss the other by nats)."""
    policy = StatePolicy()
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    rng = np.random.default_rng(0)
    for g, temperature in enumerate((1.0, 2.0)):
        for i in range(G):
            t, r = episode(f"g{g}/{i}", f"g{g}", i < 2, rng=rng, temperature=temperature)
            with torch.no_grad():
                t.log_probs = policy.token_log_probs(t.images, t.state, [t.instruction] * t.num_chunks,
                                                     torch.from_numpy(t.token_ids), temperature=temperature
                                                     ).sum(-1).numpy()
            learner.buffer.add_trajectory(t)
            learner.buffer.add_result(r)
    metrics = learner.maybe_update()
    assert metrics is not None and metrics["grpo/behaviour_logp_abs_diff"] < 1e-4


def test_maybe_update_waits_for_enough_kept_groups_and_reports_progress(tmp_path):
    learner = GRPOLearner(StatePolicy(), CFG, tmp_path, tensorboard=False)
    fill(learner.buffer, 1)
    assert learner.maybe_update() is None
    rng = np.random.default_rng(1)
    for i in range(G):  # an all-fail group: filtered by dynamic sampling; one trajectory withheld (greedy chunks)
        t, r = episode(f"fail/{i}", "fail", False, rng=rng)
        learner.buffer.add_trajectory(t if i else TrajectoryRecord.withheld_notice(
            t.episode_id, t.arm, t.instruction, t.policy_version, t.temperature, "greedy"))
        learner.buffer.add_result(r)
    fill(learner.buffer, 1, start=1)
    metrics = learner.maybe_update()
    assert metrics["grpo/kept_group_fraction"] == pytest.approx(2 / 3)
    assert metrics["rollout/episodes"] == 12 and metrics["buffer/used"] == 8
    assert metrics["buffer/filtered_all_same"] == 3 and metrics["buffer/withheld"] == 1
    assert metrics["buffer/lost"] == 0


def test_a_non_finite_gradient_skips_its_step_and_leaves_the_weights_finite(tmp_path):
    """A NaN in one layer's gradient (an overflow, float16's AdamW): a step on it would make every weight
    NaN (clip_grad_norm_ spreads it through the global norm), and the policy nodes would serve it."""
    policy = StatePolicy()
    policy.net[0].weight.register_hook(lambda grad: grad * float("nan"))
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    fill(learner.buffer, 2)
    before = [p.detach().clone() for p in learner.params]
    metrics = learner.maybe_update()
    assert metrics["grpo/skipped_steps"] == 4 and metrics["grpo/optimizer_steps"] == 0 and learner.optimizer_steps == 0
    for p, old in zip(learner.params, before, strict=True):
        torch.testing.assert_close(p.detach(), old)


def test_checkpoint_and_resume_continue_exactly(tmp_path):
    run = tmp_path / "run"
    cfg = GRPOConfig(**{**CFG.to_dict(), "max_policy_lag": 5})  # nothing goes stale in this test
    a = GRPOLearner(StatePolicy(), cfg, run, seed=3, tensorboard=False)
    fill(a.buffer, 6, version=0)
    a.maybe_update()
    ckpt = a.save_checkpoint()
    a.maybe_update()  # update 2: never checkpointed, its groups must come back after the "crash"
    expected = {name: p.detach().clone() for name, p in a.policy.named_parameters()}
    del a

    b = GRPOLearner(StatePolicy(seed=99), cfg, run, seed=0, tensorboard=False)  # other init and seed
    assert b.resume() == ckpt == latest_checkpoint(run)
    assert (b.updates, b.policy_version, b.optimizer_steps) == (1, 1, 4)
    assert b.buffer.ready_groups() == 4  # 2 rolled back + 2 never used
    b.maybe_update()  # redo update 2 from the same weights, optimiser state and shuffling RNG
    for name, p in b.policy.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name])
    assert b.buffer.accounting()["used"] == 16


def test_a_resumed_learner_logs_each_update_once(tmp_path):
    """Metrics are logged every update, checkpoints taken every few: the updates after the checkpoint
    are done again after a crash and must not leave a second row (issue #21: update 6 twice)."""
    cfg = GRPOConfig(**{**CFG.to_dict(), "max_policy_lag": 5})  # nothing goes stale in this test
    a = GRPOLearner(StatePolicy(), cfg, tmp_path)
    fill(a.buffer, 6)
    a.maybe_update()
    a.save_checkpoint()
    a.maybe_update()
    a.maybe_update()  # updates 2 and 3 are logged, then the learner dies
    b = GRPOLearner(StatePolicy(), cfg, tmp_path)
    b.resume()
    assert [r["update"] for r in read_metrics(tmp_path / "metrics.csv")] == ["1"]
    b.maybe_update()
    b.maybe_update()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["update"] for r in rows] == ["1", "2", "3"] and rows[0]["loss/policy"]
    # TensorBoard, reading every event file of the run, shows each update once: the resumed learner's.
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    points = board.Scalars("loss/policy")
    assert [p.step for p in points] == [1, 2, 3]
    np.testing.assert_allclose([p.value for p in points], [float(r["loss/policy"]) for r in rows], rtol=1e-6)
    # A learner that died before its first checkpoint starts again from update 1.
    c = GRPOLearner(StatePolicy(), CFG, tmp_path / "early", tensorboard=False)
    fill(c.buffer, 2)
    c.maybe_update()
    GRPOLearner(StatePolicy(), CFG, tmp_path / "early", tensorboard=False).resume()
    assert read_metrics(tmp_path / "early" / "metrics.csv") == []


def test_resume_refuses_a_different_policy_shape(tmp_path):
    a = GRPOLearner(StatePolicy(), CFG, tmp_path, tensorboard=False)
    a.save_checkpoint()
    other = StatePolicy()
    other.net[2] = torch.nn.Linear(32, 7)
    with pytest.raises(ValueError, match="same policy config"):
        GRPOLearner(other, CFG, tmp_path / "b", tensorboard=False).resume(latest_checkpoint(tmp_path))
    with pytest.raises(FileNotFoundError, match="no learner checkpoint"):
        GRPOLearner(StatePolicy(), CFG, tmp_path / "c", tensorboard=False).resume(tmp_path / "nowhere")


def test_a_run_stopped_before_its_first_checkpoint_requeues_its_groups(tmp_path):
    a = GRPOLearner(StatePolicy(), CFG, tmp_path, tensorboard=False)
    fill(a.buffer, 2)
    a.maybe_update()
    a.publish_policy()  # policy nodes are acting with v1 when the learner dies
    b = GRPOLearner(StatePolicy(), CFG, tmp_path, tensorboard=False)
    assert b.resume() is None
    assert b.buffer.ready_groups() == 2 and (b.updates, b.policy_version) == (0, 0)
    assert b.maybe_update() is not None and b.buffer.accounting()["used"] == 8


@pytest.mark.parametrize("checkpointed", [True, False], ids=["checkpoint", "none"])
def test_a_resumed_learner_deletes_the_lost_updates_policies_and_publishes_again(tmp_path, checkpointed):
    """Pruning keeps the 3 newest policies: with the lost run's v2..v4 (or v1..v4) still there, the restored
    version was deleted as soon as it was published and the respawned learner failed on it every time."""
    cfg = GRPOConfig(**{**CFG.to_dict(), "max_policy_lag": 5})
    a = GRPOLearner(StatePolicy(), cfg, tmp_path, tensorboard=False)
    fill(a.buffer, 10)
    for update in range(1, 5):
        a.maybe_update()
        a.publish_policy()
        if checkpointed and update == 1:
            a.save_checkpoint()
    b = GRPOLearner(StatePolicy(), cfg, tmp_path, tensorboard=False)
    assert (b.resume() is not None) == checkpointed
    version = int(checkpointed)
    assert b.lost_versions == ["v000002", "v000003", "v000004"]  # v1 was pruned when v4 came
    path = b.publish_policy()
    assert path.name == f"v{version:06d}" and checkpoint_digest(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    b.maybe_update()
    assert b.publish_policy().name == f"v{version + 1:06d}"


def test_publish_policy_writes_versioned_weights(tmp_path):
    learner = GRPOLearner(StatePolicy(), CFG, tmp_path, tensorboard=False)
    fill(learner.buffer, 2)
    learner.maybe_update()
    path = learner.publish_policy()
    assert path.name == "v000001" and (path / "model.safetensors").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_buffer_of_a_learner_is_journalled_in_the_run(tmp_path):
    learner = GRPOLearner(StatePolicy(), CFG, tmp_path, tensorboard=False)
    fill(learner.buffer, 1)
    assert EpisodeBuffer(CFG, tmp_path / "buffer").ready_groups() == 1


def test_the_loop_learns_a_token_bandit(tmp_path):
    """Rollouts sampled from the policy at the rollout temperature, reward 1 when at least 5 of 12 tokens are below 4
    (about 16% at the start, near-uniform policy), through buffer and updates: success climbs."""
    policy = StatePolicy()
    cfg, size = GRPOConfig(groups_per_update=2, epochs=2, minibatch_size=8, lr=1e-2), 8
    learner = GRPOLearner(policy, cfg, tmp_path, tensorboard=False)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    state = np.tile(np.linspace(-1, 1, P, dtype=np.float32), (2, 1))  # 2 chunks
    rates = []
    for g in range(GROUPS):
        with torch.no_grad():
            logits = policy.net(torch.from_numpy(state)).reshape(-1, TOKENS, VOCAB) / ROLLOUT_TEMPERATURE
        probs = torch.softmax(logits, -1).reshape(-1, VOCAB)
        wins = 0
        for i in range(size):
            tokens = torch.multinomial(probs, 1, generator=generator).reshape(2, TOKENS).numpy()
            success = bool((tokens < 4).sum() >= 5)
            wins += success
            t, r = episode(f"{g}/{i}", f"g{g}", success, n=2, version=learner.policy_version, rng=rng, size=size)
            t.token_ids, t.state = tokens, state
            learner.buffer.add_trajectory(t)
            learner.buffer.add_result(r)
        rates.append(wins / size)
        learner.maybe_update()
    assert learner.updates >= 5
    assert np.mean(rates[:6]) < 0.35 and np.mean(rates[-5:]) > 0.7, rates
