"""GRPO in one process, for quick hyperparameter probes before a train_sim run.

The same GRPOLearner, policy and sim as the graph, without ROS: rollouts are `run_episodes(record=True)`
(16 environments in lockstep, two seeds of one task per call = two groups of 8), their records go
into the learner's buffer as the learner node would put them, and every `--eval-every` updates the
policy is evaluated greedily on held-out seeds (`--sampled-eval`: also sampled at the rollout
temperature). About 3 episodes/s on one core, several times the graph's rate, so a setting can be
judged in minutes; the graph remains what a user runs (and what the README's numbers come from).

    .venv/bin/python scripts/grpo_probe.py --updates 12 --temperature 0.7 --lr 5e-5 --eval 30 --out /tmp/probe

Writes probe.json (one row per update: the learner's metrics and any evaluation) and, every
`--eval-every` updates, the policy as policy_uN under --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.paths import default_checkpoint
from vla_rl_ros.policy import FinetuneConfig, VLAPolicy
from vla_rl_ros.policy.evaluate import heldout_seeds, run_episodes
from vla_rl_ros.rl import GRPOConfig, GRPOLearner
from vla_rl_ros.rl.records import rollout_records
from vla_rl_ros.sim import get_task

SEEDS_PER_CALL = 2  # groups per run_episodes call: 2 x group_size environments in lockstep
SHOWN = ("grpo/clip_fraction", "grpo/approx_kl", "grpo/ratio_max", "policy/entropy", "rollout/success_rate",
         "grpo/kept_group_fraction")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="initial policy (default: the embedded default)")
    parser.add_argument("--tasks", default="reach,lift", help="comma-separated tasks, alternating by group")
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=0.7, help="rollout temperature")
    parser.add_argument("--lr", type=float, default=GRPOConfig().lr)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--groups", type=int, default=8, help="groups per update")
    parser.add_argument("--minibatch", type=int, default=16)
    parser.add_argument("--finetune", default="full", choices=("full", "lora"))
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--eval", type=int, default=30, help="held-out episodes per task; 0: no evaluation")
    parser.add_argument("--eval-every", type=int, default=4, help="updates between evaluations")
    parser.add_argument("--sampled-eval", action="store_true", help="also evaluate sampled at --temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    return parser


def evaluate(policy: VLAPolicy, tasks: list[str], episodes: int, temperature: float | None) -> dict[str, float]:
    """Greedy held-out success per task, and sampled at `temperature` if given (fixed sampling seed)."""
    out = {}
    for task in tasks:
        seeds = heldout_seeds(task, episodes)
        out[task] = float(np.mean([r["success"] for r in run_episodes(policy, task, seeds)]))
        if temperature is not None:
            sampled = run_episodes(policy, task, seeds, greedy=False, temperature=temperature,
                                   generator=torch.Generator().manual_seed(123))
            out[f"{task}@T"] = float(np.mean([r["success"] for r in sampled]))
    return out


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = VLAPolicy.load(args.checkpoint or default_checkpoint())
    policy.configure_finetuning(FinetuneConfig(mode=args.finetune, lora_rank=args.lora_rank))
    config = GRPOConfig(lr=args.lr, epochs=args.epochs, temperature=args.temperature,
                        groups_per_update=args.groups, minibatch_size=args.minibatch)
    shutil.rmtree(args.out, ignore_errors=True)
    learner = GRPOLearner(policy, config, args.out, seed=args.seed, tensorboard=False)
    rng, generator = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    tasks = args.tasks.split(",")
    sampled_t = args.temperature if args.sampled_eval else None
    log: list[dict] = []
    if args.eval:
        log.append({"update": 0, "eval": evaluate(policy, tasks, args.eval, sampled_t)})
        print("v0", log[-1]["eval"], flush=True)
    started, groups, episodes = time.monotonic(), 0, 0
    for update in range(1, args.updates + 1):
        while learner.buffer.ready_groups() < args.groups:
            task = tasks[groups // SEEDS_PER_CALL % len(tasks)]
            spec = get_task(task)
            seeds = [int(rng.integers(spec.train_seeds.start, spec.train_seeds.stop)) for _ in range(SEEDS_PER_CALL)]
            batch = [s for s in seeds for _ in range(config.group_size)]
            results = run_episodes(policy, task, batch, greedy=False, temperature=args.temperature,
                                   generator=generator, record=True)
            for k, (seed, r) in enumerate(zip(batch, results, strict=True)):
                trajectory, result = rollout_records(
                    r, episode_id=f"e{episodes + k}", group_id=f"g{groups + k // config.group_size}", task=task,
                    seed=seed, instruction=spec.sample(seed).instruction, policy_version=learner.policy_version)
                learner.buffer.add_trajectory(trajectory)
                learner.buffer.add_result(result)
            groups, episodes = groups + SEEDS_PER_CALL, episodes + len(results)
        metrics = learner.maybe_update()
        assert metrics is not None
        row: dict = {"update": update, "episodes": episodes, "wall_s": time.monotonic() - started,
                     **{k: metrics[k] for k in SHOWN if k in metrics}}
        if args.eval and update % args.eval_every == 0:
            row["eval"] = evaluate(policy, tasks, args.eval, sampled_t)
            policy.save(args.out / f"policy_u{update}")
        log.append(row)
        (args.out / "probe.json").write_text(json.dumps(log, indent=1) + "\n")
        print(f"u{update} {episodes} episodes {row['wall_s']:.0f} s",
              {k.split("/")[-1]: round(v, 4) for k, v in row.items() if k in SHOWN}, row.get("eval", ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
