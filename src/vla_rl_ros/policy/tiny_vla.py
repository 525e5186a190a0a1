"""The embedded default: a tiny vision-language-action model that trains on two CPU cores.

A transformers `PreTrainedModel` of the project's own (`model_type="tiny_vla"`), registered with
`AutoConfig` and `AutoModelForImageTextToText`, so it saves with `save_pretrained` (safetensors) and
loads through the same path as any user checkpoint. Why not a stock Llava: LEARNING_PROBE.md found a
from-scratch SigLIP ViT barely learned to see from a few hundred frames; a convolutional stem with
coordinate channels (CoordConv, Liu et al. 2018) or spatial-softmax keypoints (Levine et al. 2016)
and a proprioception token are the robot-learning remedies. docs/policy.md has the comparison.

Sequence fed to the decoder (a transformers `LlamaModel`):
    [image tokens (N)] [proprio token (0 or 1)] [text tokens incl. action placeholders (T)]
The logits returned cover only the T text positions, so they line up with `input_ids` the way a
Llava's do (there the image tokens sit inside `input_ids`)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    LlamaConfig,
    LlamaModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

VISION_KINDS = ("grid", "keypoints")
# Pixel statistics for normalising [0, 1] images to roughly zero mean, unit spread.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SLOT_TOKEN = "<slot_{}>"
ACTION_TOKEN = "<act_{}>"
BLOCK = 3  # modules per conv block in the stem: conv, norm, activation


class TinyVLAConfig(PretrainedConfig):
    """Sizes of the tiny VLA. Defaults: about 1 M parameters, 64 px images."""

    model_type = "tiny_vla"

    def __init__(
        self,
        vocab_size: int = 512,  # total ids; the last 256 are action bins
        hidden_size: int = 128,  # decoder width, also the width of image/proprio tokens
        intermediate_size: int = 384,  # decoder MLP width
        num_hidden_layers: int = 3,  # decoder layers
        num_attention_heads: int = 4,
        max_position_embeddings: int = 256,  # longest prefix + prompt + placeholders
        rope_theta: float = 10000.0,
        image_size: int = 64,  # square input images, pixels
        vision: str = "grid",  # "grid": CoordConv feature grid tokens; "keypoints": spatial softmax
        conv_channels: tuple[int, ...] = (32, 64, 128),  # one stride-2 conv per entry
        grid_size: int = 4,  # "grid": image tokens = grid_size ** 2 (adaptive average pooling)
        num_keypoints: int = 16,  # "keypoints": one token per keypoint
        proprio_dim: int = 0,  # length of the state vector; 0 = no proprioception token
        state_mean: list[float] | None = None,  # (P,) proprio normalisation from the demonstrations
        state_std: list[float] | None = None,  # (P,); None: the state goes in as it is
        film: bool = False,  # condition every conv block on the instruction (FiLM, as RT-1)
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        if vision not in VISION_KINDS:
            raise ValueError(f"vision must be one of {VISION_KINDS}, got {vision!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_attention_heads "
                             f"{num_attention_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.image_size = image_size
        self.vision = vision
        self.conv_channels = list(conv_channels)
        self.grid_size = grid_size
        self.num_keypoints = num_keypoints
        self.proprio_dim = proprio_dim
        # Joint angles span radians while the TCP moves centimetres: normalised per dimension, a 1 cm
        # move is as visible to the proprio token as a joint's swing (LeRobot normalises state so too).
        if (state_mean is None) != (state_std is None):
            raise ValueError("give both state_mean and state_std, or neither")
        for name, stats in (("state_mean", state_mean), ("state_std", state_std)):
            if stats is not None and len(stats) != proprio_dim:
                raise ValueError(f"{name} has {len(stats)} entries but proprio_dim is {proprio_dim}")
        self.state_mean = None if state_mean is None else [float(v) for v in state_mean]
        self.state_std = None if state_std is None else [float(v) for v in state_std]
        self.film = film
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def decoder_config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_attention_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
        )


def coordinate_channels(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) x and y in [-1, 1] (CoordConv): lets convolutions know where they are."""
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)


