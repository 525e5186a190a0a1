"""VLAPolicy on real tiny transformers models: log-probs, sampling, batching, save/load, fine-tuning,
safe loading (other architectures through the same wrapper: test_policy_architectures.py)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_rl_ros.digest import checkpoint_digest
from vla_rl_ros.policy import (
    CheckpointError,
    FinetuneConfig,
    VLAPolicy,
    new_tiny_policy,
    vla_policy,
)

INSTRUCTIONS = ["pick up the red cube", "push the blue block to the green target", "reach"]
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "conv_channels": (8, 16)}
CHUNK, ACTION_DIM, STATE_DIM = 3, 4, 5


def make_policy(**kwargs) -> VLAPolicy:
    torch.manual_seed(0)
    demos = np.random.default_rng(0).uniform(-0.02, 0.02, (200, ACTION_DIM))
    return new_tiny_policy(INSTRUCTIONS, demos, chunk_size=CHUNK, state_dim=STATE_DIM, **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return make_policy()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    state = rng.normal(size=(3, STATE_DIM)).astype(np.float32)
    return images, state, INSTRUCTIONS


def direct_log_probs(policy: VLAPolicy, batch, bins: np.ndarray, temperature: float) -> np.ndarray:
    """Reference: full-vocabulary logits of the model at the appended placeholder positions."""
    inputs = policy.model_inputs(*batch)
    inputs.pop("logits_to_keep", None)
    with torch.no_grad():
        logits = policy.model(**inputs).logits.double()  # (B, T, V)
    B, T, V = logits.shape
    K = len(policy.config.placeholder_token_ids)
    assert inputs["input_ids"][:, T - K:].tolist() == [policy.config.placeholder_token_ids] * B
    out = np.zeros(bins.shape)
    for b in range(B):
        for k in range(K):
            row = logits[b, T - K + k, V - 256:] / temperature
            out[b, k] = float(row[bins[b, k]] - torch.logsumexp(row, 0))
    return out


def test_act_shapes_units_and_token_range(policy, batch):
    out = policy.act(*batch, greedy=False, generator=torch.Generator().manual_seed(0))
    B = len(INSTRUCTIONS)
    assert out.actions.shape == (B, CHUNK, ACTION_DIM) and out.actions.dtype == np.float32
    assert out.token_ids.shape == (B, CHUNK * ACTION_DIM) and out.log_probs.shape == (B,)
    assert np.all(out.token_ids >= policy.vocab_size - 256) and np.all(out.token_ids < policy.vocab_size)
    assert np.all(np.abs(out.actions) <= 0.02)  # decoded inside the demonstration bounds


@pytest.mark.parametrize("temperature", [1.0, 1.6])
def test_log_probs_match_a_direct_computation_from_the_logits(policy, batch, temperature):
    out = policy.act(*batch, greedy=False, temperature=temperature, generator=torch.Generator().manual_seed(3))
    bins = out.token_ids - (policy.vocab_size - 256)
    expected = direct_log_probs(policy, batch, bins, temperature)
    np.testing.assert_allclose(out.token_log_probs, expected, atol=1e-4)
    np.testing.assert_allclose(out.log_probs, expected.sum(-1), atol=1e-3)
    recomputed = policy.token_log_probs(*batch, out.token_ids, temperature=temperature)
    np.testing.assert_allclose(recomputed.detach().numpy(), expected, atol=1e-4)


def test_token_log_probs_is_differentiable(policy, batch):
    out = policy.act(*batch, greedy=True)
    policy.token_log_probs(*batch, out.token_ids, temperature=1.6).sum().backward()
    assert policy.model.lm_head.weight.grad is not None
    policy.model.zero_grad(set_to_none=True)


def test_sampling_as_temperature_goes_to_zero_equals_greedy(policy, batch):
    greedy = policy.act(*batch, greedy=True)
    cold = policy.act(*batch, greedy=False, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    hot = policy.act(*batch, greedy=False, temperature=1.6, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(cold.token_ids, greedy.token_ids)
    assert not np.array_equal(hot.token_ids, greedy.token_ids)
    with pytest.raises(ValueError, match="greedy=True"):
        policy.act(*batch, greedy=False, temperature=0.0)


def test_batched_equals_one_at_a_time(policy, batch):
    """Left padding must not change a row's result (positions come from the attention mask)."""
    together = policy.act(*batch, greedy=True)
    for i in range(len(INSTRUCTIONS)):
        alone = policy.act(batch[0][i:i + 1], batch[1][i:i + 1], batch[2][i:i + 1], greedy=True)
        np.testing.assert_array_equal(alone.token_ids[0], together.token_ids[i])
        assert alone.log_probs[0] == pytest.approx(together.log_probs[i], abs=1e-4)


