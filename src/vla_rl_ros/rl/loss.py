"""The GRPO loss as small pure functions, in the paper's order: advantages, filter, ratio, clip.

Shapes: G group size, B trajectories, T tokens of a trajectory (N chunks x C x A, padded to the
longest trajectory in the batch; `mask` marks the real ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vla_rl_ros.rl.config import ADV_EPS


def group_advantages(rewards: torch.Tensor | Sequence[float], eps: float = ADV_EPS) -> torch.Tensor:
    """(R - mean) / (std + eps) over one group: (G,) -> (G,) float32.

    std is the unbiased (Bessel-corrected, divide by G - 1) standard deviation, as veRL's
    `compute_grpo_outcome_advantage` computes it with `torch.std`, which SimpleVLA-RL uses unchanged
    (verl/trainer/ppo/core_algos.py). For one success in eight: std = sqrt(1/8) = 0.354,
    advantages +2.47 and -0.354.
    """
    # a tensor stays on its device (as_tensor would move it to torch's default device)
    r = rewards.float() if isinstance(rewards, torch.Tensor) else torch.tensor(rewards, dtype=torch.float32)  # (G,)
    if r.ndim != 1 or r.numel() < 2:
        raise ValueError(f"rewards of shape {tuple(r.shape)}: need one reward per rollout, (G,) with G >= 2")
    return (r - r.mean()) / (r.std(unbiased=True) + eps)


def keep_group(rewards: torch.Tensor | Sequence[float]) -> bool:
    """Dynamic sampling (DAPO; SimpleVLA-RL filter_accuracy with bounds 0 and 1): keep a group only if
    its rewards differ, i.e. some but not all rollouts succeeded. An all-equal group has zero
    advantage everywhere and would only dilute the mini-batch."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.numel() == 0:
        raise ValueError("keep_group got an empty group; a group needs rewards of its rollouts")
    return bool(r.max() > r.min())


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is true (all dims)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def clipped_policy_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    trajectory_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip with clip-higher, no KL and no entropy term.

    logp_new, logp_old, mask: (B, T); advantages: (B,), the same on every token of a trajectory.
    Per token: loss = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A), r = exp(logp_new - logp_old).
    Aggregation: token mean within each trajectory, then mean over trajectories (veRL's
    "seq-mean-token-mean"), so a long trajectory weighs as much as a short one. trajectory_tokens (B,):
    where a row holds only a piece of its trajectory (a long one split over forward passes), the whole
    trajectory's token count, which the row's token sum is divided by: the pieces' terms add up to
    the trajectory's token mean.

    Returns the scalar loss and detached statistics over the valid tokens: clip fractions (tokens
    whose gradient the clip removed, low side A < 0, high side A > 0), ratio mean/min/max and
    approx_kl, Schulman's k3 estimator E[(r - 1) - log r] of KL(old || new).
    """
    if logp_new.shape != logp_old.shape or logp_new.shape != mask.shape or logp_new.ndim != 2:
        raise ValueError(f"logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)} and mask "
                         f"{tuple(mask.shape)} must all be (B, T)")
    if advantages.shape != logp_new.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)} must be (B,) = ({logp_new.shape[0]},)")
    m = mask.to(logp_new.dtype)  # (B, T)
    tokens = m.sum(dim=1)  # (B,)
    if bool((tokens == 0).any()):
        raise ValueError("a trajectory has no valid token (mask row all zero); drop it before the loss")

    log_ratio = (logp_new - logp_old) * m  # (B, T); zero on padding so exp stays finite
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)  # (B, 1), broadcast over tokens
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    whole = tokens if trajectory_tokens is None else trajectory_tokens.to(m.dtype)
    per_traj = (per_token * m).sum(dim=1) / whole  # (B,) token mean within a trajectory
    loss = per_traj.mean()  # mean over trajectories

    with torch.no_grad():
        valid = m.bool()
        low = (ratio < 1.0 - clip_low) & (adv < 0) & valid
        high = (ratio > 1.0 + clip_high) & (adv > 0) & valid
        r = ratio[valid]
        stats = {
            "clip_fraction_low": float(masked_mean(low.float(), m)),
            "clip_fraction_high": float(masked_mean(high.float(), m)),
            "clip_fraction": float(masked_mean((low | high).float(), m)),
            "ratio_mean": float(r.mean()),
            "ratio_min": float(r.min()),
            "ratio_max": float(r.max()),
            "approx_kl": float(masked_mean((ratio - 1.0) - log_ratio, m)),
            "tokens": float(m.sum()),
        }
    return loss, stats
