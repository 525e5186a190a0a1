"""`$(...)` substitutions of the ROS 2 launch frontend, evaluated eagerly against a context."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.paths import package_share


class LaunchError(Exception):
    """A launch file cannot be run as written; the message names the file and the construct."""


@dataclass(frozen=True)
class SubstitutionScope:
    """What substitutions can see: launch configurations and the file being read."""

    configs: Mapping[str, str]
    launch_file: Path


TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


def to_bool(text: str, what: str) -> bool:
    """Launch's boolean rule: true/false or 1/0, case-insensitive; anything else is an error."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise LaunchError(f"{what}: expected true/false or 1/0, got {text!r}")


def _var(scope: SubstitutionScope, args: list[str]) -> str:
    if len(args) != 1:
        raise LaunchError(f"$(var) takes one name, got {args}")
    if args[0] not in scope.configs:
        known = ", ".join(sorted(scope.configs)) or "none"
        raise LaunchError(f"$(var {args[0]}): no launch argument or `let` named {args[0]!r} (known: {known})")
    return scope.configs[args[0]]


def _env(scope: SubstitutionScope, args: list[str]) -> str:
    if len(args) not in (1, 2):
        raise LaunchError(f"$(env NAME [default]) takes one or two words, got {args}")
    if args[0] in os.environ:
        return os.environ[args[0]]
    if len(args) == 2:
        return args[1]
    raise LaunchError(f"$(env {args[0]}): environment variable not set and no default given")


def _one(name: str, fn: Callable[[str], str]) -> Callable[[SubstitutionScope, list[str]], str]:
    def apply(scope: SubstitutionScope, args: list[str]) -> str:
        if len(args) != 1:
            raise LaunchError(f"$({name}) takes one word, got {args}")
        return fn(args[0])

    return apply


def _bools(name: str, combine: Callable[[list[bool]], bool]) -> Callable[[SubstitutionScope, list[str]], str]:
    def apply(scope: SubstitutionScope, args: list[str]) -> str:
        if not args:
            raise LaunchError(f"$({name}) needs at least one value")
        return str(combine([to_bool(a, f"$({name})") for a in args])).lower()

    return apply


def _compare(equal: bool) -> Callable[[SubstitutionScope, list[str]], str]:
    def apply(scope: SubstitutionScope, args: list[str]) -> str:
        if len(args) != 2:
            raise LaunchError(f"$({'equals' if equal else 'not-equals'}) takes two values, got {args}")
        return str((args[0] == args[1]) == equal).lower()

    return apply


SUBSTITUTIONS: dict[str, Callable[[SubstitutionScope, list[str]], str]] = {
    "var": _var,
    "env": _env,
    "find-pkg-share": _one("find-pkg-share", lambda pkg: str(package_share(pkg))),
    "dirname": lambda scope, args: str(scope.launch_file.parent),
    "filename": lambda scope, args: str(scope.launch_file),
    "not": lambda scope, args: str(not to_bool(" ".join(args), "$(not)")).lower(),
    "and": _bools("and", all),
    "or": _bools("or", any),
    "all": _bools("all", all),
    "any": _bools("any", any),
    "equals": _compare(True),
    "not-equals": _compare(False),
}


def substitute(text: str, scope: SubstitutionScope) -> str:
    """Expand every `$(name args...)` in `text`, innermost first; refuse unknown names."""
    out, i = [], 0
    while i < len(text):
        start = text.find("$(", i)
        if start < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        end = _matching_paren(text, start + 1)
        inner = substitute(text[start + 2 : end], scope)
        words = shlex.split(inner)
        if not words:
            raise LaunchError(f"empty substitution in {text!r}")
        name, args = words[0], words[1:]
        if name not in SUBSTITUTIONS:
            raise LaunchError(
                f"substitution $({name}) is not supported by vla-rl launch "
                f"(supported: {', '.join(sorted(SUBSTITUTIONS))}); use `ros2 launch` for it"
            )
        try:
            out.append(SUBSTITUTIONS[name](scope, args))
        except LookupError as exc:
            raise LaunchError(f"$({inner}): {exc}") from exc
        i = end + 1
    return "".join(out)


def _matching_paren(text: str, open_index: int) -> int:
    depth = 0
    for j in range(open_index, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise LaunchError(f"unclosed $( in {text!r}")
