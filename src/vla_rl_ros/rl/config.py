"""GRPO settings: one dataclass, each field with its help text and where its value comes from.

SimpleVLA-RL (Li et al. 2025, arXiv:2509.09674) trains OpenVLA-OFT with veRL's GRPO; its LIBERO
script (examples/run_openvla_oft_rl_libero.sh) sets the values quoted as "SimpleVLA-RL" below.
Where our default differs it is because the policy here is a tiny model on two CPU cores, chosen
by the in-process probes of docs/grpo.md: one clipped step per update starved an early learner.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ADV_EPS = 1e-6  # veRL compute_grpo_outcome_advantage(epsilon=1e-6), used unchanged by SimpleVLA-RL
# The one default rollout temperature: the policy node's and act()'s. SimpleVLA-RL samples at 1.6; at 1.6
# the tiny policies' lift rollouts almost never succeed, at 1.0 from the starting policy over 90% of lift
# groups are mixed (docs/grpo.md). The learner has none: each Trajectory carries the one it was sampled at.
ROLLOUT_TEMPERATURE = 1.0
# The one default group size (SimpleVLA-RL n_samples=8): the episode manager's and grpo-local's. The
# learner has none: each EpisodeResult carries the size its manager scheduled.
GROUP_SIZE = 8
MIN_GROUP_SIZE = 2  # a group-relative baseline needs at least two rollouts (unbiased std of one is NaN)


# Fields of earlier versions that set memory use, not the maths: a run saved with one still resumes
# (its buffer's state.json holds the config it was built with).
RETIRED_FIELDS = frozenset({"forward_chunks"})  # became forward_tokens, a budget in token positions


@dataclass(frozen=True)
class GRPOConfig:
    """All GRPO settings. Field groups: groups and sampling, loss, optimiser, update schedule, staleness."""

    # --- groups ----------------------------------------------------------------------------------
    # No group size and no temperature: they travel with the data (EpisodeResult.group_size,
    # Trajectory.temperature), so the learner cannot disagree with the nodes that scheduled and sampled.
    groups_per_update: int = field(default=16, metadata={
        "help": "kept groups per update (SimpleVLA-RL train_batch_size=32 tasks; 16 on 2 CPU cores, "
                "docs/grpo.md)"})

    dynamic_sampling: bool = field(default=True, metadata={
        "help": "keep only groups with some but not all successes (SimpleVLA-RL/DAPO filter_groups); off, "
                "all-equal groups are trained on with zero advantage (no gradient, but the update runs)"})

    # --- loss ----------------------------------------------------------------------------------
    clip_low: float = field(default=0.2, metadata={
        "help": "PPO ratio lower clip, ratio >= 1 - clip_low (SimpleVLA-RL clip_ratio_low=0.2)"})
    clip_high: float = field(default=0.28, metadata={
        "help": "PPO ratio upper clip, ratio <= 1 + clip_high; clip-higher from DAPO keeps rare "
                "successful tokens growing (SimpleVLA-RL clip_ratio_high=0.28)"})
    adv_eps: float = field(default=ADV_EPS, metadata={
        "help": "added to the group std in (R - mean) / (std + eps) (veRL compute_grpo_outcome_advantage "
                "epsilon=1e-6)"})
    # No KL term and no entropy bonus (SimpleVLA-RL kl_coef=0.0, entropy_coeff=0.0): there are no
    # fields for them, so they cannot be switched on by accident.

    # --- optimiser -----------------------------------------------------------------------------
    lr: float = field(default=1e-4, metadata={
        "help": "AdamW learning rate (SimpleVLA-RL 5e-6 for a 7B model; for the 0.9 M-parameter tiny VLA "
                "1e-4 with 16 groups per update gave the largest lift gains, 2e-4 lost ground; docs/grpo.md)"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={
        "help": "AdamW betas (veRL default (0.9, 0.999))"})
    weight_decay: float = field(default=0.01, metadata={
        "help": "AdamW weight decay (veRL default 1e-2)"})
    grad_clip: float = field(default=1.0, metadata={
        "help": "max global gradient norm per mini-batch step (SimpleVLA-RL grad_clip=1)"})

    # --- update schedule -----------------------------------------------------------------------
    epochs: int = field(default=2, metadata={
        "help": "passes over the update's trajectories (SimpleVLA-RL ppo_epochs=1 with many more "
                "trajectories per update; the probe needed 2 so the clip ever became active)"})
    minibatch_size: int = field(default=32, metadata={
        "help": "trajectories per clipped optimiser step; with 16 groups x 8 rollouts and 2 epochs "
                "that is 8 steps per update"})
    forward_tokens: int = field(default=16384, metadata={
        "help": "most token positions in one policy forward pass: its chunks x the longest chunk's "
                "sequence (image tokens, prompt, action tokens), what activation memory grows with; a "
                "mini-batch with more is split into passes with gradient accumulation, a long trajectory "
                "over several (memory, not maths; veRL's ppo_max_token_len_per_gpu default)"})

    # --- staleness -----------------------------------------------------------------------------
    max_policy_lag: int = field(default=1, metadata={
        "help": "drop a trajectory whose policy version is more than this many versions behind the "
                "learner's; 0 is strictly on-policy as in SimpleVLA-RL, 1 keeps episodes that were "
                "running while the previous update was published"})

    def __post_init__(self) -> None:
        for name in ("groups_per_update", "epochs", "minibatch_size", "forward_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if not 0 < self.clip_low < 1:
            raise ValueError(f"clip_low={self.clip_low}: the ratio floor 1 - clip_low must lie in (0, 1); "
                             "use e.g. 0.2")
        if self.clip_high <= 0:
            raise ValueError(f"clip_high={self.clip_high}: must be > 0; use e.g. 0.28")
        if self.adv_eps <= 0:
            raise ValueError(f"adv_eps={self.adv_eps}: must be > 0 so all-equal groups give 0, not NaN")
        if self.lr <= 0 or self.grad_clip <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr}, grad_clip={self.grad_clip}, weight_decay={self.weight_decay}: "
                             "lr and grad_clip must be > 0 and weight_decay >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas}: two numbers in [0, 1), e.g. (0.9, 0.999)")
        if self.max_policy_lag < 0:
            raise ValueError(f"max_policy_lag={self.max_policy_lag}: must be >= 0 (0 = strictly on-policy)")

    def to_dict(self) -> dict:
        """The GRPOConfig fields as a plain dict for JSON (also from a subclass that adds fields, such
        as the learner node's parameters)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(GRPOConfig)}

    @classmethod
    def from_dict(cls, values: dict) -> GRPOConfig:
        """Inverse of to_dict; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown GRPOConfig fields {unknown}; known: {sorted(names)}")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    @staticmethod
    def help() -> dict[str, str]:
        """Field name -> help text, for ROS parameter descriptors and `--help`."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(GRPOConfig)}
