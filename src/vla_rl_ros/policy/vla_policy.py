"""`VLAPolicy`: any transformers image-text-to-text model as an action-token policy.

The OpenVLA-OFT / SimpleVLA-RL parallel decoding: the prompt is followed by C x A placeholder tokens,
ONE forward pass gives logits at those positions, the logits are restricted to the last 256 token ids
of the vocabulary (the action bins) and every token is sampled independently (temperature 1.6 for RL
rollouts, SimpleVLA-RL's value) or taken greedily. The log-prob of a chunk is the sum over its tokens.

A checkpoint directory holds a transformers model (safetensors), its processor or tokenizer, and
`vla_policy.json` (chunk size, camera, prompt, placeholder ids, action bounds). Loading never runs
pickle or remote code unless asked (`allow_pickle`, `trust_remote_code`)."""

from __future__ import annotations

import copy
import inspect
import json
import re
import shutil
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer

from vla_rl_ros.policy import tiny_vla  # noqa: F401  registers model_type "tiny_vla" with the Auto classes
from vla_rl_ros.policy.action_tokenizer import N_BINS, ActionTokenizer
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE

POLICY_FILE = "vla_policy.json"
# OpenVLA's prompt (Kim et al. 2024); a Llava-style processor also needs its image token in front.
DEFAULT_PROMPT = "What action should the robot take to {instruction}?"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Per-token processor outputs on the action placeholders, as the model's own generation extends them:
# PaliGemma's token_type_ids 1 (suffix: causal, like the other architectures' placeholders), Qwen2-VL's
# mm_token_type_ids 0 (text, not image).
PLACEHOLDER_VALUES = {"token_type_ids": 1, "mm_token_type_ids": 0}
MAX_CACHED_PROMPTS = 4096  # prompts (instructions) whose text facts are kept (_prompt_row, sequence_length)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as the Hugging Face Hub names models
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# peft "all-linear": every linear layer except the output head, as SimpleVLA-RL's LoRA on OpenVLA.
ALL_LINEAR = "all-linear"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded safely (pickle-only, corrupt, incomplete)."""


@dataclass
class PolicyConfig:
    """How a model is used as a policy; stored as vla_policy.json next to the weights."""

    chunk_size: int  # C: actions per chunk (one forward pass)
    action_dim: int  # A: numbers per action, e.g. 4 for [dx, dy, dz, gripper]
    action_bounds: dict  # ActionTokenizer.to_json(): per-dimension low/high from the demonstrations
    placeholder_token_ids: list[int]  # C*A ids appended after the prompt (one per action token)
    camera: str = "front"  # which camera image the policy sees
    image_size: int = 64  # images are resized to image_size x image_size before the model
    prompt: str = DEFAULT_PROMPT  # instruction prompt; must contain "{instruction}"
    action_names: list[str] = field(default_factory=list)  # optional, for reports

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.action_dim < 1:
            raise ValueError(f"chunk_size and action_dim must be >= 1, got {self.chunk_size}, {self.action_dim}")
        if len(self.placeholder_token_ids) != self.chunk_size * self.action_dim:
            raise ValueError(f"placeholder_token_ids needs chunk_size * action_dim = "
                             f"{self.chunk_size * self.action_dim} ids, got {len(self.placeholder_token_ids)}")
        if "{instruction}" not in self.prompt:
            raise ValueError(f"prompt must contain '{{instruction}}', got {self.prompt!r}")
        tokenizer = ActionTokenizer.from_json(self.action_bounds)
        if tokenizer.n_bins != N_BINS:
            raise ValueError(f"action_bounds.n_bins={tokenizer.n_bins}: a bin is one of the last {N_BINS} token ids "
                             f"of the vocabulary, so there must be {N_BINS}")
        if tokenizer.action_dim != self.action_dim:
            raise ValueError(f"action_bounds cover {len(self.action_bounds['low'])} dimensions, "
                             f"action_dim is {self.action_dim}")

    @classmethod
    def load(cls, path: Path) -> PolicyConfig:
        """Read a vla_policy.json; CheckpointError naming the file and the key that is wrong, missing or
        unknown (what the policy node's start-up and updates catch), never a TypeError."""
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{path} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} holds a {type(data).__name__}, not an object of PolicyConfig keys")
        keys = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(keys))
        missing = [k for k, f in keys.items()
                   if k not in data and f.default is MISSING and f.default_factory is MISSING]
        if unknown or missing:
            raise CheckpointError(f"{path}: unknown keys {unknown}, missing keys {missing}; a PolicyConfig has "
                                  f"{list(keys)}")
        try:
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc


