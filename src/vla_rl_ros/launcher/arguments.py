"""A launch file's own arguments and includes, read without running it.

`ros2 launch <file> --show-args` lists the `arg`s of the file itself (in its groups too, whatever
their conditions), not those of the files it includes: their paths (`$(dirname)/...`) need a launch
context to resolve. So every argument a user may pass has to be declared by the file they launch;
`unlisted_arguments` finds those that are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vla_rl_ros.launcher.substitutions import LaunchError, SubstitutionScope, substitute


@dataclass(frozen=True)
class Argument:
    """One `arg` as written: its default (None: required), description and choices."""

    name: str
    default: str | None
    description: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Include:
    """One `include`: the file (resolved) and the arguments it passes, name -> value as written."""

    file: Path
    args: dict[str, str]


def _actions(path: Path) -> list[Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchError(f"cannot read launch file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("launch"), list):
        raise LaunchError(f"{path}: a YAML launch file is a mapping with one key `launch` holding a list")
    return doc["launch"]


def _walk(entities: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, body) of every action, groups' children included, in file order; includes not entered."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entity in entities:
        if not isinstance(entity, dict) or len(entity) != 1:
            continue
        (kind, body), = entity.items()
        body = body or {}
        out.append((kind, body))
        if kind == "group" and isinstance(body.get("children"), list):
            out += _walk(body["children"])
    return out


def declared_arguments(path: Path) -> dict[str, Argument]:
    """The arguments `path` declares itself, in file order: what `ros2 launch <path> --show-args` lists."""
    arguments: dict[str, Argument] = {}
    for kind, body in _walk(_actions(path)):
        if kind == "arg" and "name" in body:
            default = body.get("default")
            arguments.setdefault(str(body["name"]), Argument(
                str(body["name"]), None if default is None else str(default), str(body.get("description", "")),
                tuple(str(c["value"]) for c in body.get("choice", []) or []),
            ))
    return arguments


def includes(path: Path) -> list[Include]:
    """Every `include` of `path` (in groups too), its file resolved as ros2 launch would (`$(dirname)`,
    `$(find-pkg-share)`); a file named through `$(var)` cannot be resolved without running the launch."""
    path = Path(path).resolve()
    out = []
    for kind, body in _walk(_actions(path)):
        if kind != "include":
            continue
        try:
            file = Path(substitute(str(body["file"]), SubstitutionScope({}, path)))
        except LaunchError as exc:
            raise LaunchError(f"{path}: include {body.get('file')!r} cannot be resolved statically: {exc}") from exc
        if not file.is_absolute():
            file = path.parent / file
        out.append(Include(file.resolve(), {str(a["name"]): str(a["value"]) for a in body.get("arg", []) or []}))
    return out


def unlisted_arguments(path: Path) -> list[str]:
    """What `--show-args` of `path` would leave out or get wrong, one line each: an argument of an
    included file that the include does not pass and `path` does not declare, or declares with another
    default or other choices (the included file would then run otherwise than when launched alone).
    Empty when `path` declares every argument a user can give it."""
    path = Path(path).resolve()
    mine = declared_arguments(path)
    problems = []
    for include in includes(path):
        for name, theirs in declared_arguments(include.file).items():
            if name in include.args:
                continue
            if name not in mine:
                problems.append(f"{path.name}: argument {name!r} of {include.file.name} is not declared "
                                f"(ros2 launch --show-args does not list it)")
            elif mine[name].default != theirs.default:
                problems.append(f"{path.name}: argument {name!r} defaults to {mine[name].default!r}, "
                                f"{include.file.name} to {theirs.default!r}; pass it in the include or align them")
            elif mine[name].choices != theirs.choices:
                problems.append(f"{path.name}: argument {name!r} allows {list(mine[name].choices)}, "
                                f"{include.file.name} {list(theirs.choices)}")
    return problems
