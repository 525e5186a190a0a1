"""GRPOLearner on the real VLAPolicy (tiny transformers model, LoRA through peft)."""

import dataclasses

import numpy as np
import torch

from vla_rl_ros.policy import FinetuneConfig, VLAPolicy, new_tiny_policy
from vla_rl_ros.rl import GRPOConfig, GRPOLearner, ResultRecord, TrajectoryRecord
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE
from vla_rl_ros.rl.learner import Piece

INSTRUCTIONS = ["reach the red disc", "push the blue block"]
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "conv_channels": (8, 16), "image_size": 32}
CHUNK, ACTION_DIM, STATE_DIM, CHUNKS = 2, 4, 5, 3
CFG = GRPOConfig(groups_per_update=2, epochs=2, minibatch_size=4, lr=3e-3)
G = 4  # rollouts per group


LORA = FinetuneConfig(mode="lora", lora_rank=4, target_modules="all-linear")


def make_policy(finetune: FinetuneConfig = LORA) -> VLAPolicy:
    torch.manual_seed(0)
    demos = np.random.default_rng(0).uniform(-0.02, 0.02, (100, ACTION_DIM))
    policy = new_tiny_policy(INSTRUCTIONS, demos, chunk_size=CHUNK, state_dim=STATE_DIM, **SMALL)
    policy.configure_finetuning(finetune)
    return policy


def rollouts(policy: VLAPolicy, buffer, groups: int = CFG.groups_per_update, size: int = G) -> None:
    """Groups (two) of `size` (four) sampled episodes (CHUNKS chunks each); in group g the first
    g % (size - 1) + 1 members succeed, so every group is kept."""
    rng = np.random.default_rng(2)
    generator = torch.Generator(policy.device).manual_seed(0)  # sampling runs on the policy's device
    for g in range(groups):
        images = rng.integers(0, 256, (CHUNKS, 32, 32, 3), dtype=np.uint8)  # one initial state per group
        state = rng.normal(size=(CHUNKS, STATE_DIM)).astype(np.float32)
        instruction = INSTRUCTIONS[g % 2]
        for i in range(size):
            out = policy.act(images, state, [instruction] * CHUNKS, greedy=False, temperature=ROLLOUT_TEMPERATURE,
                             generator=generator)
            eid, success = f"g{g}/{i}", i <= g % (size - 1)
            buffer.add_trajectory(TrajectoryRecord(
                episode_id=eid, arm="/arm0", instruction=instruction, policy_version=0,
                temperature=ROLLOUT_TEMPERATURE, images=images,
                state=state, token_ids=out.token_ids, log_probs=out.log_probs, steps=np.arange(CHUNKS) * CHUNK))
            buffer.add_result(ResultRecord(
                episode_id=eid, arm="/arm0", group_id=f"g{g}", task="reach", seed=g, success=success,
                reward=float(success), steps=CHUNKS * CHUNK, policy_version=0, evaluation=False,
                end_reason="success" if success else "timeout", group_size=size))


def chunk_log_probs(policy: VLAPolicy, groups) -> list[tuple[float, bool]]:
    out = []
    with torch.no_grad():
        for g in groups:
            for e in g.episodes:
                t = e.trajectory
                lp = policy.token_log_probs(t.images, t.state, [t.instruction] * t.num_chunks, t.token_ids,
                                            temperature=t.temperature)
                out.append((float(lp.sum()), e.result.success))
    return out


