"""Control steps per second of the sim core against a raw MuJoCo step+render loop, in one run.

    .venv/bin/python benchmarks/bench_sim_core.py [--steps 300] [--sizes 64,128,224] [--json out.json]
                                                  [--experts 50]

raw:  the scene's MjModel, 50 physics substeps (one 10 Hz control step) + rendering both cameras.
core: SimEnv.step with random end-effector deltas (IK, limits, servo interpolation, both cameras,
      state, success predicate), resetting when an episode ends.
--experts N also runs every task's scripted expert on N held-out seeds (no rendering) and prints
the success rates and episode lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from vla_rl_ros.sim import CAMERAS, TASKS, make_env
from vla_rl_ros.sim.scene import scene_path

BENCH_TASK = "pick_place"  # the most objects in contact
MAX_DELTA = 0.05  # m, the env's per-axis action bound


def raw_loop(size: int, steps: int) -> float:
    model = mujoco.MjModel.from_xml_path(str(scene_path()))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    substeps = round(0.1 / model.opt.timestep)
    cams = [model.camera(c).id for c in CAMERAS]
    with mujoco.Renderer(model, size, size) as renderer:
        start = time.perf_counter()
        for _ in range(steps):
            mujoco.mj_step(model, data, substeps)
            for cam in cams:
                renderer.update_scene(data, cam)
                renderer.render()
        return steps / (time.perf_counter() - start)


def core_loop(size: int, steps: int) -> float:
    rng = np.random.default_rng(0)
    seeds = iter(TASKS[BENCH_TASK].train_seeds)
    with make_env(BENCH_TASK, image_size=size) as env:
        env.reset(next(seeds))
        start = time.perf_counter()
        for _ in range(steps):
            action = np.concatenate([rng.uniform(-MAX_DELTA, MAX_DELTA, 3), rng.uniform(0, 1, 1)])
            if env.step(action).done:
                env.reset(next(seeds))
        return steps / (time.perf_counter() - start)


def expert_rates(episodes: int) -> dict[str, dict]:
    out = {}
    for name, spec in TASKS.items():
        wins, lengths, steps = 0, [], 0
        start = time.perf_counter()
        with make_env(name, cameras=()) as env:
            for seed in spec.heldout_seeds[:episodes]:
                env.reset(seed)
                while not (result := env.step(spec.expert(env))).done:
                    pass
                wins += result.info["episode_success"]
                lengths.append(env.steps)
                steps += env.steps
        out[name] = {"success": wins, "episodes": episodes, "rate": wins / episodes,
                     "mean_length": float(np.mean(lengths)), "max_length": int(max(lengths)),
                     "max_steps": spec.max_steps, "steps_per_s": steps / (time.perf_counter() - start)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="control steps per measurement")
    parser.add_argument("--sizes", default="64,128,224", help="image sizes (px, square)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--experts", type=int, default=0, help="held-out episodes per task for expert rates")
    args = parser.parse_args()
    results: dict = {"cameras": list(CAMERAS), "control_hz": 10, "speed": []}
    print(f"control steps/s, rendering {len(CAMERAS)} cameras ({', '.join(CAMERAS)}), {args.steps} steps each")
    print(f"{'size':>6} {'raw':>9} {'core':>9} {'core/raw':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        raw, core = raw_loop(size, args.steps), core_loop(size, args.steps)
        results["speed"].append({"size": size, "raw_steps_per_s": raw, "core_steps_per_s": core,
                                 "core_over_raw": core / raw})
        print(f"{size:>6} {raw:>9.1f} {core:>9.1f} {core / raw:>9.2f}")
    if args.experts:
        results["experts"] = expert_rates(args.experts)
        print(f"\nscripted experts on {args.experts} held-out seeds per task (no rendering)")
        print(f"{'task':>11} {'success':>9} {'mean len':>9} {'max len':>8} {'limit':>6} {'steps/s':>8}")
        for name, r in results["experts"].items():
            print(f"{name:>11} {r['success']:>4}/{r['episodes']:<4} {r['mean_length']:>9.1f} {r['max_length']:>8} "
                  f"{r['max_steps']:>6} {r['steps_per_s']:>8.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