@dataclass
class FinetuneConfig:
    """Which parameters train: all of them ("full") or LoRA adapters through peft ("lora")."""

    mode: str = "full"  # "full" or "lora"
    lora_rank: int = 8  # LoRA r
    lora_alpha: int = 16  # LoRA scaling numerator (alpha / r)
    lora_dropout: float = 0.0  # dropout on the LoRA input; 0 keeps the forward pass deterministic
    target_modules: list[str] | str = ALL_LINEAR  # module names for LoRA, or "all-linear"
    # recompute each transformer block's activations in the backward pass: less memory for more compute
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("full", "lora"):
            raise ValueError(f"mode must be 'full' or 'lora', got {self.mode!r}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")


@dataclass
class ActOutput:
    actions: np.ndarray  # (B, C, A) float32, robot units
    token_ids: np.ndarray  # (B, C*A) int64 vocabulary ids of the action tokens
    log_probs: np.ndarray  # (B,) float32 chunk log-prob (sum over tokens) at the given temperature
    token_log_probs: np.ndarray  # (B, C*A) float32 per-token log-probs


def resolve_checkpoint(name: str | Path, *, allow_pickle: bool = False) -> Path:
    """The directory a checkpoint name means: a directory as it is; otherwise a Hugging Face Hub model
    id (`org/name`) through huggingface_hub's cache: downloaded there if it is missing (its pickle
    weights only with allow_pickle), or only looked up with HF_HUB_OFFLINE=1. Anything else comes back
    as the path it names, for check_checkpoint_dir to refuse."""
    path = Path(name)
    if path.exists() or path.is_absolute() or not HUB_ID.fullmatch(str(name)):
        return path
    from huggingface_hub import snapshot_download  # only for a hub id: its import costs start-up time

    try:
        return Path(snapshot_download(str(name), ignore_patterns=None if allow_pickle else
                                      [f"*{suffix}" for suffix in PICKLE_SUFFIXES]))
    except OSError as exc:  # not cached while offline, unknown or private repository, no network
        raise FileNotFoundError(f"checkpoint {str(name)!r} is not a directory, nor a Hugging Face Hub model "
                                f"that huggingface_hub could get: {exc}") from exc


def check_checkpoint_dir(path: Path, *, allow_pickle: bool) -> None:
    """Clear errors before transformers sees the directory: missing, pickle-only, corrupt."""
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist (or is not a directory); "
                                "pass the folder written by VLAPolicy.save or save_pretrained")
    safetensors = sorted(path.glob("*.safetensors"))
    pickles = [p for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if not safetensors:
        if pickles and not allow_pickle:
            raise CheckpointError(
                f"{path} holds only pickle weights ({', '.join(p.name for p in pickles)}), which can run "
                "arbitrary code when loaded; convert them to safetensors (model.save_pretrained(dir, "
                "safe_serialization=True)) or pass allow_pickle=True if you trust the source")
        if not pickles:
            raise CheckpointError(f"{path} has no weight files (*.safetensors); is the save incomplete?")
    for file in safetensors:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except SafetensorError as err:
            raise CheckpointError(f"corrupt safetensors file {file}: {err}; re-save or re-copy the "
                                  "checkpoint") from err


def _on(device: torch.device, outputs: Any) -> dict[str, torch.Tensor]:
    """A processor's or tokenizer's numpy outputs as tensors on `device`. Numpy, then moved: "pt" would
    make the tensors on torch's default device, which need not be the policy's."""
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in dict(outputs).items()}


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    """Keep `value` under `key`, forgetting the oldest entry beyond MAX_CACHED_PROMPTS (free-form
    instructions, e.g. from real-world collection, would otherwise grow the cache without end)."""
    if len(cache) >= MAX_CACHED_PROMPTS:
        cache.pop(next(iter(cache)))
    cache[key] = value


