"""Greedy evaluation of a policy on held-out initial states in the sim, and `vla-rl eval`.

Episodes of one task run side by side in lockstep so each decision is ONE batched forward pass; each
chunk is executed open loop (all C actions) before the policy is asked again, as the executor does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vla_rl_ros.policy.vla_policy import ROLLOUT_TEMPERATURE, VLAPolicy
from vla_rl_ros.stats import wilson_interval

if TYPE_CHECKING:
    from vla_rl_ros.sim import SimEnv

# Environments stepped together per forward pass; bounds the renderers alive at once.
EVAL_BATCH = 16
DEFAULT_EPISODES = 50
TRAJECTORY_KEYS = ("images", "state", "token_ids", "log_probs", "steps")  # TrajectoryRecord's arrays


def heldout_seeds(task: str, episodes: int, *, tail: bool = False) -> list[int]:
    """The first `episodes` held-out seeds of `task` (evaluation), or the last ones (`tail`, the
    model-selection split SFT uses, so the reported numbers are not the ones it picked by)."""
    from vla_rl_ros.sim import get_task

    seeds = get_task(task).heldout_seeds
    if episodes > len(seeds):
        raise ValueError(f"task {task!r} has {len(seeds)} held-out seeds; asked for {episodes} episodes")
    return list(seeds[-episodes:] if tail else seeds[:episodes])


def run_episodes(policy: VLAPolicy, task: str, seeds: list[int], *, greedy: bool = True,
                 temperature: float = ROLLOUT_TEMPERATURE, generator: torch.Generator | None = None,
                 record: bool = False, named: list[int] | None = None,
                 on_step: Callable[[int, SimEnv], None] | None = None) -> list[dict]:
    """Roll the policy out from each seed; one dict per episode (seed, success, steps, end_reason,
    and with `record` the `trajectory`: what the policy saw and sampled per chunk, as the policy
    node publishes it: images (N, H, W, 3), state (N, P), token_ids (N, C*A), log_probs (N,),
    steps (N,)).

    `named[i]`: episode i's scene with that distractor named instead (`SimEnv.reset(named=)`);
    `on_step(i, env)` runs after every sim step of episode i, for diagnostics that read the
    privileged task state."""
    from vla_rl_ros.sim import make_env

    if named is None:
        named = [0] * len(seeds)
    elif len(named) != len(seeds):
        raise ValueError(f"named has {len(named)} entries for {len(seeds)} seeds; give one per seed")

    results: list[dict] = []
    for start in range(0, len(seeds), EVAL_BATCH):
        batch, names = seeds[start:start + EVAL_BATCH], named[start:start + EVAL_BATCH]
        envs = [make_env(task, image_size=policy.image_size, cameras=(policy.camera,),
                         action_dim=policy.action_dim) for _ in batch]
        try:
            observations = [env.reset(seed, named=k) for env, seed, k in zip(envs, batch, names, strict=True)]
            outcome: list[dict | None] = [None] * len(batch)
            seen: list[dict[str, list]] = [{k: [] for k in TRAJECTORY_KEYS} for _ in batch]
            while any(o is None for o in outcome):
                live = [i for i, o in enumerate(outcome) if o is None]
                images = np.stack([observations[i].images[policy.camera] for i in live])
                state = np.stack([observations[i].state for i in live])
                out = policy.act(images, state, [observations[i].instruction for i in live], greedy=greedy,
                                 temperature=temperature, generator=generator)
                for row, i in enumerate(live):
                    if record:
                        for key, value in zip(TRAJECTORY_KEYS, (images[row], state[row], out.token_ids[row],
                                                                out.log_probs[row], envs[i].steps), strict=True):
                            seen[i][key].append(value)
                    last = len(out.actions[row]) - 1
                    for k, action in enumerate(out.actions[row]):  # (C, A), open loop
                        # the camera renders only the frame the policy reads next, after the chunk's last action
                        envs[i].set_observed_cameras((policy.camera,) if k == last else ())
                        step = envs[i].step(action)
                        observations[i] = step.observation
                        if on_step is not None:
                            on_step(start + i, envs[i])
                        if step.done:
                            outcome[i] = {"seed": batch[i], "success": bool(step.info["episode_success"]),
                                          "steps": int(step.info["step"]), "end_reason": step.info["end_reason"]}
                            if record:
                                outcome[i]["trajectory"] = {k: np.stack(v) for k, v in seen[i].items()}
                            break
            results += outcome
        finally:
            for env in envs:
                env.close()
    return results


def evaluate(policy: VLAPolicy, tasks: list[str], episodes: int, *, tail: bool = False, greedy: bool = True,
             temperature: float = ROLLOUT_TEMPERATURE, generator: torch.Generator | None = None) -> dict:
    """Per-task success on held-out seeds with 95% Wilson intervals, and the suite mean: greedy, or
    sampled as `run_episodes` does (`vla-rl grpo-local --sampled-eval` sees what rollouts do)."""
    report: dict = {"episodes_per_task": episodes, "tasks": {}}
    for task in tasks:
        started = time.perf_counter()
        results = run_episodes(policy, task, heldout_seeds(task, episodes, tail=tail), greedy=greedy,
                               temperature=temperature, generator=generator)
        wins = sum(r["success"] for r in results)
        low, high = wilson_interval(wins, len(results))
        report["tasks"][task] = {"success_rate": wins / len(results), "successes": wins, "episodes": len(results),
                                 "ci95": [low, high], "seconds": time.perf_counter() - started,
                                 "episodes_detail": results}
    report["mean_success_rate"] = float(np.mean([t["success_rate"] for t in report["tasks"].values()]))
    return report


def format_report(report: dict) -> str:
    lines = [f"{'task':<12} {'success':>8}  95% CI          n"]
    for task, r in report["tasks"].items():
        lines.append(f"{task:<12} {r['success_rate']:>8.1%}  [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]  "
                     f"{r['episodes']:>4}")
    lines.append(f"{'mean':<12} {report['mean_success_rate']:>8.1%}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from vla_rl_ros.sim import TASKS

    parser = argparse.ArgumentParser(prog="vla-rl eval", description="greedy held-out success of a checkpoint")
    parser.add_argument("--checkpoint", required=True, help="policy checkpoint directory")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS),
                        help="tasks to evaluate (default: the whole suite)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help="held-out episodes per task (the first N held-out seeds)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"vla-rl eval: --episodes must be >= 1, got {args.episodes}")
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = VLAPolicy.load(args.checkpoint, device=args.device)
    report = evaluate(policy, args.tasks, args.episodes)
    report["checkpoint"] = str(args.checkpoint)
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
