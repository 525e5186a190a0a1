"""`vla-rl launch <file or name> [name:=value ...]`: run a ROS 2 YAML launch file without `ros2 launch`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from vla_rl_ros.launcher.arguments import declared_arguments
from vla_rl_ros.launcher.description import describe, resolve_launch_file
from vla_rl_ros.launcher.runner import Runner
from vla_rl_ros.launcher.substitutions import LaunchError


def parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise LaunchError(f"launch arguments are written name:=value, got {item!r}")
        overrides[name] = value
    return overrides


def show_arguments(path: Path) -> None:
    """Print the arguments the file declares, as `ros2 launch --show-args` lists them (not those of
    the files it includes: ours declare those too)."""
    for argument in declared_arguments(path).values():
        default = "(required)" if argument.default is None else f"(default: {argument.default!r})"
        choices = f" one of {list(argument.choices)}" if argument.choices else ""
        print(f"  '{argument.name}': {argument.description}{choices} {default}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vla-rl launch",
        description="Run a ROS 2 YAML launch file (the same file `ros2 launch vla_rl_ros <file>` runs).",
    )
    parser.add_argument("file", help="a path, or a launch file of this package: train_sim, deploy, ...")
    parser.add_argument("arguments", nargs="*", help="launch arguments, name:=value")
    parser.add_argument("-s", "--show-args", action="store_true",
                        help="list the file's launch arguments and exit (as `ros2 launch --show-args`)")
    parser.add_argument("-p", "--print", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    log_root = Path(os.environ.get("ROS_LOG_DIR", Path.home() / ".ros" / "log"))
    log_dir = log_root / time.strftime("vla_rl_launch_%Y-%m-%d-%H-%M-%S")
    try:
        path = resolve_launch_file(args.file)
        if args.show_args:
            show_arguments(path)
            return 0
        with tempfile.TemporaryDirectory(prefix="vla_rl_launch_") as param_dir:
            description = describe(path, parse_overrides(args.arguments), Path(param_dir))
            if args.print:
                for spec in description.processes:
                    print(f"{spec.label}: {' '.join(spec.cmd)}")
                return 0
            for message in description.messages:
                print(f"[vla-rl launch] {message}")
            return Runner(description.processes, log_dir).run()
    except LaunchError as exc:
        print(f"vla-rl launch: error: {exc}", file=sys.stderr)
        return 2