def makes_own_positions(model: torch.nn.Module) -> bool:
    """Whether the model's own generation makes position ids other than the running count of the
    attention mask: Qwen2-VL's family, whose 3-D (M-RoPE) positions its forward computes from input_ids,
    the image grid and the mask when it is given none. 1-D positions passed in would replace them."""
    prepare = getattr(type(model), "_prepare_position_ids_for_generation", None)
    return prepare is not None and prepare is not GenerationMixin._prepare_position_ids_for_generation


class VLAPolicy:
    """A model + its processor + the action tokenizer; batched `act` and differentiable log-probs."""

    def __init__(self, model: torch.nn.Module, processor: Any, config: PolicyConfig) -> None:
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.action_tokenizer = ActionTokenizer.from_json(config.action_bounds)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # placeholders sit at the same (last) positions in every row
        self.vocab_size = int(self.base_model.get_output_embeddings().weight.shape[0])
        self.action_token_offset = self.vocab_size - N_BINS  # bin b <-> token id offset + b
        accepted = inspect.signature(self.base_model.forward).parameters
        self._passes_state = "state" in accepted
        self._passes_positions = "position_ids" in accepted and not makes_own_positions(self.base_model)
        self._passes_keep = "logits_to_keep" in accepted
        self._has_image_processor = hasattr(processor, "image_processor")
        self._fast: bool | None = None  # image preprocessing on the device (_image_inputs); None: not checked
        self._pad_values: dict[str, int] = {}  # per-token processor output -> its value on left padding
        self._prompt_rows: dict[str, dict[str, torch.Tensor]] = {}  # prompt -> its per-token outputs
        self._text_positions: dict[str, int] = {}  # instruction -> its chunk's model-input positions
        self._normalisation: tuple[torch.Tensor, torch.Tensor] | None = None  # (3, 1, 1) mean, std on the device
        self._inserted_positions: int | None = None  # positions the model adds to its inputs (measured)

    # --- shape and device facts ------------------------------------------------------------------
    @property
    def base_model(self) -> torch.nn.Module:
        """The transformers model underneath a peft wrapper (or the model itself)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def tokens_per_chunk(self) -> int:
        return self.config.chunk_size * self.config.action_dim

    @property
    def camera(self) -> str:
        return self.config.camera

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- loading and saving -----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: str = "float32",
             trust_remote_code: bool = False, allow_pickle: bool = False,
             policy_config: PolicyConfig | None = None) -> VLAPolicy:
        """Load a checkpoint directory, or a Hugging Face Hub model id (`resolve_checkpoint`).
        `policy_config` wraps a plain transformers checkpoint that has no vla_policy.json (e.g. a
        user's fine-tuned VLM)."""
        path = resolve_checkpoint(path, allow_pickle=allow_pickle)
        check_checkpoint_dir(path, allow_pickle=allow_pickle)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if policy_config is None:
            if not (path / POLICY_FILE).is_file():
                raise CheckpointError(f"{path} has no {POLICY_FILE}; pass policy_config=PolicyConfig(...) to "
                                      "wrap a plain transformers checkpoint")
            policy_config = PolicyConfig.load(path / POLICY_FILE)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        return cls(model.to(device), processor, policy_config)

    def save(self, path: str | Path) -> None:
        """Write a self-contained checkpoint (LoRA adapters merged into a copy of the weights).
        Written to a temporary sibling and renamed, so a reader never sees half a checkpoint."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            self.processor.save_pretrained(tmp)
            (tmp / POLICY_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    # --- fine-tuning --------------------------------------------------------------------------------
    def configure_finetuning(self, finetune: FinetuneConfig) -> None:
        """Full fine-tuning (every parameter trains) or LoRA adapters through peft; optionally with
        activation checkpointing."""
        if finetune.mode == "full":
            for parameter in self.model.parameters():
                parameter.requires_grad_(True)
        else:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=finetune.lora_rank, lora_alpha=finetune.lora_alpha,
                              lora_dropout=finetune.lora_dropout, target_modules=finetune.target_modules)
            self.model = get_peft_model(self.base_model, lora)
        if finetune.activation_checkpointing:
            # transformers checkpoints its blocks (GradientCheckpointingLayer) only in training mode; the
            # policy runs in eval mode (no dropout), so only those blocks are switched. Their forward pass
            # stays the eval one where their config has no dropout (attention_dropout 0, the usual VLA
            # setting); a model with dropout in its blocks trains with it on.
            enable = getattr(self.base_model, "activation_checkpointing_enable", None)
            if enable is None:  # an older transformers (5.17, for one): the name it has, deprecated since
                enable = self.base_model.gradient_checkpointing_enable
            enable()
            for module in self.model.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.train()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # --- the forward pass ---------------------------------------------------------------------------
    def model_inputs(self, images: np.ndarray, state: np.ndarray | None, instructions: list[str]) -> dict:
        """Batch of observations -> model kwargs with C*A placeholders after each prompt.
        images (B, H, W, 3) uint8, state (B, P) float32."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
        B = images.shape[0]
        if len(instructions) != B:
            raise ValueError(f"got {B} images but {len(instructions)} instructions")
        prompts = [self.config.prompt.format(instruction=text) for text in instructions]
        pixels = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        if self._has_image_processor:
            inputs = self._image_inputs((pixels * 255).round(), prompts)
        else:
            inputs = _on(self.device, self.tokenizer(prompts, return_tensors="np", padding=True))
            inputs["pixel_values"] = pixels
        text = inputs["input_ids"].shape
        placeholders = torch.tensor(self.config.placeholder_token_ids, device=self.device).expand(B, -1)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], placeholders], dim=1)  # (B, T)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(placeholders)], dim=1)
        inputs["attention_mask"] = mask
        for key, value in inputs.items():  # the processor's other per-token inputs cover the placeholders
            if key in ("input_ids", "attention_mask") or value.shape != text:
                continue
            if key not in PLACEHOLDER_VALUES:
                raise ValueError(f"the processor gives {key!r} per prompt token; the wrapper does not know its "
                                 f"value on the action placeholders (it knows {sorted(PLACEHOLDER_VALUES)})")
            inputs[key] = F.pad(value, (0, placeholders.shape[1]), value=PLACEHOLDER_VALUES[key])
        if self._passes_positions:  # left padding must not shift positions: batched == one by one
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if self._passes_state:
            if state is None:
                raise ValueError("this model takes proprioception; pass state (B, P)")
            inputs["state"] = torch.as_tensor(np.asarray(state, np.float32), device=self.device)
        if self._passes_keep:
            inputs["logits_to_keep"] = self.tokens_per_chunk
        return inputs

    def _image_inputs(self, frames: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The processor's outputs for these frames ((B, 3, S, S), uint8 values as floats, on the policy's
        device) and prompts. Made on the device where the processor's image work is a rescale and a
        normalisation (SigLIP's, CLIP's) and its text outputs do not depend on the image: its text rows
        cached per prompt and left-padded here. Checked once against the processor itself, which
        serves otherwise (on the CPU: at batch 16 of 224 px it took 20 ms of a 28 ms preprocessing)."""
        if self._fast is None:
            self._fast = self._fast_path_agrees()
        return self._device_inputs(frames, prompts) if self._fast else self._processor_inputs(frames, prompts)

    def _device_inputs(self, frames: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        rows = [self._prompt_row(prompt) for prompt in prompts]
        longest = max(len(row["input_ids"]) for row in rows)
        inputs = {key: torch.stack([F.pad(row[key], (longest - len(row[key]), 0), value=pad) for row in rows])
                  for key, pad in self._pad_values.items()}
        processor = self.processor.image_processor
        pixels = frames * processor.rescale_factor if processor.do_rescale else frames
        if processor.do_normalize:
            if self._normalisation is None or self._normalisation[0].device != frames.device:
                mean, std = (torch.tensor(v, device=frames.device)[:, None, None]
                             for v in (processor.image_mean, processor.image_std))
                self._normalisation = mean, std
            mean, std = self._normalisation
            pixels = (pixels - mean) / std
        return {**_on(self.device, inputs), "pixel_values": pixels}

    def _processor_inputs(self, frames: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        # one list per prompt: to SmolVLM's processor a flat list is one prompt's images
        images = [[frame] for frame in frames.byte().permute(0, 2, 3, 1).cpu().numpy()]
        inputs = self.processor(images=images, text=prompts, return_tensors="np", padding=True)
        inputs.pop("labels", None)  # PaliGemma's processor adds them: the model would compute a loss
        return _on(self.device, inputs)

    def _prompt_row(self, prompt: str) -> dict[str, torch.Tensor]:
        """The processor's per-token outputs for one prompt (on the CPU; the same for any image)."""
        row = self._prompt_rows.get(prompt)
        if row is None:
            blank = torch.zeros((1, 3, self.image_size, self.image_size), device="cpu")
            row = {k: v[0].cpu() for k, v in self._processor_inputs(blank, [prompt]).items() if k in self._pad_values}
            _remember(self._prompt_rows, prompt, row)
        return row

    def _fast_path_agrees(self) -> bool:
        """Whether the device path gives the processor's outputs, on two random images and two prompts of
        different lengths (so the check covers left padding, whose values it learns from them)."""
        processor = self.processor.image_processor
        if not all(hasattr(processor, a) for a in ("do_rescale", "rescale_factor", "do_normalize", "image_mean",
                                                   "image_std")):
            return False
        frames = torch.randint(0, 256, (2, 3, self.image_size, self.image_size), device="cpu",
                               generator=torch.Generator().manual_seed(0)).float().to(self.device)
        prompts = [self.config.prompt.format(instruction=text) for text in ("", "pick up the object on the left")]
        want = self._processor_inputs(frames, prompts)
        lengths = want["attention_mask"].sum(1)
        if lengths[0] == lengths[1]:
            return False  # no padding to learn from
        shorter = int(lengths.argmin())
        self._pad_values = {k: v[shorter, 0].item() for k, v in want.items()
                            if k != "pixel_values" and v.shape == want["input_ids"].shape}
        try:
            got = self._device_inputs(frames, prompts)
        except (RuntimeError, ValueError, TypeError, IndexError):  # e.g. a scalar image_mean: not this path
            return False
        finally:
            self._prompt_rows.clear()
        return got.keys() == want.keys() and all(
            got[k].shape == want[k].shape and torch.allclose(got[k].float(), want[k].float(), atol=1e-5) for k in want)

    def action_logits(self, images: np.ndarray, state: np.ndarray | None, instructions: list[str]) -> torch.Tensor:
        """(B, C*A, 256) float32 logits over the action bins at the placeholder positions."""
        logits = self.model(**self.model_inputs(images, state, instructions)).logits  # (B, T', V)
        return logits[:, -self.tokens_per_chunk:, self.action_token_offset:].float()

    def act(self, images: np.ndarray, state: np.ndarray | None, instructions: list[str], *, greedy: bool,
            temperature: float = ROLLOUT_TEMPERATURE, generator: torch.Generator | None = None) -> ActOutput:
        """One forward pass -> a chunk per observation. Log-probs are under logits / temperature
        whether sampled or greedy (what the learner recomputes)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
        with torch.inference_mode():
            log_p = F.log_softmax(self.action_logits(images, state, instructions) / temperature, -1)
            B = log_p.shape[0]
            if greedy:
                bins = log_p.argmax(-1)  # (B, C*A)
            else:
                bins = torch.multinomial(log_p.exp().reshape(-1, N_BINS), 1, generator=generator).reshape(B, -1)
            token_lp = log_p.gather(-1, bins[..., None])[..., 0]  # (B, C*A)
        bins_np = bins.cpu().numpy()
        actions = self.action_tokenizer.decode(bins_np.reshape(B, self.chunk_size, self.action_dim))
        token_lp_np = token_lp.cpu().numpy().astype(np.float32)
        return ActOutput(actions=actions, token_ids=bins_np + self.action_token_offset,
                         log_probs=token_lp_np.sum(-1), token_log_probs=token_lp_np)

    def sequence_length(self, instruction: str) -> int:
        """The longest sequence a transformer block sees for one chunk of this instruction: its prompt,
        image tokens and action placeholders, plus the positions the model inserts itself (image
        patches that a tiny-VLA- or Prismatic-style model puts before the text). What a forward pass's
        activation memory grows with; the learner sizes its passes by it."""
        text = self._text_positions.get(instruction)
        if text is None:
            text = self.model_inputs(*self._blank_observation(), [instruction])["input_ids"].shape[1]
            _remember(self._text_positions, instruction, text)
        if self._inserted_positions is None:
            self._inserted_positions = max(self._longest_block_input(instruction) - text, 0)
        return text + self._inserted_positions

    def _longest_block_input(self, instruction: str) -> int:
        """The longest sequence any transformer block sees in a forward pass of one blank observation.
        Every rank of a sharded learner runs it at the same point (the forward pass is a collective
        there): GradientSteps asks for a sequence length when it is built."""
        longest = [0]

        def note(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor) and hidden.ndim >= 2:
                longest[0] = max(longest[0], hidden.shape[-2])  # (..., L, D)

        hooks = [m.register_forward_pre_hook(note, with_kwargs=True) for m in self.model.modules()
                 if isinstance(m, GradientCheckpointingLayer)]
        try:
            with torch.no_grad():  # not inference mode: a sharded model's gathered weights are reused in training
                self.action_logits(*self._blank_observation(), [instruction])
        finally:
            for hook in hooks:
                hook.remove()
        return longest[0]

    def _blank_observation(self) -> tuple[np.ndarray, np.ndarray | None]:
        """One black image (and a zero state where the model takes one)."""
        size = getattr(self.base_model.config, "proprio_dim", None)
        state = np.zeros((1, size), np.float32) if self._passes_state and size else None
        return np.zeros((1, self.image_size, self.image_size, 3), np.uint8), state

    def check_tokens(self, token_ids: np.ndarray, state: np.ndarray | None = None) -> None:
        """ValueError unless token_ids are (B, C*A) action-token ids of this policy and state, if the model
        takes one, is (B, P) of its size: what a sample must be to be scored (the learner checks each
        trajectory on arrival, so one malformed message cannot fail an update); no rows pass."""
        ids = np.asarray(token_ids)
        if ids.ndim == 2 and len(ids) == 0:
            return  # no chunks (the record of a withheld trajectory): nothing to score
        if ids.ndim != 2 or ids.shape[1] != self.tokens_per_chunk or \
                ids.min() < self.action_token_offset or ids.max() >= self.vocab_size:
            raise ValueError(f"token_ids must be (B, {self.tokens_per_chunk}) action-token ids in "
                             f"[{self.action_token_offset}, {self.vocab_size}), got shape {ids.shape}"
                             + (f" and ids in [{ids.min()}, {ids.max()}]" if ids.size else ""))
        size = getattr(self.base_model.config, "proprio_dim", None)
        if state is not None and self._passes_state and size and np.shape(state) != (len(ids), size):
            raise ValueError(f"state must be ({len(ids)}, {size}) for this model, got {np.shape(state)}")

    def token_log_probs(self, images: np.ndarray, state: np.ndarray | None, instructions: list[str],
                        token_ids: torch.Tensor | np.ndarray, *, temperature: float) -> torch.Tensor:
        """(B, C*A) differentiable log-probs of given action tokens, logits divided by temperature
        before the log-softmax (as veRL / SimpleVLA-RL do)."""
        self.check_tokens(token_ids.cpu().numpy() if isinstance(token_ids, torch.Tensor) else token_ids)
        bins = torch.as_tensor(np.asarray(token_ids), device=self.device) - self.action_token_offset
        log_p = F.log_softmax(self.action_logits(images, state, instructions) / temperature, -1)
        return log_p.gather(-1, bins[..., None].long())[..., 0]


def load_trainable(checkpoint: str | Path, finetune: FinetuneConfig, dtype: str, device: str, *,
                   trust_remote_code: bool = False) -> VLAPolicy:
    """A checkpoint with its fine-tuning configured: what a learner trains. Module level, so that a
    distributed learner's rank 0 can send it, bound to its settings, to ranks on other devices."""
    policy = VLAPolicy.load(checkpoint, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    policy.configure_finetuning(finetune)
    return policy
