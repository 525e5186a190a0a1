"""Labelled sim episodes shaped like those an arm's recorder writes, for training and measuring the
success classifier without a robot.

A successful episode runs on for `after_success` steps once the task is done (an operator presses s on
seeing it, and the recorder keeps frames until the result); a failed one is the scripted expert with
its gripper kept open (it never grasps) or random actions, ended after `failure_steps` as an
operator's f would end it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_rl_ros.data import Episode
from vla_rl_ros.sim.demos import open_or_create
from vla_rl_ros.sim.env import make_env

MAX_STEPS = 400  # a guard: every task's expert succeeds far sooner


def record_episodes(out: Path, task: str, successes: int, failures: int, *, after_success: int = 8,
                    failure_steps: int = 40, image_size: int = 64, camera: str = "front", first_seed: int = 0,
                    seed: int = 0) -> None:
    """Append `successes` expert and `failures` failed episodes of `task` (one camera) to the dataset
    at `out`, on consecutive training seeds from first_seed; a ValueError if an episode came out with the
    other label (an expert that failed, a failing policy that succeeded)."""
    rng = np.random.default_rng(seed)
    with make_env(task, cameras=(camera,), image_size=image_size) as env:
        ds = open_or_create(out, env)
        for k in range(successes + failures):
            failing = k >= successes
            obs, frames, states, actions, done_at = env.reset(first_seed + k), [], [], [], None
            while len(frames) < (failure_steps if failing else MAX_STEPS):
                if not failing or k % 2 == 0:
                    action = env.task.expert(env)
                    if failing:
                        action[-1] = 0.0  # gripper open
                else:
                    action = np.append(rng.uniform(-0.05, 0.05, 3), rng.integers(0, 2)).astype(np.float32)
                frames.append(obs.images[camera])
                states.append(obs.state)
                actions.append(action)
                step = env.step(action)
                obs = step.observation
                if step.info["episode_success"] and done_at is None:
                    done_at = len(frames)
                if done_at is not None and len(frames) >= done_at + after_success:
                    break
            success = done_at is not None
            if success == failing:
                raise ValueError(f"{task} seed {first_seed + k}: the {'failing' if failing else 'expert'} policy "
                                 f"{'succeeded' if success else 'failed'}; try other seeds")
            ds.append(Episode(task=task, instruction=env.instruction, seed=first_seed + k, success=success,
                              reward=float(success), end_reason="success" if success else "timeout",
                              images={camera: np.stack(frames)}, state=np.stack(states), actions=np.stack(actions)))
