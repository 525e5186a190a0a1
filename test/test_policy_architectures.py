"""The VLA architectures users bring, as tiny random-init transformers models built here (no download),
through the same VLAPolicy wrapper and GRPO update: Llava (SigLIP + Llama), PaliGemma (SigLIP +
Gemma, token_type_ids), Idefics3 (SmolVLM v1's model: SigLIP-style encoder + Llama,
pixel_attention_mask), SmolVLM (SmolVLM2's classes) and Qwen2.5-VL (its own 3-D M-RoPE positions,
mm_token_type_ids).

For each: sampled chunks whose log-probs equal a direct computation from the model's logits, a
left-padded batch that scores as its rows one by one, action logits equal to those under the position
ids the model's own generate() makes, one LoRA GRPO update that moves probability towards the
rewarded tokens, and a save/load round trip. The action bins are 256 ids past the tokenizer's
vocabulary, as a VLA adds them.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from test_policy_wrapper import direct_log_probs
from test_rl_vla import CFG, INSTRUCTIONS, LORA, chunk_log_probs, rollouts

from vla_rl_ros.policy import ActionTokenizer, FinetuneConfig, PolicyConfig, VLAPolicy, vla_policy
from vla_rl_ros.policy.action_tokenizer import N_BINS
from vla_rl_ros.policy.tiny_vla import build_word_tokenizer
from vla_rl_ros.policy.vla_policy import load_trainable
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
    """SmolVLM v1 checkpoints are this model and processor (SmolVLM2 ones: `smolvlm`)."""
    return idefics3_family(tf.Idefics3ForConditionalGeneration, tf.Idefics3Config, tf.Idefics3VisionConfig,
                           tf.Idefics3ImageProcessorPil, tf.Idefics3Processor)


def idefics3_family(model_class: type, config_class: type, vision_class: type, images_class: type,
                    processor_class: type) -> tuple[torch.nn.Module, object, str]:
    """Idefics3 and SmolVLM: the same layout under their own classes."""
    tok = tokenizer("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")
    model = model_class(config_class(
        vision_config=vision_class(**VISION),
        text_config=tf.LlamaConfig(vocab_size=len(tok) + N_BINS, num_key_value_heads=2, **TINY),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=1))
    images = images_class(do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    return model, processor_class(image_processor=images, tokenizer=tok, image_seq_len=4), "<image>" + PROMPT


# SmolVLM's and Qwen2.5-VL's processors take a video processor, which transformers builds only with
# torchvision (not installable in this venv: PyPI's build for its torch is a CUDA one that fails to load);
# their constructors check its class even when it is None. These drop it (their image and text path is
# the processors' own) and are registered so that AutoProcessor loads them from a checkpoint.
class ImageOnlySmolVLMProcessor(tf.SmolVLMProcessor):
    def __init__(self, image_processor: object, tokenizer: object, image_seq_len: int = 169,
                 chat_template: str | None = None, **kwargs: object) -> None:
        super().__init__(image_processor, tokenizer, None, image_seq_len, chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(tf.Qwen2_5_VLProcessor):  # noqa: N801  the processor's name + a prefix
    def __init__(self, image_processor: object = None, tokenizer: object = None, chat_template: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template, **kwargs)


def smolvlm() -> tuple[torch.nn.Module, object, str]:
    tf.AutoProcessor.register(tf.SmolVLMConfig, ImageOnlySmolVLMProcessor, exist_ok=True)
    return idefics3_family(tf.SmolVLMForConditionalGeneration, tf.SmolVLMConfig, tf.SmolVLMVisionConfig,
                           tf.SmolVLMImageProcessorPil, ImageOnlySmolVLMProcessor)


def qwen2_5_vl() -> tuple[torch.nn.Module, object, str]:
    tok = tokenizer("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    ids = tok.convert_tokens_to_ids
    # 8-pixel patches merged 2 x 2: a 32 x 32 image is 4 image tokens on a 2 x 2 grid of M-RoPE positions
    vision = tf.Qwen2_5_VLVisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                                       spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32,
                                       window_size=32, fullatt_block_indexes=[0])
    text = tf.Qwen2_5_VLTextConfig(vocab_size=len(tok) + N_BINS, num_key_value_heads=2, bos_token_id=None,
                                   eos_token_id=None, rope_parameters={"rope_type": "default",
                                                                       "mrope_section": [2, 3, 3]}, **TINY)
    model = tf.Qwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>")))
    images = tf.Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32,
                                         max_pixels=32 * 32)
    tf.AutoProcessor.register(tf.Qwen2_5_VLConfig, ImageOnlyQwen2_5_VLProcessor, exist_ok=True)
    return model, ImageOnlyQwen2_5_VLProcessor(images, tok), "<|vision_start|><|image_pad|><|vision_end|>" + PROMPT


ARCHITECTURES: dict[str, Callable[[], tuple[torch.nn.Module, object, str]]] = {
    "llava": llava, "paligemma": paligemma, "idefics3": idefics3, "smolvlm": smolvlm, "qwen2_5_vl": qwen2_5_vl}


def policy_config(tok: tf.PreTrainedTokenizerBase, prompt: str) -> PolicyConfig:
    return PolicyConfig(chunk_size=2, action_dim=4, image_size=32, prompt=prompt,
                        action_bounds=ActionTokenizer((-1.0,) * 3 + (0.0,), (1.0,) * 4).to_json(),
                        placeholder_token_ids=[tok.pad_token_id] * 8)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_an_architecture_acts_scores_trains_and_round_trips(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, processor, prompt = ARCHITECTURES[name]()
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    tok = getattr(processor, "tokenizer", processor)
    policy = VLAPolicy.load(tmp_path / "base", policy_config=policy_config(tok, prompt))
    assert policy.action_token_offset == len(tok)
    assert_acts_scores_trains_and_round_trips(policy, tmp_path)


ON_DEVICE = {"llava", "paligemma"}  # SigLIP's image processor: a rescale and a normalisation


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_inputs_made_on_the_device_equal_the_processors(name: str, tmp_path: Path, monkeypatch) -> None:
    """Where the processor's image work is a rescale and a normalisation, the wrapper makes the model's
    inputs on the policy's device (its text rows cached per prompt, left-padded by the wrapper): equal
    to the processor's for new images and prompts of other lengths, also once the bounded cache has
    forgotten a prompt and makes its row again. Elsewhere the processor serves."""
    monkeypatch.setattr(vla_policy, "MAX_CACHED_PROMPTS", 2)
    model, processor, prompt = ARCHITECTURES[name]()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    policy = VLAPolicy.load(tmp_path, policy_config=policy_config(getattr(processor, "tokenizer", processor), prompt))
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    texts = ["reach", INSTRUCTIONS[0], "pick up the the cube cube"]
    made = [policy.model_inputs(images, None, texts) for _ in range(2)]  # the second remakes a forgotten row
    assert policy._fast == (name in ON_DEVICE)
    assert len(policy._prompt_rows) <= 2
    policy._fast = False  # the processor's own outputs
    want = policy.model_inputs(images, None, texts)
    for inputs in made:
        assert inputs.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(inputs[key], want[key], atol=1e-5, rtol=0)


def assert_acts_scores_trains_and_round_trips(policy: VLAPolicy, tmp_path: Path, **load: bool) -> None:
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
    padded = (images, None, [INSTRUCTIONS[0], "reach"])  # the second row is shorter: left-padded in a batch
    assert not policy.model_inputs(*padded)["attention_mask"][:, 0].all()
    alone = [policy.act(images[i:i + 1], None, padded[2][i:i + 1], greedy=True).log_probs[0] for i in range(2)]
    np.testing.assert_allclose(policy.act(*padded, greedy=True).log_probs, alone, atol=1e-5)
    if hasattr(policy.base_model, "_prepare_position_ids_for_generation"):
        with torch.no_grad():
            np.testing.assert_allclose(policy.action_logits(*padded), generation_action_logits(policy, padded),
                                       atol=1e-6)

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
    again = VLAPolicy.load(tmp_path / "trained", **load)
    np.testing.assert_allclose(again.act(*batch, greedy=True).log_probs, policy.act(*batch, greedy=True).log_probs,
                               atol=1e-5)


def generation_action_logits(policy: VLAPolicy, batch: tuple) -> torch.Tensor:
    """The action logits under the position ids the model's own generate() makes for these inputs
    (Qwen2.5-VL's 3-D M-RoPE ones; the mask's running count for the others)."""
    inputs = policy.model_inputs(*batch)
    inputs.pop("position_ids", None)
    model = policy.base_model
    positions = model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))
    logits = model(**inputs, position_ids=positions).logits
    return logits[:, -policy.tokens_per_chunk:, policy.action_token_offset:].float()


# An OpenVLA-style checkpoint: its model code ships with it (auto_map in config.json) and is not part of
# transformers or this package. A tiny one: the pooled image and the prompt's mean embedding score the bins.
REMOTE_CONFIG = """
from transformers import PretrainedConfig


