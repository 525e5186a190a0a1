"""The VLA policy core (no rclpy): action tokenizer, model wrapper, the tiny default model."""

from vla_rl_ros.policy.action_tokenizer import N_BINS, ActionTokenizer
from vla_rl_ros.policy.default import new_tiny_policy
from vla_rl_ros.policy.tiny_vla import TinyVLAConfig, TinyVLAForActions
from vla_rl_ros.policy.vla_policy import (
    ActOutput,
    CheckpointError,
    FinetuneConfig,
    PolicyConfig,
    VLAPolicy,
)

__all__ = [
    "N_BINS",
    "ActOutput",
    "ActionTokenizer",
    "CheckpointError",
    "FinetuneConfig",
    "PolicyConfig",
    "TinyVLAConfig",
    "TinyVLAForActions",
    "VLAPolicy",
    "new_tiny_policy",
]
