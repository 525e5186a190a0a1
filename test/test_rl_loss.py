"""GRPO loss pieces against numbers worked out by hand (see the comments)."""

import dataclasses
import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_rl_ros.rl import GRPOConfig, clipped_policy_loss, group_advantages, keep_group
from vla_rl_ros.rl.config import GROUP_SIZE, ROLLOUT_TEMPERATURE


def test_advantages_one_success_in_eight():
    # mean 1/8; unbiased var = (0.875^2 + 7 * 0.125^2) / 7 = 0.125, std = 0.35355
    adv = group_advantages([1, 0, 0, 0, 0, 0, 0, 0])
    assert adv[0].item() == pytest.approx(0.875 / math.sqrt(0.125), rel=1e-5)  # 2.4749
    assert adv[1:].tolist() == pytest.approx([-0.125 / math.sqrt(0.125)] * 7, rel=1e-5)  # -0.35355
    assert adv.sum().item() == pytest.approx(0.0, abs=1e-5)


def test_advantages_use_the_unbiased_std_like_verl():
    # [1, 0]: unbiased std = sqrt(0.5) -> +-0.7071; the biased std 0.5 would give +-1
    assert group_advantages([1.0, 0.0]).tolist() == pytest.approx([0.70711, -0.70711], rel=1e-4)
    # [1, 1, 0, 0]: var = 4 * 0.25 / 3 -> std 0.57735 -> +-0.86603
    assert group_advantages([1, 1, 0, 0]).tolist() == pytest.approx([0.86603, 0.86603, -0.86603, -0.86603],
                                                                    rel=1e-4)


def test_advantages_of_an_all_equal_group_are_zero_not_nan():
    assert group_advantages([1, 1, 1]).tolist() == [0.0, 0.0, 0.0]


def test_advantages_reject_a_group_of_one():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages([1.0])


def test_keep_group_only_when_some_but_not_all_succeed():
    assert keep_group([1, 0, 0, 0])
    assert keep_group([1, 1, 1, 0])
    assert not keep_group([0, 0, 0, 0])
    assert not keep_group([1, 1, 1, 1])


# Two trajectories, clip [0.8, 1.28], logp_old = 0 so ratio = exp(logp_new):
#   traj 0, A = +1, 3 tokens, ratios 1.5 1.0 0.5 -> per token -min(r, clip(r)) = -1.28 (clipped high), -1, -0.5
#            token mean -2.78 / 3 = -0.926667
#   traj 1, A = -1, 2 valid tokens + 1 pad, ratios 0.5 1.1 -> max(r, clip(r)) = 0.8 (clipped low), 1.1
#            token mean 1.9 / 2 = 0.95
#   loss = (-0.926667 + 0.95) / 2 = 0.0116667  (a global token mean would be (-2.78 + 1.9) / 5 = -0.176)
RATIOS = [[1.5, 1.0, 0.5], [0.5, 1.1, 99.0]]
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
ADV = torch.tensor([1.0, -1.0])


def hand_case(pad_ratio=99.0):
    ratios = torch.tensor([RATIOS[0], [*RATIOS[1][:2], pad_ratio]])
    logp_new = ratios.log().requires_grad_(True)
    loss, stats = clipped_policy_loss(logp_new, torch.zeros(2, 3), ADV, MASK, clip_low=0.2, clip_high=0.28)
    return logp_new, loss, stats


def test_loss_token_mean_within_trajectory_then_mean_over_trajectories():
    _, loss, _ = hand_case()
    assert loss.item() == pytest.approx(0.0116667, abs=1e-6)


def test_clip_on_both_sides_removes_the_gradient_of_clipped_tokens():
    logp_new, loss, stats = hand_case()
    loss.backward()
    # d loss / d logp = d loss / d r * r. Unclipped tokens: traj 0 -> -r / (3 * 2); traj 1 -> +r / (2 * 2).
    expected = [[0.0, -1 / 6, -0.5 / 6], [0.0, 1.1 / 4, 0.0]]
    assert logp_new.grad.tolist()[0] == pytest.approx(expected[0], abs=1e-6)
    assert logp_new.grad.tolist()[1] == pytest.approx(expected[1], abs=1e-6)
    assert stats["clip_fraction_high"] == pytest.approx(1 / 5)  # r = 1.5 with A > 0
    assert stats["clip_fraction_low"] == pytest.approx(1 / 5)  # r = 0.5 with A < 0
    assert stats["clip_fraction"] == pytest.approx(2 / 5)