def test_one_update_on_vla_policy_moves_probability_towards_successful_tokens(tmp_path):
    policy = make_policy()
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    rollouts(policy, learner.buffer)
    groups = learner.buffer.pop_batch(1)
    # the behaviour log-probs from act() match the learner's recomputation before any update
    recomputed = chunk_log_probs(policy, groups)
    behaviour = [float(e.trajectory.log_probs.sum()) for g in groups for e in g.episodes]
    np.testing.assert_allclose([lp for lp, _ in recomputed], behaviour, rtol=1e-4, atol=1e-3)

    metrics = learner.update(groups)
    after = chunk_log_probs(policy, groups)
    change = np.array([a - b for (b, _), (a, _) in zip(recomputed, after, strict=True)])
    success = np.array([s for _, s in recomputed])
    # Sampled tokens of different rollouts share positions and features, so one failed rollout may
    # rise a little with its successful siblings; on average the update must go the right way.
    assert change[success].mean() > 0 > change[~success].mean(), change
    assert metrics["grpo/optimizer_steps"] == 4 and np.isfinite(metrics["loss/policy"])
    assert metrics["grpo/behaviour_logp_abs_diff"] < 1e-3  # same weights in act() and the learner

    # the checkpoint's policy directory is a plain VLAPolicy checkpoint with the updated behaviour
    ckpt = learner.save_checkpoint()
    reloaded = chunk_log_probs(VLAPolicy.load(ckpt / "policy"), groups)
    np.testing.assert_allclose([lp for lp, _ in reloaded], [lp for lp, _ in after], rtol=1e-4, atol=1e-3)

    # and a fresh learner on a fresh LoRA policy resumes to the same weights
    other = GRPOLearner(make_policy(), CFG, tmp_path, tensorboard=False)
    other.resume()
    resumed = chunk_log_probs(other.policy, groups)
    np.testing.assert_allclose([lp for lp, _ in resumed], [lp for lp, _ in after], rtol=1e-5, atol=1e-5)


def test_the_update_makes_its_tensors_on_the_policy_device(tmp_path):
    """Every tensor of the update must be made on the policy's device (or moved there): on a GPU a
    tensor made on torch's default device, the CPU, fails the update. Here torch's default device is
    `meta` and the policy is on the CPU, so such a tensor meets the policy's on another device."""
    policy = make_policy()
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    rollouts(policy, learner.buffer)
    batch = learner.buffer.pop_batch(1)
    with torch.device("meta"):
        metrics = learner.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    assert policy.device == torch.device("cpu") and metrics["grpo/optimizer_steps"] == 4


def test_an_update_of_bfloat16_weights_scores_in_float32(tmp_path):
    """The learner's dtype bfloat16: the weights stay bf16 and move; the log-probs the loss sees are
    float32 (action_logits casts the logits before the log-softmax)."""
    policy = make_policy()
    policy.model.to(torch.bfloat16)
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    rollouts(policy, learner.buffer)
    batch = learner.buffer.pop_batch(1)
    trajectory = batch[0].episodes[0].trajectory
    assert learner.steps._forward([Piece(0, 0, trajectory.num_chunks)], [trajectory])[0].dtype == torch.float32
    before = [p.detach().clone() for p in learner.params]
    metrics = learner.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    assert {p.dtype for p in learner.params} == {torch.bfloat16}
    assert all(not torch.equal(a, p) for a, p in zip(before, learner.params, strict=True))


def test_activation_checkpointing_recomputes_the_blocks_and_gives_the_same_update(tmp_path):
    """With activation checkpointing each decoder block runs again in the backward pass, and the
    update is the one without it."""
    results = {}
    for checkpointing in (False, True):
        policy = make_policy(dataclasses.replace(LORA, activation_checkpointing=checkpointing))
        # the block's MLP runs inside its forward, the recomputation included (hooks on the block itself
        # stay outside the checkpoint)
        mlp = next(m for m in policy.model.modules() if type(m).__name__ == "LlamaDecoderLayer").mlp
        calls = []
        mlp.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        learner = GRPOLearner(policy, CFG, tmp_path / str(checkpointing), tensorboard=False)
        rollouts(policy, learner.buffer)
        batch = learner.buffer.pop_batch(1)
        calls.clear()
        learner.update(batch)
        results[checkpointing] = (len(calls), [p.detach() for p in learner.params])
    (plain_calls, plain), (checkpointed_calls, checkpointed) = results[False], results[True]
    # 2 epochs x 2 mini-batches x 1 pass + the old log-probs' passes, each block once; the 4 backward passes again
    assert checkpointed_calls == plain_calls + 4
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
