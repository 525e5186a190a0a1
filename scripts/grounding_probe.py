"""Does a policy do what the words say? Each held-out scene is run once per graspable object, with the
instruction naming that object (`SimEnv.reset(seed, named=k)`: same scene, other words), greedily.

For every episode it records the object the tool centre point came closest to (in the table plane)
and prints, per task: success, how often the policy ended at the named object ("follows"), and how
often it ended at the object it goes to when the scene's own instruction is given ("same as
named 0"). A policy that reads the words follows far above chance (1 / objects) and its choice
moves with the name; one that picks from the image alone follows at chance and keeps its choice.

With `--group-size G` it asks what GRPO's rollouts explore instead: G sampled rollouts per scene under
its own instruction, at `--temperature`, as one group; it prints how many groups end at more than one
object and how many have some but not all successes (the groups dynamic sampling keeps).

    .venv/bin/python scripts/grounding_probe.py --checkpoint models/default_policy --tasks reach,lift --scenes 30
    .venv/bin/python scripts/grounding_probe.py --checkpoint models/start_policy --tasks lift --group-size 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.paths import default_checkpoint
from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.policy.evaluate import heldout_seeds, run_episodes
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE
from vla_rl_ros.sim import SimEnv, get_task


def closest_objects(policy: VLAPolicy, task: str, runs: list[tuple[int, int]], *, greedy: bool = True,
                    temperature: float = ROLLOUT_TEMPERATURE, generator: torch.Generator | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Episodes of (seed, named), greedy or sampled at `temperature` -> (success (N,), placement index
    the TCP came closest to (N,), in the scene's own order, so indices compare across names)."""
    spec = get_task(task)
    nearest = [np.full(len(spec.sample(seed).placements), np.inf) for seed, _ in runs]

    def track(i: int, env: SimEnv) -> None:
        state = env.task_state()
        nearest[i] = np.minimum(nearest[i], np.linalg.norm(state.object_pos[:, :2] - state.ee_pos[:2], axis=1))

    results = run_episodes(policy, task, [seed for seed, _ in runs], named=[k for _, k in runs], on_step=track,
                           greedy=greedy, temperature=temperature, generator=generator)
    # Placements are in role order for each name; map back to the scene's own order.
    scene_index = []
    for (_, named), gaps in zip(runs, nearest, strict=True):
        k = int(np.argmin(gaps))
        swap = {0: named, named: 0} if named else {}
        scene_index.append(swap.get(k, k))
    return np.array([r["success"] for r in results]), np.array(scene_index)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="policy (default: the embedded default)")
    parser.add_argument("--tasks", default="reach,lift")
    parser.add_argument("--scenes", type=int, default=30, help="held-out scenes per task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=0,
                        help="G > 0: G sampled rollouts per scene, own instruction, as GRPO groups")
    parser.add_argument("--temperature", type=float, default=ROLLOUT_TEMPERATURE,
                        help="sampling temperature with --group-size")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = VLAPolicy.load(args.checkpoint or default_checkpoint())
    if args.group_size > 0:
        return explored(policy, args)
    print(f"{'task':6} {'named':>5} {'episodes':>8} {'success':>8} {'follows':>8} {'same as named 0':>16}")
    for task in args.tasks.split(","):
        spec = get_task(task)
        runs = [(seed, k) for seed in heldout_seeds(task, args.scenes)
                for k in (0, *spec.distractor_objects(spec.sample(seed).placements))]
        success, chosen = closest_objects(policy, task, runs)
        named = np.array([k for _, k in runs])
        seeds = np.array([s for s, _ in runs])
        own = {s: c for s, k, c in zip(seeds, named, chosen, strict=True) if k == 0}
        same = np.array([c == own[s] for s, c in zip(seeds, chosen, strict=True)])
        for label, rows in (("own", named == 0), ("other", named > 0), ("all", named >= 0)):
            print(f"{task:6} {label:>5} {rows.sum():8d} {success[rows].mean():8.0%} "
                  f"{(chosen[rows] == named[rows]).mean():8.0%} {same[rows].mean():16.0%}")
    return 0


def explored(policy: VLAPolicy, args: argparse.Namespace) -> int:
    """What a group of sampled rollouts explores: the choice of object, the outcome."""
    size, generator = args.group_size, torch.Generator().manual_seed(0)
    print(f"{'task':6} {'groups':>6} {'success':>8} {'follows':>8} {'>1 object chosen':>17} {'mixed success':>14}")
    for task in args.tasks.split(","):
        runs = [(seed, 0) for seed in heldout_seeds(task, args.scenes) for _ in range(size)]
        success, chosen = closest_objects(policy, task, runs, greedy=False, temperature=args.temperature,
                                          generator=generator)
        success, chosen = success.reshape(-1, size), chosen.reshape(-1, size)
        varied = np.array([len(set(group)) > 1 for group in chosen])
        mixed = (success.sum(1) > 0) & (success.sum(1) < size)
        print(f"{task:6} {len(chosen):6d} {success.mean():8.0%} {(chosen == 0).mean():8.0%} {varied.mean():17.0%} "
              f"{mixed.mean():14.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