def test_ratio_and_kl_statistics_cover_valid_tokens_only():
    _, _, stats = hand_case()
    assert stats["ratio_mean"] == pytest.approx(4.6 / 5, rel=1e-6)
    assert (stats["ratio_min"], stats["ratio_max"]) == pytest.approx((0.5, 1.5), rel=1e-6)
    # k3 = (r - 1) - log r per token: 0.094535, 0, 0.193147, 0.193147, 0.0046898
    assert stats["approx_kl"] == pytest.approx(0.485518 / 5, rel=1e-4)


def test_padding_changes_nothing():
    _, loss_a, stats_a = hand_case(pad_ratio=99.0)
    _, loss_b, stats_b = hand_case(pad_ratio=1e-3)
    assert loss_a.item() == loss_b.item()
    assert stats_a == stats_b


def test_loss_rejects_mismatched_shapes_and_empty_trajectories():
    with pytest.raises(ValueError, match=r"advantages \(3,\)"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), MASK,
                            clip_low=0.2, clip_high=0.28)
    with pytest.raises(ValueError, match="no valid token"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), ADV, torch.zeros(2, 3, dtype=torch.bool),
                            clip_low=0.2, clip_high=0.28)


def test_config_defaults_are_the_recipe():
    cfg = GRPOConfig()
    assert (cfg.clip_low, cfg.clip_high, cfg.grad_clip, cfg.adv_eps) == (0.2, 0.28, 1.0, 1e-6)
    assert (cfg.lr, cfg.groups_per_update) == (1e-4, 16)  # docs/grpo.md, session 13
    assert (ROLLOUT_TEMPERATURE, GROUP_SIZE) == (1.0, 8)  # the policy node's and the episode manager's defaults
    # They travel with the data (Trajectory.temperature, EpisodeResult.group_size): the learner has neither.
    assert not {"temperature", "group_size"} & set(cfg.to_dict())
    assert set(GRPOConfig.help()) == {f for f in cfg.to_dict()}
    assert GRPOConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["betas"], tuple)  # JSON turns it into a list; from_dict turns it back
    assert GRPOConfig.from_dict({**cfg.to_dict(), "betas": [0.9, 0.99]}).betas == (0.9, 0.99)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"clip_low": 1.0}, "clip_low=1.0"),
    ({"minibatch_size": 0}, "minibatch_size=0"),
    ({"max_policy_lag": -1}, "max_policy_lag=-1"),
])
def test_config_rejects_bad_values_with_a_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**kwargs)


def test_config_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match="kl_coef"):
        GRPOConfig.from_dict({"kl_coef": 0.1})


def test_a_config_saved_with_a_retired_field_still_loads():
    """A run's buffer saved before forward_tokens replaced forward_chunks (memory, not maths) resumes."""
    assert GRPOConfig.from_dict({**GRPOConfig(epochs=3).to_dict(), "forward_chunks": 256}) == GRPOConfig(epochs=3)


def test_config_to_dict_keeps_only_grpo_fields_of_a_subclass():
    @dataclasses.dataclass(frozen=True)
    class NodeParams(GRPOConfig):  # as the learner node extends it with its own parameters
        run_dir: str = "runs/x"

    assert GRPOConfig.from_dict(NodeParams(epochs=4).to_dict()) == GRPOConfig(epochs=4)


def reference_loss(logp_new, logp_old, adv, mask, clip_low, clip_high):
    """Plain loops over trajectories and tokens: the definition, nothing vectorised."""
    per_traj = []
    for b in range(len(adv)):
        terms = []
        for t in range(len(mask[b])):
            if mask[b][t]:
                r = math.exp(logp_new[b][t] - logp_old[b][t])
                clipped = min(max(r, 1 - clip_low), 1 + clip_high)
                terms.append(max(-adv[b] * r, -adv[b] * clipped))
        per_traj.append(sum(terms) / len(terms))
    return sum(per_traj) / len(per_traj)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_loss_matches_the_plain_loop_reference(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    logp_old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp_new = logp_old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[:, 0] = True  # every trajectory has a token
    loss, _ = clipped_policy_loss(logp_new, logp_old, adv, mask, clip_low=0.2, clip_high=0.28)
    expected = reference_loss(logp_new.tolist(), logp_old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=16))
def test_advantages_match_statistics_stdev(rewards):
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)  # sample (n - 1) std
    expected = [(r - mean) / (std + 1e-6) for r in rewards]
    assert group_advantages(rewards).tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