class ConvEncoder(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> image tokens (B, N, D); with FiLM (Perez et al. 2018, as in
    RT-1) each conv block is scaled and shifted by the instruction, so the image tokens can already
    single out the named object instead of leaving that to the decoder."""

    def __init__(self, config: TinyVLAConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3 + 2  # RGB + coordinate channels
        for out in config.conv_channels:
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(8, out), nn.GELU()]
            channels = out
        self.stem = nn.Sequential(*layers)  # blocks of (conv, norm, activation)
        self.film = nn.ModuleList(nn.Linear(config.hidden_size, 2 * out) for out in config.conv_channels
                                  ) if config.film else None
        self.kind = config.vision
        D = config.hidden_size
        if self.kind == "grid":
            self.pool = nn.AdaptiveAvgPool2d(config.grid_size)
            self.proj = nn.Linear(channels + 2, D)  # features + the cell's coordinates
        else:
            self.keypoint_maps = nn.Conv2d(channels, config.num_keypoints, 1)
            self.keypoint_embed = nn.Parameter(torch.zeros(config.num_keypoints, D))
            self.proj = nn.Linear(2 + channels, D)  # keypoint (x, y) + features pooled under it

    def forward(self, pixel_values: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """text (B, D): the instruction summary FiLM conditions on (ignored without FiLM)."""
        x = (pixel_values - PIXEL_MEAN) / PIXEL_STD
        B, _, H, W = x.shape
        feats = torch.cat([x, coordinate_channels(B, H, W, x)], dim=1)
        for k in range(len(self.stem) // BLOCK):
            conv, norm, act = self.stem[BLOCK * k:BLOCK * (k + 1)]
            feats = norm(conv(feats))
            if self.film is not None:
                scale, shift = self.film[k](text)[..., None, None].chunk(2, dim=1)  # (B, F, 1, 1) each
                feats = feats * (1 + scale) + shift
            feats = act(feats)  # (B, F, h, w)
        _, _, h, w = feats.shape
        coords = coordinate_channels(B, h, w, feats)  # (B, 2, h, w)
        if self.kind == "grid":
            cells = torch.cat([self.pool(feats), self.pool(coords)], dim=1)  # (B, F + 2, g, g)
            return self.proj(cells.flatten(2).transpose(1, 2))  # (B, g*g, D)
        attn = self.keypoint_maps(feats).flatten(2).softmax(-1)  # (B, K, h*w)
        where = attn @ coords.flatten(2).transpose(1, 2)  # (B, K, 2) expected x, y
        what = attn @ feats.flatten(2).transpose(1, 2)  # (B, K, F)
        return self.proj(torch.cat([where, what], dim=-1)) + self.keypoint_embed  # (B, K, D)


class TinyVLAForActions(PreTrainedModel):
    """Conv image tokens + proprio token + a Llama decoder; logits over the text positions."""

    config_class = TinyVLAConfig
    base_model_prefix = "tiny_vla"
    main_input_name = "input_ids"
    _supports_sdpa = True
    supports_gradient_checkpointing = True  # its decoder's blocks checkpoint (activation_checkpointing)

    def __init__(self, config: TinyVLAConfig) -> None:
        super().__init__(config)
        self.vision = ConvEncoder(config)
        self.proprio = nn.Linear(config.proprio_dim, config.hidden_size) if config.proprio_dim else None
        self.decoder = LlamaModel(config.decoder_config())
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        else:
            super()._init_weights(module)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,  # (B, T)
        pixel_values: torch.Tensor,  # (B, 3, H, W) in [0, 1]
        attention_mask: torch.Tensor | None = None,  # (B, T), 0 on (left) padding
        state: torch.Tensor | None = None,  # (B, P) proprioception
        position_ids: torch.LongTensor | None = None,  # (B, T) text positions; from the mask if None
        logits_to_keep: int = 0,  # keep logits of the last k positions only (0 = all)
        **kwargs,
    ) -> CausalLMOutputWithPast:
        B = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_embeds = self.decoder.embed_tokens(input_ids)  # (B, T, D)
        weights = attention_mask.to(text_embeds.dtype)[..., None]  # (B, T, 1)
        summary = (text_embeds * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D) mean over the prompt
        prefix = [self.vision(pixel_values.to(self.dtype), summary)]  # (B, N, D)
        if self.proprio is not None:
            if state is None:
                raise ValueError(f"this model has a proprioception token (proprio_dim="
                                 f"{self.config.proprio_dim}); pass state (B, P)")
            state = state.to(self.dtype)
            if self.config.state_mean is not None:  # (P,) each; from the config, so loading restores them
                state = ((state - state.new_tensor(self.config.state_mean))
                         / state.new_tensor(self.config.state_std))
            prefix.append(self.proprio(state)[:, None])  # (B, 1, D)
        prefix_embeds = torch.cat(prefix, dim=1)  # (B, N', D)
        N = prefix_embeds.shape[1]
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        positions = torch.cat([torch.arange(N, device=input_ids.device).expand(B, N), position_ids + N], 1)
        mask = torch.cat([attention_mask.new_ones(B, N), attention_mask], dim=1)
        embeds = torch.cat([prefix_embeds, text_embeds], dim=1)  # (B, N'+T, D)
        hidden = self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        text = hidden[:, N:] if not logits_to_keep else hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.lm_head(text))


AutoConfig.register(TinyVLAConfig.model_type, TinyVLAConfig)
AutoModelForImageTextToText.register(TinyVLAConfig, TinyVLAForActions)


def build_word_tokenizer(texts: list[str], *, num_slots: int, num_action_tokens: int = 256,
                         vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """An offline word-level tokenizer for the instruction vocabulary `texts` (lower-cased words and
    punctuation), with `num_slots` action placeholder tokens and, as the LAST `num_action_tokens` ids,
    the action-bin tokens. `vocab_size` pads the word list with unused tokens to a fixed size."""
    words: list[str] = []
    splitter = pre_tokenizers.Whitespace()
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(text.lower()):
            if word not in words:
                words.append(word)
    specials = [PAD_TOKEN, UNK_TOKEN, *(SLOT_TOKEN.format(i) for i in range(num_slots))]
    body = specials + sorted(words)
    actions = [ACTION_TOKEN.format(i) for i in range(num_action_tokens)]
    if vocab_size is not None:
        spare = vocab_size - len(body) - len(actions)
        if spare < 0:
            raise ValueError(f"vocab_size {vocab_size} is too small for {len(body)} words and specials "
                             f"plus {len(actions)} action tokens; raise it to {len(body) + len(actions)}")
        body += [f"<unused_{i}>" for i in range(spare)]
    vocab = {token: i for i, token in enumerate(body + actions)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = splitter
    core.add_special_tokens([*specials, *actions])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN,
                                   padding_side="left")


def build_tiny_vla(texts: list[str], *, chunk_size: int, action_dim: int,
                   **config_kwargs) -> tuple[TinyVLAForActions, PreTrainedTokenizerFast]:
    """A fresh tiny VLA and its tokenizer (vocabulary from `texts`)."""
    tokenizer = build_word_tokenizer(texts, num_slots=chunk_size * action_dim)
    config = TinyVLAConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config_kwargs)
    return TinyVLAForActions(config), tokenizer
