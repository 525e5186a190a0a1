"""A fresh embedded-default policy (the tiny VLA) sized from demonstrations, before SFT."""

from __future__ import annotations

import numpy as np

from vla_rl_ros.policy.action_tokenizer import ActionTokenizer
from vla_rl_ros.policy.tiny_vla import SLOT_TOKEN, build_tiny_vla
from vla_rl_ros.policy.vla_policy import DEFAULT_PROMPT, PolicyConfig, VLAPolicy


def new_tiny_policy(instructions: list[str], actions: np.ndarray, *, chunk_size: int, state_dim: int,
                    camera: str = "front", image_size: int = 64, action_names: list[str] | None = None,
                    **model_kwargs) -> VLAPolicy:
    """Untrained tiny VLA: word vocabulary from `instructions` and the prompt, action bounds from the
    demonstration `actions` (N, A), a proprioception token of `state_dim` (0 = none).
    `model_kwargs` go to TinyVLAConfig (vision kind, sizes)."""
    actions = np.asarray(actions, np.float32)
    action_dim = actions.shape[-1]
    model, tokenizer = build_tiny_vla([DEFAULT_PROMPT, *instructions], chunk_size=chunk_size,
                                      action_dim=action_dim, image_size=image_size, proprio_dim=state_dim,
                                      **model_kwargs)
    slots = tokenizer.convert_tokens_to_ids([SLOT_TOKEN.format(i) for i in range(chunk_size * action_dim)])
    config = PolicyConfig(chunk_size=chunk_size, action_dim=action_dim,
                          action_bounds=ActionTokenizer.fit(actions).to_json(), placeholder_token_ids=slots,
                          camera=camera, image_size=image_size, action_names=list(action_names or []))
    return VLAPolicy(model, tokenizer, config)
