"""`vla-rl`: the project's command line. Each sub-command lives in its own module, imported only
when used, so `vla-rl tasks` does not pay for importing torch."""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dataset": ("vla_rl_ros.data.cli", "inspect, merge, relabel and export episode datasets (LeRobot v3)"),
    "launch": ("vla_rl_ros.launcher.cli", "run a ROS 2 YAML launch file without a ROS 2 install"),
    "tasks": ("vla_rl_ros.sim.tasks_cli", "list the sim tasks: instructions, episode limits, seed splits"),
    "demos": ("vla_rl_ros.sim.demos", "write scripted-expert demonstrations of sim tasks as an episode dataset"),
    "plot": ("vla_rl_ros.rl.plot", "draw a run's success curves and learner health to PNG"),
    "sft": ("vla_rl_ros.policy.sft", "supervised fine-tuning of a VLA policy on demonstration datasets"),
    "eval": ("vla_rl_ros.policy.evaluate", "greedy held-out success of a policy checkpoint, with 95% CIs"),
    "grpo-local": ("vla_rl_ros.rl.local", "GRPO in one process without ROS: the quick way to probe settings"),
    "train-classifier": ("vla_rl_ros.success.train", "train the image success classifier from recorded episodes"),
    "operator": ("vla_rl_ros.nodes.operator_tool",
                 "terminal tool: label episodes (s/f), ready after reset (r), abort (a)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: vla-rl <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    lines += ["", "`vla-rl <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vla-rl: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
