"""`vla-rl demos`: scripted-expert demonstrations on training seeds, written as an episode dataset
(LeRobotDataset v3 layout, vla_rl_ros.data) for supervised fine-tuning."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_rl_ros.data import DatasetError, Episode, EpisodeDataset
from vla_rl_ros.sim.env import ACTION_MODES, CAMERAS, STATE_NAMES, SimEnv, make_env
from vla_rl_ros.sim.tasks import TASKS, get_task

ROBOT_TYPE = "franka_panda"
DART_STREAM = 7  # second seed word of the noise generator, so noise never correlates with the layout
SEED_TRIES_PER_EPISODE = 5  # seeds tried per kept episode before giving up (the experts fail < 5%)


def expert_episode(env: SimEnv, seed: int, *, noise: float = 0.0, named: int = 0) -> Episode:
    """One expert episode from `seed` (`named`: SimEnv.reset's): frame t is the observation the
    expert acted on and its action.

    noise > 0 is DART (Laskey et al. 2017): the arm executes the expert's translation plus Gaussian
    noise of that std (m per axis and step) while the frame keeps the expert's clean action as its
    label, so the demonstrations visit the off-course states a learnt policy drifts into and show how
    to recover from them (the experts are stateless, so they take over from anywhere)."""
    obs = env.reset(seed, named=named)
    rng = np.random.default_rng([seed, DART_STREAM])
    images: dict[str, list[np.ndarray]] = {cam: [] for cam in env.cameras}
    states, actions = [], []
    while True:
        clean = env.task.expert_fn(env.task_state(), env.task.config)  # (4,) [dx, dy, dz, gripper]
        executed = clean.copy()
        if noise > 0:
            executed[:3] += rng.normal(0.0, noise, 3).astype(executed.dtype)
        for cam in env.cameras:
            images[cam].append(obs.images[cam])
        states.append(obs.state)
        actions.append(env.from_ee_action(clean))
        result = env.step(env.from_ee_action(executed))
        obs = result.observation
        if result.done:
            break
    success = bool(result.info["episode_success"])
    return Episode(
        task=env.task.name, instruction=env.instruction, seed=seed, success=success,
        reward=float(success), end_reason=result.info["end_reason"],
        images={cam: np.stack(frames) for cam, frames in images.items()},  # (T, H, W, 3)
        state=np.stack(states), actions=np.stack(actions),  # (T, P), (T, A)
    )


def open_or_create(out: Path, env: SimEnv) -> EpisodeDataset:
    """Append to an existing dataset at `out` (same features), or create it."""
    if out.exists() and any(out.iterdir()):
        return EpisodeDataset.open(out)
    return EpisodeDataset.create(
        out, fps=round(1 / env.config.control_dt), cameras={c: (env.image_size, env.image_size) for c in env.cameras},
        state_names=STATE_NAMES, action_names=env.action_names, robot_type=ROBOT_TYPE)


def write_demos(out: Path, tasks: list[str], per_task: int, *, image_size: int = 64,
                cameras: tuple[str, ...] = CAMERAS, action_mode: str = "ee_delta", action_dim: int | None = None,
                first_seed: int = 0, keep_failures: bool = False, noise: float = 0.0,
                name_each_object: bool = False, progress: bool = True) -> dict[str, Counter]:
    """Write `per_task` expert episodes of each task from consecutive training seeds starting at
    first_seed; failed episodes are skipped (and the next seed tried) unless keep_failures.
    name_each_object: one episode per graspable object of each seed's scene, that object named (so
    the instruction alone tells the scene's demonstrations apart); they count towards per_task.
    Returns per-task counts of kept, failed and tried episodes."""
    specs = [get_task(name) for name in tasks]
    counts: dict[str, Counter] = {}
    dataset = None
    with tqdm(total=per_task * len(specs), desc="demos", unit="episode", disable=not progress) as bar:
        for spec in specs:
            counts[spec.name] = count = Counter()
            with make_env(spec.name, image_size=image_size, cameras=cameras, action_mode=action_mode,
                          action_dim=action_dim) as env:
                dataset = dataset or open_or_create(out, env)
                seed, queue = first_seed, []
                while count["kept"] < per_task:
                    if count["tried"] >= SEED_TRIES_PER_EPISODE * per_task:
                        raise RuntimeError(f"task {spec.name}: the expert failed {count['failed']} of "
                                           f"{count['tried']} episodes; check the task's expert")
                    if not queue:
                        layout = spec.train_seeds[seed]
                        others = spec.distractor_objects(spec.sample(layout).placements) if name_each_object else []
                        queue, seed = [(layout, k) for k in (0, *others)], seed + 1
                    layout, named = queue.pop(0)
                    episode = expert_episode(env, layout, noise=noise, named=named)
                    count["tried"] += 1
                    count["failed"] += not episode.success
                    if episode.success or keep_failures:
                        dataset.append(episode)
                        count["kept"] += 1
                        bar.update()
                        bar.set_postfix(task=spec.name, failed=sum(c["failed"] for c in counts.values()))
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vla-rl demos", description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated task names (default: all: {','.join(TASKS)})")
    parser.add_argument("--per-task", type=int, required=True, help="episodes to write per task")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (created, or appended to)")
    parser.add_argument("--image-size", type=int, default=64, help="camera images are SIZE x SIZE (even)")
    parser.add_argument("--cameras", default=",".join(CAMERAS), help="comma-separated camera names")
    parser.add_argument("--action-mode", choices=ACTION_MODES, default="ee_delta", help="action space to record")
    parser.add_argument("--action-dim", type=int, default=None, help="ee_delta: 4 (default) or 7")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="index into each task's training seeds to start from (use disjoint ranges "
                             "when several runs write one dataset)")
    parser.add_argument("--keep-failures", action="store_true", help="also write episodes the expert failed")
    parser.add_argument("--name-each-object", action="store_true",
                        help="demonstrate each scene once per graspable object, that object named in the "
                             "instruction, so a policy must read the words to tell them apart")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="DART: std (m per axis and step) of noise added to the executed translation; "
                             "labels stay the expert's clean actions (default 0: none)")
    args = parser.parse_args(argv)
    if args.per_task < 1:
        parser.error(f"--per-task {args.per_task} must be at least 1")
    if not 0 <= args.noise < 1:
        parser.error(f"--noise {args.noise} must be in [0, 1) m")
    try:
        counts = write_demos(args.out, [t for t in args.tasks.split(",") if t], args.per_task,
                             image_size=args.image_size, cameras=tuple(args.cameras.split(",")),
                             action_mode=args.action_mode, action_dim=args.action_dim,
                             first_seed=args.first_seed, keep_failures=args.keep_failures, noise=args.noise,
                             name_each_object=args.name_each_object)
    except (ValueError, DatasetError, RuntimeError) as exc:
        print(f"vla-rl demos: {exc}", file=sys.stderr)
        return 1
    for task, c in counts.items():
        print(f"{task}: wrote {c['kept']} episodes, expert success {c['tried'] - c['failed']}/{c['tried']}")
    print(f"dataset: {args.out}")
    return 0
