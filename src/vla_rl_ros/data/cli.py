"""`vla-rl dataset info|stats|merge|relabel|export|verify`: inspect and maintain episode datasets."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from vla_rl_ros.data.atomic import DatasetError
from vla_rl_ros.data.dataset import EpisodeDataset
from vla_rl_ros.data.tools import export_npz, merge, summary, verify

# Decimal places shown for statistics in the text output (the --json output keeps full precision).
SHOWN_DECIMALS = 4


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "success"):
        return True
    if text.lower() in ("0", "false", "no", "failure"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-rl dataset", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="episodes, frames, tasks and success rate per task")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = sub.add_parser("stats", help="per-feature statistics (from meta/stats.json)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = sub.add_parser("merge", help="append every episode of the sources to DEST once")
    p.add_argument("dest", help="destination root (created like the first source if missing)")
    p.add_argument("sources", nargs="+", help="source dataset roots")
    p = sub.add_parser("relabel", help="change an episode's success label (an operator's correction)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("episode", help="episode index, or the episode_id it was recorded with")
    p.add_argument("--success", type=_bool, required=True, help="the corrected label: true or false")
    p.add_argument("--reward", type=float, default=None, help="reward to store (default: 1.0 if success else 0.0)")
    p = sub.add_parser("export", help="to one flat .npz, or to a rosbag2 MCAP folder (standard ROS messages)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("out", help="output: a .npz file, or a new folder for the rosbag2 MCAP bag")
    p.add_argument(
        "--format", choices=("npz", "mcap"), default=None, help="default: npz if OUT ends in .npz, else mcap"
    )
    p.add_argument("--no-images", action="store_true", help="npz: leave the camera frames out")
    p.add_argument("--namespace", default="", help="mcap: topic namespace of the arm, e.g. /arm0")
    p = sub.add_parser("verify", help="decode every episode; list unreadable files by name")
    p.add_argument("root", help="dataset root folder")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (DatasetError, IndexError, KeyError, ValueError) as exc:  # bad input: one line, not a traceback
        print(f"vla-rl dataset {args.command}: {exc}", file=sys.stderr)
        return 1


def _info(args: argparse.Namespace) -> int:
    info = summary(EpisodeDataset.open(args.root))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['root']}: {info['episodes']} episodes, {info['frames']} frames at {info['fps']} fps")
    print(f"cameras: {', '.join(f'{n} {h}x{w}' for n, (h, w) in info['cameras'].items())}")
    print(f"{info['instructions']} instructions; per task:")
    for task, t in info["tasks"].items():
        evaluation = f"  eval {t['eval_success_rate']:6.1%} of {t['eval_episodes']}" if t["eval_episodes"] else ""
        counts = f"{t['episodes']:>6} episodes {t['successes']:>6} successes {t['success_rate']:6.1%}"
        print(f"  {task:<24} {counts}{evaluation}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    ds = EpisodeDataset.open(args.root)
    stats = ds.stats()
    if args.json:
        print(json.dumps({k: {s: v.tolist() for s, v in st.items()} for k, st in stats.items()}, indent=2))
        return 0
    np.set_printoptions(precision=SHOWN_DECIMALS, suppress=True, linewidth=120)
    for key, st in stats.items():
        names = ds.features[key]["names"]
        print(f"{key}  ({int(st['count'][0])} samples; names {names})")
        for stat in ("mean", "std", "min", "max"):
            print(f"  {stat:<5} {st[stat]}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    result = merge(args.dest, args.sources, progress=True)
    print(f"{args.dest}: added {result.added} episodes, skipped {result.duplicates} duplicates")
    return 0


def _relabel(args: argparse.Namespace) -> int:
    ds = EpisodeDataset.open(args.root)
    index = int(args.episode) if args.episode.lstrip("-").isdigit() else ds.index_of(args.episode)
    before = ds.meta(index)
    ds.relabel(index, success=args.success, reward=args.reward)
    after = ds.meta(index)
    print(
        f"episode {after['episode_index']}: success {before['success']} -> {after['success']}, "
        f"reward {before['reward']} -> {after['reward']}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    ds = EpisodeDataset.open(args.root)
    fmt = args.format or ("npz" if args.out.endswith(".npz") else "mcap")
    if fmt == "npz":
        path = export_npz(ds, args.out, images=not args.no_images, progress=True)
    else:
        from vla_rl_ros.data.bag import export_mcap  # rosbags only when asked for

        path = export_mcap(ds, args.out, namespace=args.namespace, progress=True)
    print(f"wrote {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    ds = EpisodeDataset.open(args.root)
    problems = verify(ds, progress=True)
    for line in problems:
        print(line)
    print(f"{len(ds)} episodes checked, {len(problems)} unreadable")
    return 1 if problems else 0


COMMANDS = {
    "info": _info,
    "stats": _stats,
    "merge": _merge,
    "relabel": _relabel,
    "export": _export,
    "verify": _verify,
}
