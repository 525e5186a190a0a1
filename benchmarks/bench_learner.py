"""Learner speed: samples/s of a GRPO update (GRPOLearner.update) against a raw forward+backward of the
same model on the same batch, in one run.

    .venv/bin/python benchmarks/bench_learner.py [--groups 2] [--group-size 8] [--epochs 2] [--repeats 3]
                                                 [--checkpoint DIR] [--threads 1] [--json out.json]

The batch is real: --groups x --group-size sampled reach rollouts of the policy in the core env
(`run_episodes(..., record=True)`, what the policy node publishes), rewards alternating 0/1 so every
group has an advantage. A sample is one chunk (image, state, C*A sampled tokens).

update: GRPOLearner.update on those groups with the learner's defaults otherwise (mini-batches of
        --minibatch trajectories, forward passes of at most forward_tokens positions): one no-grad pass
        for the old log-probs, then --epochs passes with backward and an AdamW step per mini-batch.
        samples/s = chunks x epochs / update time.
raw:    token_log_probs with grad on the same chunks in the same forward_tokens slices, sum, backward;
        no optimiser. samples/s = chunks / time of one pass.
The ratio update/raw is what GRPO costs on top of the model's own compute: the extra no-grad pass
for the old log-probs, mini-batch slicing, the loss, gradient clipping and the AdamW steps. Each
figure is the best of --repeats (the one least disturbed by other jobs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import fresh_default, peak_rss_mib, write_json

from vla_rl_ros.policy import FinetuneConfig, VLAPolicy
from vla_rl_ros.policy.evaluate import run_episodes
from vla_rl_ros.rl.buffer import Group, Rollout
from vla_rl_ros.rl.config import GROUP_SIZE, ROLLOUT_TEMPERATURE, GRPOConfig
from vla_rl_ros.rl.learner import GRPOLearner
from vla_rl_ros.rl.records import TrajectoryRecord, rollout_records
from vla_rl_ros.sim import TASKS

TASK = "reach"


def rollout_groups(policy: VLAPolicy, groups: int, group_size: int) -> list[Group]:
    """`groups` groups of `group_size` sampled rollouts, each group from one training seed."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for g, seed in enumerate(TASKS[TASK].train_seeds[:groups]):
        episodes = []
        for k, r in enumerate(run_episodes(policy, TASK, [seed] * group_size, greedy=False, record=True,
                                           temperature=ROLLOUT_TEMPERATURE, generator=generator)):
            trajectory, result = rollout_records(
                r, episode_id=f"g{g}-e{k}", group_id=f"g{g}", group_size=group_size, task=TASK, seed=seed,
                instruction=TASKS[TASK].sample(seed).instruction, policy_version=0, temperature=ROLLOUT_TEMPERATURE,
                success=k % 2 == 0)
            episodes.append(Rollout(trajectory, result))
        out.append(Group(f"g{g}", episodes))
    return out


def raw_pass(policy: VLAPolicy, trajectories: list[TrajectoryRecord], forward_tokens: int) -> float:
    """Seconds of one forward+backward over every chunk, in slices of as many chunks as forward_tokens
    holds of the longest chunk's sequence (the learner's passes where the chunks are alike)."""
    forward_chunks = max(forward_tokens // max(policy.sequence_length(t.instruction) for t in trajectories), 1)
    images = np.concatenate([t.images for t in trajectories])
    state = np.concatenate([t.state for t in trajectories])
    token_ids = torch.from_numpy(np.concatenate([t.token_ids for t in trajectories]))
    instructions = [t.instruction for t in trajectories for _ in range(t.num_chunks)]
    start = time.perf_counter()
    for s in range(0, len(images), forward_chunks):
        part = slice(s, s + forward_chunks)
        logp = policy.token_log_probs(images[part], state[part], instructions[part], token_ids[part],
                                      temperature=ROLLOUT_TEMPERATURE)
        logp.sum().backward()
    elapsed = time.perf_counter() - start
    policy.model.zero_grad(set_to_none=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=2, help="groups in the update")
    parser.add_argument("--group-size", type=int, default=GROUP_SIZE, help="rollouts per group (G)")
    parser.add_argument("--epochs", type=int, default=GRPOConfig().epochs, help="passes over the update's batch")
    parser.add_argument("--minibatch", type=int, default=GRPOConfig().minibatch_size,
                        help="trajectories per optimiser step")
    parser.add_argument("--forward-tokens", type=int, default=GRPOConfig().forward_tokens,
                        help="most token positions in one forward pass (the learner's memory budget)")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates / raw passes (best counts)")
    parser.add_argument("--checkpoint", type=Path, help="policy checkpoint (default: a fresh default-size tiny VLA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    instructions = [TASKS[TASK].sample(s).instruction for s in TASKS[TASK].train_seeds[:200]]
    policy = VLAPolicy.load(args.checkpoint) if args.checkpoint else fresh_default(instructions)
    policy.configure_finetuning(FinetuneConfig(mode="full"))
    groups = rollout_groups(policy, args.groups, args.group_size)
    trajectories = [e.trajectory for g in groups for e in g.episodes]
    chunks = sum(t.num_chunks for t in trajectories)
    config = GRPOConfig(groups_per_update=args.groups, epochs=args.epochs,
                        minibatch_size=min(args.minibatch, len(trajectories)), forward_tokens=args.forward_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        learner = GRPOLearner(policy, config, Path(tmp), tensorboard=False)
        raw_pass(policy, trajectories, config.forward_tokens)  # warm-up
        raw = min(raw_pass(policy, trajectories, config.forward_tokens)
                  for _ in range(args.repeats))
        update = min(learner.update(groups)["time/update_s"] for _ in range(args.repeats))
    figures = {
        "trajectories": len(trajectories), "chunks": chunks, "epochs": args.epochs,
        "minibatch_size": config.minibatch_size, "forward_tokens": config.forward_tokens, "threads": args.threads,
        "raw_forward_backward_s": raw, "update_s": update,
        "raw_samples_per_s": chunks / raw, "update_samples_per_s": chunks * args.epochs / update,
        "peak_rss_mib": peak_rss_mib(os.getpid()),  # the whole process: model, optimiser, rollouts, activations
    }
    figures["update_over_raw"] = figures["update_samples_per_s"] / figures["raw_samples_per_s"]
    print(f"{len(trajectories)} trajectories ({args.groups} groups of {args.group_size}), {chunks} chunks, "
          f"{args.epochs} epochs, mini-batches of {config.minibatch_size}, forward passes of at most "
          f"{config.forward_tokens} positions, {args.threads} thread(s)")
    print(f"raw forward+backward: {raw:.2f} s, {figures['raw_samples_per_s']:.0f} samples/s")
    print(f"GRPO update:          {update:.2f} s, {figures['update_samples_per_s']:.0f} samples/s "
          f"(x{args.epochs} epochs)")
    print(f"update / raw: {figures['update_over_raw']:.2f}")
    print(f"peak memory (VmHWM): {figures['peak_rss_mib']:.0f} MiB")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