class RemoteVLAConfig(PretrainedConfig):
    model_type = "remote_vla"

    def __init__(self, vocab_size=64, hidden_size=32, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        super().__init__(**kwargs)
"""
REMOTE_MODEL = """
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_remote_vla import RemoteVLAConfig


class RemoteVLAForActions(PreTrainedModel):
    config_class = RemoteVLAConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.image = nn.Linear(3, config.hidden_size)
        self.position = nn.Embedding(64, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, pixel_values, attention_mask=None, **kwargs):
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        prompt = (self.embed(input_ids) * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
        image = self.image(pixel_values.mean((2, 3))).unsqueeze(1)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return CausalLMOutputWithPast(logits=self.head(torch.tanh(prompt + image + self.position(positions))))
"""


def test_a_checkpoint_with_its_own_model_code_loads_only_when_trusted(tmp_path: Path) -> None:
    code = tmp_path / "shipped_vla"  # the shipped code, as its author imports and saves it
    code.mkdir()
    (code / "configuration_remote_vla.py").write_text(REMOTE_CONFIG)
    (code / "modeling_remote_vla.py").write_text(REMOTE_MODEL)
    (code / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        config_cls = importlib.import_module("shipped_vla.configuration_remote_vla").RemoteVLAConfig
        model_cls = importlib.import_module("shipped_vla.modeling_remote_vla").RemoteVLAForActions
    finally:
        sys.path.remove(str(tmp_path))
    tok = tokenizer()
    config_cls.register_for_auto_class()
    model_cls.register_for_auto_class("AutoModelForImageTextToText")
    torch.manual_seed(0)
    model_cls(config_cls(vocab_size=len(tok) + N_BINS)).save_pretrained(tmp_path / "remote")
    tok.save_pretrained(tmp_path / "remote")
    (tmp_path / "remote" / "vla_policy.json").write_text(json.dumps(asdict(policy_config(tok, PROMPT))))
    assert "auto_map" in json.loads((tmp_path / "remote" / "config.json").read_text())

    with pytest.raises(ValueError, match="trust_remote_code"):
        VLAPolicy.load(tmp_path / "remote")
    lora = FinetuneConfig(mode="lora", lora_rank=4)
    with pytest.raises(ValueError, match="trust_remote_code"):  # the learner's load, as its parameter leaves it
        load_trainable(tmp_path / "remote", lora, "float32", "cpu")
    assert load_trainable(tmp_path / "remote", lora, "float32", "cpu", trust_remote_code=True).trainable_parameters()
    policy = VLAPolicy.load(tmp_path / "remote", trust_remote_code=True)
    assert type(policy.model).__name__ == "RemoteVLAForActions"
    assert_acts_scores_trains_and_round_trips(policy, tmp_path, trust_remote_code=True)
