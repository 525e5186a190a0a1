"""`vla-rl grpo-local`: GRPO in one process, the quick way to probe settings before a train_sim run.

The same GRPOLearner, policy and sim as the graph, without ROS: rollouts are `run_episodes(record=True)`
(16 environments in lockstep, two seeds of one task per call = two groups of 8), their records go
into the learner's buffer as the learner node would put them, and every `--eval-every` updates the
policy is evaluated greedily on held-out seeds by `vla-rl eval`'s `evaluate` (`--sampled-eval`: also
sampled at the rollout temperature). About 3 episodes/s on one core, several times the graph's rate,
so a setting can be judged in minutes; the graph remains what a user runs (and what the README's
numbers come from).

    .venv/bin/vla-rl grpo-local --updates 12 --temperature 0.7 --lr 5e-5 --eval 30 --out /tmp/probe

Writes probe.json under --out (one row per update: the learner's metrics and any evaluation,
rewritten after every update) and the policy as policy_uN every `--eval-every` updates and after
the last; the learner's metrics.csv and episode buffer are there too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.paths import default_checkpoint
from vla_rl_ros.policy import FinetuneConfig, VLAPolicy
from vla_rl_ros.policy.evaluate import evaluate, heldout_seeds, run_episodes
from vla_rl_ros.policy.vla_policy import CheckpointError
from vla_rl_ros.rl.config import GROUP_SIZE, MIN_GROUP_SIZE, ROLLOUT_TEMPERATURE, GRPOConfig
from vla_rl_ros.rl.learner import GRPOLearner
from vla_rl_ros.rl.records import rollout_records
from vla_rl_ros.sim import get_task

SEEDS_PER_CALL = 2  # groups per run_episodes call: 2 x group_size environments in lockstep
SHOWN = ("grpo/clip_fraction", "grpo/approx_kl", "grpo/ratio_max", "policy/entropy", "rollout/success_rate",
         "grpo/kept_group_fraction")
RESULTS_FILE = "probe.json"
SAMPLED_EVAL_SEED = 123  # --sampled-eval's fixed draw: its rounds differ by the weights, not by the luck
COUNTS = ("updates", "epochs", "groups", "minibatch", "lora_rank", "eval_every", "threads")  # each >= 1


def build_parser() -> argparse.ArgumentParser:
    recipe = GRPOConfig()  # the defaults train_sim's learner runs with
    parser = argparse.ArgumentParser(prog="vla-rl grpo-local", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="initial policy (empty: the embedded default)")
    parser.add_argument("--tasks", default="reach,lift", help="comma-separated tasks, alternating by group")
    parser.add_argument("--updates", type=int, default=12, help="GRPO updates to run")
    parser.add_argument("--temperature", type=float, default=ROLLOUT_TEMPERATURE, help="rollout temperature")
    parser.add_argument("--group-size", type=int, default=GROUP_SIZE, help="rollouts per group (one seed)")
    parser.add_argument("--lr", type=float, default=recipe.lr, help="AdamW learning rate")
    parser.add_argument("--epochs", type=int, default=recipe.epochs, help="passes over each update's trajectories")
    parser.add_argument("--groups", type=int, default=recipe.groups_per_update, help="groups per update")
    parser.add_argument("--minibatch", type=int, default=recipe.minibatch_size, help="trajectories per optimiser step")
    parser.add_argument("--finetune", default="full", choices=("full", "lora"), help="which weights train")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA r (--finetune lora)")
    parser.add_argument("--eval", type=int, default=30, help="held-out episodes per task; 0: no evaluation")
    parser.add_argument("--eval-every", type=int, default=4,
                        help="updates between evaluations (and saved policies)")
    parser.add_argument("--sampled-eval", action="store_true", help="also evaluate sampled at --temperature")
    parser.add_argument("--seed", type=int, default=0, help="rollout seeds, sampling and mini-batch order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True,
                        help=f"output folder (replaced if it is an earlier run's, i.e. holds {RESULTS_FILE})")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], GRPOConfig]:
    """The tasks and GRPO settings the arguments name; any mistake ends the command (exit 2) before
    a policy is loaded or --out is touched, so a typo costs neither minutes nor an earlier run."""
    for name in COUNTS:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.eval < 0:
        parser.error(f"--eval must be >= 0 (0: no evaluation), got {args.eval}")
    if args.group_size < MIN_GROUP_SIZE:
        parser.error(f"--group-size must be at least {MIN_GROUP_SIZE} (a group baseline), got {args.group_size}")
    if not args.temperature > 0:
        parser.error(f"--temperature={args.temperature}: must be > 0")
    if args.minibatch > args.groups * args.group_size:
        parser.error(f"--minibatch {args.minibatch} exceeds the {args.groups * args.group_size} trajectories of an "
                     "update (--groups x --group-size): each update would be one step")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks:
        parser.error("--tasks names no task; e.g. --tasks reach,lift (see `vla-rl tasks`)")
    try:
        for task in tasks:
            get_task(task)
            if args.eval:
                heldout_seeds(task, args.eval)
        config = GRPOConfig(lr=args.lr, epochs=args.epochs, groups_per_update=args.groups,
                            minibatch_size=args.minibatch)
    except ValueError as exc:
        parser.error(str(exc))
    if args.out.exists() and not (args.out / RESULTS_FILE).is_file() and (
            not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out} exists and holds no {RESULTS_FILE}, so it is not an earlier "
                     "grpo-local run and is not replaced; name a new or empty folder")
    return tasks, config


def heldout_success(policy: VLAPolicy, tasks: list[str], episodes: int, temperature: float | None) -> dict[str, float]:
    """Greedy held-out success per task, and as `task@T` sampled at `temperature` if given."""
    row = {task: r["success_rate"] for task, r in evaluate(policy, tasks, episodes)["tasks"].items()}
    if temperature is not None:
        sampled = evaluate(policy, tasks, episodes, greedy=False, temperature=temperature,
                           generator=torch.Generator(policy.device).manual_seed(SAMPLED_EVAL_SEED))
        row |= {f"{task}@T": r["success_rate"] for task, r in sampled["tasks"].items()}
    return row


def save_log(out: Path, log: list[dict]) -> None:
    """Rewritten whole after every row, so a probe stopped early keeps what it measured."""
    (out / RESULTS_FILE).write_text(json.dumps(log, indent=1) + "\n")


def main(argv: list[str]) -> int:
    """The whole GRPO loop in one reading: rollouts into the buffer, an update once enough groups are
    kept, held-out evaluation now and then (the learner node does the same from its callbacks)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tasks, config = check_args(parser, args)
    torch.set_num_threads(args.threads)
    try:
        policy = VLAPolicy.load(args.checkpoint or default_checkpoint())
    except (FileNotFoundError, CheckpointError) as exc:
        parser.error(f"--checkpoint: {exc}")
    policy.configure_finetuning(FinetuneConfig(mode=args.finetune, lora_rank=args.lora_rank))
    shutil.rmtree(args.out, ignore_errors=True)
    learner = GRPOLearner(policy, config, args.out, seed=args.seed, tensorboard=False)
    log: list[dict] = []
    save_log(args.out, log)  # at once: it marks the folder as one a later run may replace
    rng, generator = np.random.default_rng(args.seed), torch.Generator(policy.device).manual_seed(args.seed)
    sampled_t = args.temperature if args.sampled_eval else None
    if args.eval:
        log.append({"update": 0, "eval": heldout_success(policy, tasks, args.eval, sampled_t)})
        save_log(args.out, log)
        print("v0", log[-1]["eval"], flush=True)
    started, groups, episodes = time.monotonic(), 0, 0
    for update in range(1, args.updates + 1):
        # Sampled rollouts until the buffer holds enough kept groups (some but not all successes).
        while learner.buffer.ready_groups() < args.groups:
            task = tasks[groups // SEEDS_PER_CALL % len(tasks)]
            spec = get_task(task)
            seeds = [int(rng.integers(spec.train_seeds.start, spec.train_seeds.stop)) for _ in range(SEEDS_PER_CALL)]
            batch = [s for s in seeds for _ in range(args.group_size)]
            results = run_episodes(policy, task, batch, greedy=False, temperature=args.temperature,
                                   generator=generator, record=True)
            for k, (seed, r) in enumerate(zip(batch, results, strict=True)):
                trajectory, result = rollout_records(
                    r, episode_id=f"e{episodes + k}", group_id=f"g{groups + k // args.group_size}",
                    group_size=args.group_size, task=task, seed=seed, instruction=spec.sample(seed).instruction,
                    policy_version=learner.policy_version, temperature=args.temperature)
                learner.buffer.add_trajectory(trajectory)
                learner.buffer.add_result(result)
            groups, episodes = groups + SEEDS_PER_CALL, episodes + len(results)
        metrics = learner.maybe_update()
        assert metrics is not None  # the loop above waited for a full update's kept groups
        row: dict = {"update": update, "episodes": episodes, "wall_s": time.monotonic() - started,
                     **{k: metrics[k] for k in SHOWN if k in metrics}}
        if args.eval and update % args.eval_every == 0:
            row["eval"] = heldout_success(policy, tasks, args.eval, sampled_t)
        if update % args.eval_every == 0 or update == args.updates:
            policy.save(args.out / f"policy_u{update}")
        log.append(row)
        save_log(args.out, log)
        print(f"u{update} {episodes} episodes {row['wall_s']:.0f} s",
              {k.split("/")[-1]: round(v, 4) for k, v in row.items() if k in SHOWN}, row.get("eval", ""), flush=True)
    return 0
