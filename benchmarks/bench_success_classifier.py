"""Held-out precision/recall of the classifier success backend on sim-recorded episodes, per task.

    .venv/bin/python benchmarks/bench_success_classifier.py [--tasks open_drawer lift] [--successes 60]
                                                            [--failures 30] [--positive-tail 6] [--camera front]

Episodes come from success.sim_episodes (successes run on 8 steps past success, failures never grasp or
act at random, 40 steps); `vla-rl train-classifier` trains on three quarters of them, split by episode,
and prints its held-out figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vla_rl_ros.success import train
from vla_rl_ros.success.sim_episodes import record_episodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["open_drawer", "lift"])
    ap.add_argument("--successes", type=int, default=60)
    ap.add_argument("--failures", type=int, default=30)
    ap.add_argument("--positive-tail", type=int, default=6)
    ap.add_argument("--camera", default="front", choices=("front", "wrist"))
    args = ap.parse_args()
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            record_episodes(Path(tmp) / "episodes", task, args.successes, args.failures, camera=args.camera)
            print(f"== {task}, {args.camera} camera: {args.successes} successful + {args.failures} failed episodes in "
                  f"{time.monotonic() - t0:.0f} s")
            train.main(["--data", f"{tmp}/episodes", "--out", f"{tmp}/model", "--camera", args.camera,
                        "--positive-tail", str(args.positive_tail)])


if __name__ == "__main__":
    main()
