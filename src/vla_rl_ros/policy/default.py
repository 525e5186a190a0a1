"""A fresh embedded-default policy (the tiny VLA) sized from demonstrations, before SFT."""

from __future__ import annotations

import numpy as np

from vla_rl_ros.policy.action_tokenizer import ActionTokenizer
from vla_rl_ros.policy.tiny_vla import SLOT_TOKEN, build_tiny_vla
from vla_rl_ros.policy.vla_policy import DEFAULT_PROMPT, PolicyConfig, VLAPolicy

STATE_STD_FLOOR = 1e-6  # robot units; below it a state dimension counts as constant


def new_tiny_policy(instructions: list[str], actions: np.ndarray, *, chunk_size: int, state_dim: int,
                    states: np.ndarray | None = None, camera: str = "front", image_size: int = 64,
                    action_names: list[str] | None = None, **model_kwargs) -> VLAPolicy:
    """Untrained tiny VLA: word vocabulary from `instructions` and the prompt, action bounds from the
    demonstration `actions` (N, A), a proprioception token of `state_dim` (0 = none), normalised by
    the mean and spread of the demonstration `states` (N, P) when given.
    `model_kwargs` go to TinyVLAConfig (vision kind, sizes)."""
    actions = np.asarray(actions, np.float32)
    action_dim = actions.shape[-1]
    if states is not None and state_dim:
        states = np.asarray(states, np.float64)
        if states.ndim != 2 or states.shape[1] != state_dim:
            raise ValueError(f"states must be (N, {state_dim}), got shape {states.shape}")
        # A constant dimension (a locked joint) keeps unit spread instead of dividing by zero.
        std = np.where(states.std(0) > STATE_STD_FLOOR, states.std(0), 1.0)
        model_kwargs |= {"state_mean": states.mean(0).tolist(), "state_std": std.tolist()}
    model, tokenizer = build_tiny_vla([DEFAULT_PROMPT, *instructions], chunk_size=chunk_size,
                                      action_dim=action_dim, image_size=image_size, proprio_dim=state_dim,
                                      **model_kwargs)
    slots = tokenizer.convert_tokens_to_ids([SLOT_TOKEN.format(i) for i in range(chunk_size * action_dim)])
    config = PolicyConfig(chunk_size=chunk_size, action_dim=action_dim,
                          action_bounds=ActionTokenizer.fit(actions).to_json(), placeholder_token_ids=slots,
                          camera=camera, image_size=image_size, action_names=list(action_names or []))
    return VLAPolicy(model, tokenizer, config)
