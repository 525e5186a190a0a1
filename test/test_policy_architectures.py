"""The VLA architectures users bring, as tiny random-init transformers models built here (no download),
through the same VLAPolicy wrapper and GRPO update: Llava (SigLIP + Llama), PaliGemma (SigLIP +
Gemma, token_type_ids), Idefics3 (SmolVLM's model: SigLIP-style encoder + Llama, pixel_attention_mask).

For each: sampled chunks whose log-probs equal a direct computation from the model's logits, a batch
that scores as its rows one by one (left padding), one LoRA GRPO update that moves probability
towards the rewarded tokens, and a save/load round trip. The action bins are 256 ids past the
tokenizer's vocabulary, as a VLA adds them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from test_policy_wrapper import direct_log_probs
from test_rl_vla import CFG, INSTRUCTIONS, LORA, chunk_log_probs, rollouts

from vla_rl_ros.policy import ActionTokenizer, PolicyConfig, VLAPolicy
from vla_rl_ros.policy.action_tokenizer import N_BINS
from vla_rl_ros.policy.tiny_vla import build_word_tokenizer
from vla_rl_ros.rl import GRPOLearner

PROMPT = "what action should the robot take to {instruction}?"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
VISION = {**TINY, "image_size": 32, "patch_size": 16}


def tokenizer(*specials: str) -> tf.PreTrainedTokenizerFast:
    tok = build_word_tokenizer([PROMPT.format(instruction=""), *INSTRUCTIONS], num_slots=0, num_action_tokens=0)
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def llava() -> tuple[torch.nn.Module, object, str]:
    tok = tokenizer("<image>")
    model = tf.LlavaForConditionalGeneration(tf.LlavaConfig(
        vision_config=tf.SiglipVisionConfig(**VISION),
        text_config=tf.LlamaConfig(vocab_size=len(tok) + N_BINS, num_key_value_heads=2, **TINY),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1))
    processor = tf.LlavaProcessor(image_processor=tf.SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                                  tokenizer=tok, patch_size=16, vision_feature_select_strategy="full",
                                  image_token="<image>", num_additional_image_tokens=0)
    return model, processor, "<image> " + PROMPT


def paligemma() -> tuple[torch.nn.Module, object, str]:
    tok = tokenizer("<image>", "<bos>")
    tok.bos_token = "<bos>"
    # first: the processor adds PaliGemma's <loc> and <seg> tokens to the tokenizer
    processor = tf.PaliGemmaProcessor(tokenizer=tok, image_processor=tf.SiglipImageProcessorPil(
        size={"height": 32, "width": 32}, image_seq_length=4))
    model = tf.PaliGemmaForConditionalGeneration(tf.PaliGemmaConfig(
        vision_config=tf.SiglipVisionConfig(projection_dim=32, **VISION),
        text_config=tf.GemmaConfig(vocab_size=len(tok) + N_BINS, num_key_value_heads=1, head_dim=16, **TINY),
        image_token_id=tok.convert_tokens_to_ids("<image>"), projection_dim=32))
    return model, processor, PROMPT  # the processor puts the image tokens and <bos> in front


def idefics3() -> tuple[torch.nn.Module, object, str]:
    """SmolVLM's model is this one (its processor needs the num2words package, not installed here)."""
    tok = tokenizer("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")
    model = tf.Idefics3ForConditionalGeneration(tf.Idefics3Config(
        vision_config=tf.Idefics3VisionConfig(**VISION),
        text_config=tf.LlamaConfig(vocab_size=len(tok) + N_BINS, num_key_value_heads=2, **TINY),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=1))
    images = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                          max_image_size={"longest_edge": 32})
    processor = tf.Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4)
    return model, processor, "<image>" + PROMPT


ARCHITECTURES: dict[str, Callable[[], tuple[torch.nn.Module, object, str]]] = {
    "llava": llava, "paligemma": paligemma, "idefics3": idefics3}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_an_architecture_acts_scores_trains_and_round_trips(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, processor, prompt = ARCHITECTURES[name]()
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    tok = getattr(processor, "tokenizer", processor)
    config = PolicyConfig(chunk_size=2, action_dim=4, image_size=32, prompt=prompt,
                          action_bounds=ActionTokenizer((-1.0,) * 3 + (0.0,), (1.0,) * 4).to_json(),
                          placeholder_token_ids=[tok.pad_token_id] * 8)
    policy = VLAPolicy.load(tmp_path / "base", policy_config=config)
    assert policy.action_token_offset == len(tok)
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    batch = (images, None, INSTRUCTIONS)
    inputs = policy.model_inputs(*batch)
    if "token_type_ids" in inputs:  # PaliGemma: the placeholders are suffix tokens, as its generate() makes them
        assert inputs["token_type_ids"].shape == inputs["input_ids"].shape
        assert inputs["token_type_ids"][:, -8:].eq(1).all() and inputs["token_type_ids"][:, :-8].eq(0).all()
    out = policy.act(*batch, greedy=False, temperature=1.6, generator=torch.Generator().manual_seed(0))
    assert out.actions.shape == (2, 2, 4)
    np.testing.assert_allclose(out.token_log_probs,
                               direct_log_probs(policy, batch, out.token_ids - policy.action_token_offset, 1.6),
                               atol=1e-4)
    one = policy.act(images[1:], None, INSTRUCTIONS[1:], greedy=True).log_probs
    np.testing.assert_allclose(policy.act(*batch, greedy=True).log_probs[1:], one, atol=1e-5)

    policy.configure_finetuning(LORA)
    learner = GRPOLearner(policy, CFG, tmp_path / "run", tensorboard=False)
    rollouts(policy, learner.buffer)
    groups = learner.buffer.pop_batch(1)
    before = chunk_log_probs(policy, groups)
    learner.update(groups)
    after = chunk_log_probs(policy, groups)
    change = np.array([a - b for (b, _), (a, _) in zip(before, after, strict=True)])
    success = np.array([s for _, s in before])
    assert change[success].mean() > 0 > change[~success].mean(), change

    policy.save(tmp_path / "trained")
    again = VLAPolicy.load(tmp_path / "trained")
    np.testing.assert_allclose(again.act(*batch, greedy=True).log_probs, policy.act(*batch, greedy=True).log_probs,
                               atol=1e-5)
