"""`vla-rl tasks`: the sim task suite with its instructions, episode limits and seed splits."""

from __future__ import annotations

import argparse
import json

from vla_rl_ros.sim.tasks import TASKS
from vla_rl_ros.sim.tasks.base import TaskSpec


def describe(spec: TaskSpec) -> dict:
    """One task as plain data (also the --json output)."""
    return {
        "name": spec.name,
        "description": spec.description,
        "instruction_templates": list(spec.templates),
        "roles": list(spec.roles),
        "max_steps": spec.max_steps,
        "hold_steps": spec.hold_steps,
        "train_seeds": [spec.train_seeds.start, spec.train_seeds.stop],
        "heldout_seeds": [spec.heldout_seeds.start, spec.heldout_seeds.stop],
        "example_instruction": spec.sample(spec.train_seeds.start).instruction,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vla-rl tasks", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    tasks = [describe(spec) for spec in TASKS.values()]
    if args.json:
        print(json.dumps(tasks, indent=2))
        return 0
    for t in tasks:
        print(f"{t['name']}: {t['description']}")
        print(f"  episode limit {t['max_steps']} control steps (10 Hz); success must hold {t['hold_steps']} steps")
        print(f"  seeds: train [{t['train_seeds'][0]}, {t['train_seeds'][1]}), "
              f"held-out [{t['heldout_seeds'][0]}, {t['heldout_seeds'][1]})")
        print("  instructions: " + " | ".join(t["instruction_templates"]))
        print(f"  e.g. \"{t['example_instruction']}\"")
    return 0
