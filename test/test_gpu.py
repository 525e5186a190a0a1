"""The policy and the learner on a CUDA device, float32 and bfloat16: skipped where there is none (CI).

The CPU suite catches a tensor made off the policy's device (test_rl_vla's update under a `meta`
default device); these run the same act() and update on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_rl_vla import CFG, CHUNKS, INSTRUCTIONS, STATE_DIM, make_policy, rollouts

from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.rl import GRPOLearner

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def observation() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (CHUNKS, 32, 32, 3), dtype=np.uint8),
            rng.normal(size=(CHUNKS, STATE_DIM)).astype(np.float32), [INSTRUCTIONS[0]] * CHUNKS)


def test_act_on_cuda_matches_the_cpu() -> None:
    cpu = make_policy()
    gpu = make_policy()
    gpu.model.to("cuda")
    want, got = (p.act(*observation(), greedy=True) for p in (cpu, gpu))
    assert gpu.device.type == "cuda"
    np.testing.assert_array_equal(got.token_ids, want.token_ids)
    np.testing.assert_allclose(got.log_probs, want.log_probs, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_update_publish_and_resume_on_cuda(tmp_path, dtype) -> None:
    policy = make_policy()
    policy.model.to("cuda", dtype)
    learner = GRPOLearner(policy, CFG, tmp_path, tensorboard=False)
    rollouts(policy, learner.buffer, CFG.groups_per_update * 2)
    before = [p.detach().clone() for p in learner.params]
    metrics = learner.update(learner.buffer.pop_batch(1))
    assert all(np.isfinite(v) for v in metrics.values())
    assert all(p.device.type == "cuda" and p.dtype == dtype for p in learner.params)
    assert all(not torch.equal(a, p) for a, p in zip(before, learner.params, strict=True))
    learner.save_checkpoint()
    published = VLAPolicy.load(learner.publish_policy())  # on the CPU: what a policy node on another host loads
    out = published.act(*observation(), greedy=True)
    assert np.isfinite(out.log_probs).all()
    trained = [p.detach().clone() for p in learner.params]
    learner.update(learner.buffer.pop_batch(2))
    assert learner.resume() is not None  # back to the checkpoint, on the GPU
    for p, want in zip(learner.params, trained, strict=True):
        assert p.device.type == "cuda"
        torch.testing.assert_close(p.detach(), want)
