"""`vla-rl plot RUN_DIR`: success curves and learner health from a run's metrics.csv, to PNG.

Top: training-rollout and held-out evaluation success per update (evaluation with Wilson 95%
intervals from the number of episodes behind each point). Bottom: kept-group fraction and clip
fraction, the two numbers that tell a starved learner (LEARNING_PROBE.md: clip at 0 and kept
groups below 30%).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vla_rl_ros.rl.metrics import METRICS_FILE, STEP_COLUMN, read_metrics
from vla_rl_ros.stats import wilson_interval

PLOT_FILE = "plot.png"
STARVED_KEPT_FRACTION = 0.3  # LEARNING_PROBE.md: below this (with the clip at 0) the learner starves


def series(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    """(updates, values) of the rows where `key` was logged."""
    points = [(float(r[STEP_COLUMN]), float(r[key])) for r in rows if r.get(key, "") != ""]
    return [x for x, _ in points], [y for _, y in points]


def eval_rounds(rows: list[dict[str, str]]) -> list[tuple[float, float, float]]:
    """(update, success rate, episodes) per evaluation round. The learner tallies evaluation results per
    update, so a round whose episodes straddle an update comes as two rows of the same policy version
    (say 2 episodes, then 18): they are merged, at the later update, instead of drawn as a 2-episode
    point."""
    rounds: list[tuple[float, float, float, float]] = []  # (update, version, successes, episodes)
    for r in rows:
        if r.get("eval/episodes", "") == "":
            continue
        update, n = float(r[STEP_COLUMN]), float(r["eval/episodes"])
        version = float(r.get("eval/policy_version") or "nan")  # nan (never merged) in metrics without it
        wins = float(r["eval/success_rate"]) * n
        if rounds and rounds[-1][1] == version:
            _, _, prior_wins, prior_n = rounds.pop()
            wins, n = wins + prior_wins, n + prior_n
        rounds.append((update, version, wins, n))
    return [(update, wins / n, n) for update, _, wins, n in rounds]


def plot_run(run_dir: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the run directory the learner wrote (it holds "
                                f"{METRICS_FILE})")
    rows = read_metrics(path)
    if not rows:
        raise ValueError(f"{path} has no rows yet; plot after the first update")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    x, y = series(rows, "rollout/success_rate")
    top.plot(x, y, color="tab:blue", alpha=0.6, label="training rollouts (sampled)")
    rounds = eval_rounds(rows)
    if rounds:
        x, y, n = zip(*rounds, strict=True)
        low, high = zip(*(wilson_interval(p * k, k) for p, k in zip(y, n, strict=True)), strict=True)
        top.fill_between(x, low, high, color="tab:orange", alpha=0.2, label="held-out 95% interval")
        top.plot(x, y, "o-", color="tab:orange", label="held-out evaluation (greedy)")
    top.set_ylabel("success rate")
    top.set_ylim(-0.02, 1.02)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    for key, colour in (("grpo/kept_group_fraction", "tab:green"), ("grpo/clip_fraction", "tab:red")):
        x, y = series(rows, key)
        bottom.plot(x, y, color=colour, label=key)
    bottom.axhline(STARVED_KEPT_FRACTION, color="tab:green", linestyle=":", linewidth=1)
    bottom.set_xlabel("update")
    bottom.set_ylabel("fraction")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left")
    bottom.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vla-rl plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory holding metrics.csv")
    parser.add_argument("--out", type=Path, help=f"PNG to write (default RUN_DIR/{PLOT_FILE})")
    args = parser.parse_args(argv)
    try:
        out = plot_run(args.run_dir, args.out or args.run_dir / PLOT_FILE)
    except (FileNotFoundError, ValueError) as err:
        print(f"vla-rl plot: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0