def test_sequence_length_counts_every_position_the_decoder_sees(policy, batch, monkeypatch):
    """What the learner's token budget counts per chunk: the prompt and the action placeholders, and the
    image and state tokens that the tiny VLA puts before the text itself; the same once the bounded
    cache of instructions has forgotten one."""
    monkeypatch.setattr(vla_policy, "MAX_CACHED_PROMPTS", 2)
    images, state, instructions = batch
    seen = []
    hook = policy.model.decoder.register_forward_pre_hook(
        lambda _module, _args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        for i, text in enumerate(instructions):
            policy.action_logits(images[i:i + 1], state[i:i + 1], [text])
    finally:
        hook.remove()
    assert [policy.sequence_length(text) for text in instructions] == seen
    assert [policy.sequence_length(text) for text in instructions] == seen  # the first was forgotten
    assert len(policy._text_positions) <= 2
    assert len(set(seen)) == len(seen)  # the instructions' lengths differ: the count follows each


def test_images_and_instructions_change_the_action_distribution(policy, batch):
    images, state, _ = batch
    same_text = [INSTRUCTIONS[0]] * 3
    a = policy.token_log_probs(images, state, same_text, np.full((3, 12), policy.vocab_size - 1), temperature=1)
    b = policy.token_log_probs(images[::-1].copy(), state, same_text, np.full((3, 12), policy.vocab_size - 1),
                               temperature=1)
    c = policy.token_log_probs(images, state, INSTRUCTIONS[::-1], np.full((3, 12), policy.vocab_size - 1),
                               temperature=1)
    assert not torch.allclose(a[0], b[0]) and not torch.allclose(a[0], c[0])


def test_save_then_load_gives_identical_outputs_and_a_stable_digest(policy, batch, tmp_path):
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(loaded.act(*batch, greedy=True).token_ids, policy.act(*batch, greedy=True).token_ids)
    np.testing.assert_array_equal(loaded.act(*batch, greedy=True).log_probs, policy.act(*batch, greedy=True).log_probs)
    assert loaded.config == policy.config
    # The digest covers every file, and transformers adds loader metadata ("is_local") to the
    # tokenizer_config.json of a loaded tokenizer: stable from the first save of a loaded checkpoint on.
    loaded.save(tmp_path / "again")
    digest = checkpoint_digest(tmp_path / "again")
    VLAPolicy.load(tmp_path / "again").save(tmp_path / "third")
    assert checkpoint_digest(tmp_path / "third") == digest and len(digest) == 64


def one_step(policy: VLAPolicy, batch) -> None:
    target = policy.act(*batch, greedy=True).token_ids
    optimiser = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    loss = -policy.token_log_probs(*batch, (target + 7) % policy.vocab_size, temperature=1.0).mean()
    loss.backward()
    optimiser.step()


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_finetuning_changes_the_output_after_one_step(batch, mode, tmp_path):
    policy = make_policy()
    n_all = sum(p.numel() for p in policy.model.parameters())
    before = policy.act(*batch, greedy=True).log_probs
    policy.configure_finetuning(FinetuneConfig(mode=mode, target_modules=["q_proj", "v_proj"]))
    n_train = sum(p.numel() for p in policy.trainable_parameters())
    assert (n_train == n_all) if mode == "full" else (0 < n_train < n_all / 10)
    one_step(policy, batch)
    after = policy.act(*batch, greedy=True).log_probs
    assert not np.allclose(before, after)
    policy.save(tmp_path / "ckpt")  # LoRA is merged: a plain checkpoint with the same outputs
    assert not any("lora" in key for key in load_file(tmp_path / "ckpt" / "model.safetensors"))
    np.testing.assert_allclose(VLAPolicy.load(tmp_path / "ckpt").act(*batch, greedy=True).log_probs, after,
                               atol=1e-4)


def test_missing_directory_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VLAPolicy.load(tmp_path / "nowhere")


def test_pickle_only_checkpoint_is_refused(policy, tmp_path):
    policy.save(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    torch.save(load_file(weights), tmp_path / "ckpt" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors"):
        VLAPolicy.load(tmp_path / "ckpt")


def test_corrupt_safetensors_file_gives_a_clear_error(policy, tmp_path):
    policy.save(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated copy
    with pytest.raises(CheckpointError, match=r"corrupt safetensors file .*model\.safetensors"):
        VLAPolicy.load(tmp_path / "ckpt")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["action_bounds"].update(n_bins=128), r"action_bounds\.n_bins=128: .*must be 256"),
    (lambda c: c.pop("chunk_size"), r"missing keys \['chunk_size'\]"),
    (lambda c: c.update(chunk=3), r"unknown keys \['chunk'\]"),
    (lambda c: c.update(chunk_size="3"), "'<' not supported"),
], ids=["n_bins", "missing", "unknown", "type"])
def test_a_wrong_policy_file_is_refused_at_load_naming_the_file_and_the_key(policy, tmp_path, edit, message):
    """The policy node's start-up and updates catch CheckpointError: a vla_policy.json mistake must be one,
    at load (n_bins other than the 256 action token ids loaded, then every act() failed)."""
    policy.save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / vla_policy.POLICY_FILE
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"{path}: .*{message}"):
        VLAPolicy.load(tmp_path / "ckpt")


def test_plain_model_dir_without_policy_file_asks_for_a_policy_config(policy, tmp_path):
    policy.model.save_pretrained(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="pass policy_config"):
        VLAPolicy.load(tmp_path / "plain")


