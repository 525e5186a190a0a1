"""The two policies shipped in models/: they load through the safe path a user's checkpoint takes
and drive the sim. The default is what deploy serves; the few-demonstration one is train_sim's start."""

from pathlib import Path

import pytest

from vla_rl_ros.paths import default_checkpoint, package_share
from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.policy.evaluate import heldout_seeds, run_episodes

FEW_DEMO = package_share("vla_rl_ros") / "models" / "few_demo_policy"


@pytest.mark.parametrize(("checkpoint", "seeds", "at_least"), [(default_checkpoint(), 8, 6), (FEW_DEMO, 20, 3)],
                         ids=["default", "few_demo"])
def test_a_shipped_policy_reaches_on_held_out_scenes(checkpoint: Path, seeds: int, at_least: int) -> None:
    """Greedy reach on the first held-out seeds (deterministic on the CPU): the default succeeds on
    all 8 (86% of 50, README), the few-demonstration policy on 5 of 20 (32% of 50); a checkpoint that
    loads but has lost its skill fails here."""
    policy = VLAPolicy.load(checkpoint)
    assert (policy.camera, policy.chunk_size, policy.action_dim) == ("wrist", 4, 4)
    episodes = run_episodes(policy, "reach", heldout_seeds("reach", seeds))
    assert sum(e["success"] for e in episodes) >= at_least, [e["end_reason"] for e in episodes]