@pytest.mark.parametrize("variant", [{"vision": "keypoints"}, {"film": True}], ids=["keypoints", "film"])
def test_encoder_variants_see_the_image_and_instruction_and_round_trip(variant, batch, tmp_path):
    policy = make_policy(**variant)
    images, state, _ = batch
    targets = np.full((3, CHUNK * ACTION_DIM), policy.vocab_size - 1)
    same_text = [INSTRUCTIONS[0]] * 3
    base = policy.token_log_probs(images, state, same_text, targets, temperature=1)
    flipped = policy.token_log_probs(images[::-1].copy(), state, same_text, targets, temperature=1)
    retold = policy.token_log_probs(images, state, INSTRUCTIONS[::-1], targets, temperature=1)
    assert not torch.allclose(base[0], flipped[0]) and not torch.allclose(base[0], retold[0])
    if variant.get("film"):  # the image tokens themselves depend on the instruction
        pixels, text = torch.rand(1, 3, 64, 64), torch.randn(2, SMALL["hidden_size"])
        vision = policy.base_model.vision
        assert not torch.allclose(vision(pixels, text[:1]), vision(pixels, text[1:]))
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    assert loaded.base_model.config.to_dict() | {"_name_or_path": ""} == (
        policy.base_model.config.to_dict() | {"_name_or_path": ""})
    np.testing.assert_array_equal(loaded.act(*batch, greedy=True).log_probs, policy.act(*batch, greedy=True).log_probs)


def test_state_is_normalised_by_the_demonstrations_statistics_and_survives_a_reload(batch, tmp_path):
    """A 1 cm TCP move must matter as much to the proprio token as a joint's swing: the model
    standardises the state with the demonstrations' mean and spread, stored in its config."""
    images, _, instructions = batch
    rng = np.random.default_rng(2)
    scale = np.array([3.0, 1.0, 0.01, 0.01, 0.0])  # radians, radians, metres, metres, a locked joint
    states = (rng.normal(size=(500, STATE_DIM)) * scale + 0.4).astype(np.float32)
    torch.manual_seed(0)
    policy = new_tiny_policy(INSTRUCTIONS, rng.uniform(-0.02, 0.02, (200, ACTION_DIM)), chunk_size=CHUNK,
                             state_dim=STATE_DIM, states=states, **SMALL)
    config = policy.base_model.config
    np.testing.assert_allclose(config.state_mean, states.astype(np.float64).mean(0), atol=1e-9)
    np.testing.assert_allclose(config.state_std[:4], states.astype(np.float64).std(0)[:4], rtol=1e-9)
    assert config.state_std[4] == 1.0  # constant: no division by zero
    targets = np.full((2, CHUNK * ACTION_DIM), policy.vocab_size - 1)
    here, moved = states[:2].copy(), states[:2].copy()
    moved[:, 2] += 0.01  # 1 cm
    base = policy.token_log_probs(images[:2], here, instructions[:2], targets, temperature=1)
    shifted = policy.token_log_probs(images[:2], moved, instructions[:2], targets, temperature=1)
    unnormalised = new_tiny_policy(INSTRUCTIONS, rng.uniform(-0.02, 0.02, (200, ACTION_DIM)), chunk_size=CHUNK,
                                   state_dim=STATE_DIM, **SMALL)
    unnormalised.model.load_state_dict(policy.model.state_dict())
    raw_shift = (unnormalised.token_log_probs(images[:2], moved, instructions[:2], targets, temperature=1)
                 - unnormalised.token_log_probs(images[:2], here, instructions[:2], targets, temperature=1))
    assert (shifted - base).abs().mean() > 10 * raw_shift.abs().mean()
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(loaded.act(images[:2], here, instructions[:2], greedy=True).log_probs,
                                  policy.act(images[:2], here, instructions[:2], greedy=True).log_probs)
    with pytest.raises(ValueError, match=r"states must be \(N, 5\)"):
        new_tiny_policy(INSTRUCTIONS, states[:, :4], chunk_size=CHUNK, state_dim=STATE_DIM, states=states[:, :3])


@pytest.mark.parametrize("tokens, state, message", [
    (np.full((3, 11), -1), None, r"token_ids must be \(B, 12\)"),  # a chunk of another size
    (np.full((3, 12), 0), None, r"ids in \[0, 0\]"),  # not action tokens
    (np.zeros((3, 0), np.int64), None, r"got shape \(3, 0\)"),
    ("vocab", np.zeros((3, STATE_DIM + 1), np.float32), rf"state must be \(3, {STATE_DIM}\)"),
])
def test_samples_this_model_cannot_score_are_refused_by_what_is_wrong(policy, batch, tokens, state, message):
    tokens = np.full((3, 12), policy.vocab_size - 1) if isinstance(tokens, str) else tokens
    with pytest.raises(ValueError, match=message):
        policy.check_tokens(tokens, state)
    policy.check_tokens(np.full((3, 12), policy.vocab_size - 1), batch[1])  # a good one passes
    policy.check_tokens(np.zeros((0, 0)), np.zeros((0, 0)))  # a withheld trajectory's record: nothing to score
