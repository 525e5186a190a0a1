"""Expand a ROS 2 YAML launch file into the processes it starts.

Supported (as `ros2 launch` reads them): `arg` (default, description, choice), `let`, `set_env`,
`log`, `node` (pkg, exec, name, namespace, param (inline, nested and `from:` files), remap, env,
args, ros_args, output, on_exit: shutdown, respawn, respawn_delay), `executable` (cmd, name, cwd,
env, output, on_exit, respawn), `group` (scoped, children), `push_ros_namespace`, `include`
(file, arg), and `if:`/`unless:` on every action. Anything else is refused by name.
Arguments given as `name:=value` reach every file (an included one too) unless an include passes
that argument itself, as in `ros2 launch`. As there too, an `include` runs in the context of the
file that includes it: the arguments it passes and the launch configurations, environment and
namespace its file sets stay set after it, unless a `group` scopes it (the package's files put every
include in one). Differences from `ros2 launch`: a process with both `respawn` and `on_exit:
shutdown` is respawned after a crash and ends the launch when it exits cleanly (runner.py; ros2
launch ends the launch on any of its exits); an unknown `name:=` argument is refused (ros2 launch
ignores it); `name:=` with an empty value is taken (ros2 launch refuses it).
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ament_index_python.packages import get_package_prefix

from vla_rl_ros.launcher.substitutions import LaunchError, SubstitutionScope, substitute, to_bool
from vla_rl_ros.paths import PackageNotFoundError, package_share


@dataclass
class ProcessSpec:
    """One process the launch file starts."""

    label: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    output: str = "screen"          # screen | log | both
    required: bool = False          # on_exit: shutdown
    respawn: bool = False
    respawn_delay: float = 0.0


@dataclass
class Context:
    configs: dict[str, str]
    namespace: str
    env: dict[str, str]
    launch_file: Path

    def child(self) -> Context:
        return Context(dict(self.configs), self.namespace, dict(self.env), self.launch_file)

    def scope(self) -> SubstitutionScope:
        return SubstitutionScope(self.configs, self.launch_file)


@dataclass
class LaunchDescription:
    processes: list[ProcessSpec]
    arguments: dict[str, dict[str, Any]]   # every `arg` met: default, description, choices
    messages: list[str]                    # `log` actions, in order


CONDITION_KEYS = {"if", "unless"}
ALLOWED_KEYS = {
    "arg": {"name", "default", "description", "choice"},
    "let": {"name", "value"},
    "set_env": {"name", "value"},
    "log": {"message"},
    "node": {"pkg", "exec", "name", "namespace", "param", "remap", "env", "args", "ros_args", "output",
             "on_exit", "respawn", "respawn_delay", "exec_name"},
    "executable": {"cmd", "name", "cwd", "env", "output", "on_exit", "respawn", "respawn_delay"},
    "group": {"scoped", "children"},
    "push_ros_namespace": {"namespace"},
    "push-ros-namespace": {"namespace"},
    "include": {"file", "arg"},
}
OUTPUTS = ("screen", "log", "both")


class _Expander:
    def __init__(self, param_dir: Path) -> None:
        self.param_dir = param_dir
        self.processes: list[ProcessSpec] = []
        self.arguments: dict[str, dict[str, Any]] = {}
        self.messages: list[str] = []
        self.labels: dict[str, int] = {}

    # -- entry points --------------------------------------------------------------------------
    def file(self, path: Path, ctx: Context) -> None:
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise LaunchError(f"cannot read launch file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise LaunchError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(doc, dict) or set(doc) != {"launch"} or not isinstance(doc["launch"], list):
            raise LaunchError(f"{path}: a YAML launch file is a mapping with one key `launch` holding a list")
        self.actions(doc["launch"], ctx)

    def actions(self, entities: list[Any], ctx: Context) -> None:
        for entity in entities:
            if not isinstance(entity, dict) or len(entity) != 1:
                raise LaunchError(f"{ctx.launch_file}: each action is a one-key mapping, got {entity!r}")
            (kind, body), = entity.items()
            if kind not in ALLOWED_KEYS:
                raise LaunchError(
                    f"{ctx.launch_file}: action `{kind}` is not supported by vla-rl launch "
                    f"(supported: {', '.join(sorted(ALLOWED_KEYS))}); use `ros2 launch` for it"
                )
            body = body or {}
            if not isinstance(body, dict):
                raise LaunchError(f"{ctx.launch_file}: `{kind}` takes a mapping, got {body!r}")
            unknown = set(body) - ALLOWED_KEYS[kind] - CONDITION_KEYS
            if unknown:
                raise LaunchError(
                    f"{ctx.launch_file}: `{kind}` has attribute(s) {sorted(unknown)} that vla-rl launch "
                    f"does not support (supported: {sorted(ALLOWED_KEYS[kind] | CONDITION_KEYS)})"
                )
            if self.enabled(body, ctx, kind):
                getattr(self, "do_" + kind.replace("-", "_"))(body, ctx)

    # -- helpers ---------------------------------------------------------------------------------
    def sub(self, value: Any, ctx: Context) -> str:
        return substitute(str(value), ctx.scope())

    def enabled(self, body: dict[str, Any], ctx: Context, kind: str) -> bool:
        if "if" in body and "unless" in body:
            raise LaunchError(f"{ctx.launch_file}: `{kind}` has both if and unless")
        if "if" in body:
            return to_bool(self.sub(body["if"], ctx), f"{ctx.launch_file}: `{kind}` if")
        if "unless" in body:
            return not to_bool(self.sub(body["unless"], ctx), f"{ctx.launch_file}: `{kind}` unless")
        return True

    def label(self, base: str) -> str:
        self.labels[base] = self.labels.get(base, 0) + 1
        return f"{base}-{self.labels[base]}"

    def env_list(self, items: Any, ctx: Context, kind: str) -> dict[str, str]:
        env = {}
        for item in items or []:
            if not isinstance(item, dict) or set(item) != {"name", "value"}:
                raise LaunchError(f"{ctx.launch_file}: `{kind}` env entries need exactly name and value")
            env[self.sub(item["name"], ctx)] = self.sub(item["value"], ctx)
        return env

    def process_options(self, body: dict[str, Any], ctx: Context, kind: str) -> dict[str, Any]:
        output = self.sub(body.get("output", "screen"), ctx)
        if output not in OUTPUTS:
            raise LaunchError(f"{ctx.launch_file}: `{kind}` output must be one of {OUTPUTS}, got {output!r}")
        on_exit = body.get("on_exit")
        if on_exit is not None and self.sub(on_exit, ctx) != "shutdown":
            raise LaunchError(f"{ctx.launch_file}: `{kind}` on_exit supports only `shutdown`, got {on_exit!r}")
        return {
            "env": {**ctx.env, **self.env_list(body.get("env"), ctx, kind)},
            "output": output,
            "required": on_exit is not None,
            "respawn": to_bool(self.sub(body.get("respawn", False), ctx), f"`{kind}` respawn"),
            "respawn_delay": float(self.sub(body.get("respawn_delay", 0.0), ctx)),
        }

    # -- actions ---------------------------------------------------------------------------------
    def do_arg(self, body: dict[str, Any], ctx: Context) -> None:
        name = str(body["name"])
        choices = [str(c["value"]) for c in body.get("choice", [])]
        default = body.get("default")
        self.arguments.setdefault(name, {
            "default": None if default is None else str(default),
            "description": str(body.get("description", "")),
            "choices": choices,
        })
        if name in ctx.configs:  # given on the command line (the root's configurations) or by an include
            value = ctx.configs[name]
        elif default is not None:
            value = self.sub(default, ctx)
        else:
            raise LaunchError(f"{ctx.launch_file}: launch argument {name!r} has no default; pass {name}:=VALUE")
        if choices and value not in choices:
            raise LaunchError(f"launch argument {name}={value!r} is not one of {choices}")
        ctx.configs[name] = value

    def do_let(self, body: dict[str, Any], ctx: Context) -> None:
        ctx.configs[self.sub(body["name"], ctx)] = self.sub(body["value"], ctx)

    def do_set_env(self, body: dict[str, Any], ctx: Context) -> None:
        ctx.env[self.sub(body["name"], ctx)] = self.sub(body["value"], ctx)

    def do_log(self, body: dict[str, Any], ctx: Context) -> None:
        self.messages.append(self.sub(body["message"], ctx))

    def do_push_ros_namespace(self, body: dict[str, Any], ctx: Context) -> None:
        ctx.namespace = join_namespace(ctx.namespace, self.sub(body["namespace"], ctx))

    def do_group(self, body: dict[str, Any], ctx: Context) -> None:
        scoped = to_bool(self.sub(body.get("scoped", True), ctx), "`group` scoped")
        inner = ctx.child() if scoped else ctx
        children = body.get("children")
        if not isinstance(children, list):
            raise LaunchError(f"{ctx.launch_file}: `group` needs a `children` list")
        self.actions(children, inner)

    def do_include(self, body: dict[str, Any], ctx: Context) -> None:
        path = Path(self.sub(body["file"], ctx))
        if not path.is_absolute():
            path = ctx.launch_file.parent / path
        if not path.name.endswith((".yaml", ".yml")):
            raise LaunchError(f"{ctx.launch_file}: include of {path}: vla-rl launch reads YAML launch files only")
        # ros2 launch sets each passed argument as a launch configuration of this context, in order,
        # then runs the file in it: outside a group, all of it stays set for what follows.
        for item in body.get("arg", []) or []:
            ctx.configs[self.sub(item["name"], ctx)] = self.sub(item["value"], ctx)
        including, ctx.launch_file = ctx.launch_file, path.resolve()
        try:
            self.file(path, ctx)
        finally:
            ctx.launch_file = including

    def do_node(self, body: dict[str, Any], ctx: Context) -> None:
        for key in ("pkg", "exec"):
            if key not in body:
                raise LaunchError(f"{ctx.launch_file}: `node` needs `{key}`")
        pkg, exe = self.sub(body["pkg"], ctx), self.sub(body["exec"], ctx)
        cmd = resolve_executable(pkg, exe)
        if "args" in body:
            cmd += shlex.split(self.sub(body["args"], ctx))
        ros_args = ["--ros-args"]
        name = self.sub(body["name"], ctx) if "name" in body else None
        if name:
            ros_args += ["-r", f"__node:={name}"]
        namespace = join_namespace(ctx.namespace, self.sub(body.get("namespace", ""), ctx))
        if namespace != "/":
            ros_args += ["-r", f"__ns:={namespace}"]
        for param in body.get("param", []) or []:
            ros_args += ["--params-file", self.param_file(param, ctx)]
        for remap in body.get("remap", []) or []:
            if not isinstance(remap, dict) or set(remap) != {"from", "to"}:
                raise LaunchError(f"{ctx.launch_file}: `remap` entries need exactly from and to")
            ros_args += ["-r", f"{self.sub(remap['from'], ctx)}:={self.sub(remap['to'], ctx)}"]
        if "ros_args" in body:
            ros_args += shlex.split(self.sub(body["ros_args"], ctx))
        label = self.label(name or exe)
        self.processes.append(ProcessSpec(label, cmd + ros_args, **self.process_options(body, ctx, "node")))

    def do_executable(self, body: dict[str, Any], ctx: Context) -> None:
        cmd = shlex.split(self.sub(body["cmd"], ctx))
        if not cmd:
            raise LaunchError(f"{ctx.launch_file}: `executable` has an empty cmd")
        name = self.sub(body["name"], ctx) if "name" in body else Path(cmd[0]).name
        cwd = self.sub(body["cwd"], ctx) if "cwd" in body else None
        self.processes.append(
            ProcessSpec(self.label(name), cmd, cwd=cwd, **self.process_options(body, ctx, "executable"))
        )

    def param_file(self, param: Any, ctx: Context) -> str:
        """A `from:` file as it is, or inline parameters written to a params file (as launch_ros does)."""
        if not isinstance(param, dict):
            raise LaunchError(f"{ctx.launch_file}: `param` entries are mappings, got {param!r}")
        if "from" in param:
            if set(param) - {"from", "allow_substs"}:
                raise LaunchError(f"{ctx.launch_file}: a `param` with `from` takes no other keys but allow_substs")
            path = Path(self.sub(param["from"], ctx))
            if not path.is_file():
                raise LaunchError(f"{ctx.launch_file}: parameter file {path} does not exist")
            if not to_bool(self.sub(param.get("allow_substs", False), ctx), "`param` allow_substs"):
                return str(path)
            text = self.sub(path.read_text(), ctx)
        else:
            text = yaml.safe_dump({"/**": {"ros__parameters": self.inline_params([param], ctx)}})
        handle, name = tempfile.mkstemp(prefix="params_", suffix=".yaml", dir=self.param_dir)
        with os.fdopen(handle, "w") as f:
            f.write(text)
        return name

    def inline_params(self, params: list[Any], ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for param in params:
            if not isinstance(param, dict) or "name" not in param or set(param) - {"name", "value", "param"}:
                raise LaunchError(f"{ctx.launch_file}: inline `param` needs name and value (or nested param)")
            name = self.sub(param["name"], ctx)
            if "param" in param:
                out[name] = self.inline_params(param["param"], ctx)
            elif "value" in param:
                out[name] = self.typed(param["value"], ctx)
                if out[name] is None:  # ros2 launch refuses it too; rcl would read the string "null"
                    raise LaunchError(f"{ctx.launch_file}: parameter {name!r} is empty after substitution "
                                      f"({param['value']!r}); quote it to pass an empty string: "
                                      f"\"'{param['value']}'\"")
            else:
                raise LaunchError(f"{ctx.launch_file}: parameter {name!r} has no value")
        return out

    def typed(self, value: Any, ctx: Context) -> Any:
        """YAML-typed values stay typed; substituted strings are re-read as YAML, like launch_ros does."""
        if isinstance(value, list):
            return [self.typed(v, ctx) for v in value]
        if isinstance(value, str) and "$(" in value:
            text = self.sub(value, ctx)
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as exc:  # e.g. a path with an apostrophe inside '$(var ...)'
                raise LaunchError(f"{ctx.launch_file}: parameter value {value!r} is {text!r} after substitution, "
                                  f"which is not valid YAML ({exc.problem}); a quote in a launch argument must be "
                                  "doubled inside a quoted value ('') or avoided") from None
        return value


def join_namespace(outer: str, inner: str) -> str:
    """ROS namespace rules: an absolute inner namespace replaces the outer one."""
    inner = inner.strip()
    joined = inner if inner.startswith("/") else f"{outer}/{inner}"
    return "/" + "/".join(p for p in joined.split("/") if p)


def resolve_executable(pkg: str, exe: str) -> list[str]:
    """The command for `pkg`/`exe`: `<prefix>/lib/<pkg>/<exe>` from the ament index, else the
    console entry point `exe` of the installed Python distribution `pkg` (pip-only installs)."""
    try:
        candidate = Path(get_package_prefix(pkg)) / "lib" / pkg / exe
        if os.access(candidate, os.X_OK):
            return [str(candidate)]
    except (LookupError, KeyError, OSError, ValueError):
        pass
    try:
        points = importlib.metadata.distribution(pkg).entry_points
    except importlib.metadata.PackageNotFoundError:
        points = ()
    for point in points:
        if point.group == "console_scripts" and point.name == exe:
            script = Path(sysconfig.get_path("scripts")) / exe
            if os.access(script, os.X_OK):
                return [str(script)]
            module, _, attr = point.value.partition(":")
            return [sys.executable, "-c", f"import sys; from {module} import {attr}; sys.exit({attr}())"]
    raise LaunchError(f"node executable {exe!r} of package {pkg!r} not found (ament index, Python entry points)")


def resolve_launch_file(name: str) -> Path:
    """A path, or a launch file of this package's launch/ folder: `train_sim` or `train_sim.launch.yaml`."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    try:
        launch_dir = package_share("vla_rl_ros") / "launch"
    except PackageNotFoundError as exc:
        raise LaunchError(str(exc)) from exc
    for candidate in (name, f"{name}.launch.yaml"):
        if (launch_dir / candidate).is_file():
            return (launch_dir / candidate).resolve()
    available = ", ".join(sorted(p.name for p in launch_dir.glob("*.launch.yaml"))) or "none"
    raise LaunchError(f"launch file {name!r} not found (not a path; in {launch_dir}: {available})")


def describe(path: Path, overrides: dict[str, str], param_dir: Path) -> LaunchDescription:
    """Expand `path` with `name:=value` overrides into the processes it starts."""
    expander = _Expander(param_dir)
    path = Path(path).resolve()  # $(dirname) of a relative path would be taken relative twice
    # As ros2 launch: `name:=value` arguments are launch configurations of the root context, which
    # an included file sees unless its include passes that argument itself.
    expander.file(path, Context(dict(overrides), "/", {}, path))
    unknown = set(overrides) - set(expander.arguments)
    if unknown:
        declared = ", ".join(sorted(expander.arguments)) or "none"
        raise LaunchError(f"unknown launch argument(s) {sorted(unknown)} for {path.name} (declared: {declared})")
    return LaunchDescription(expander.processes, expander.arguments, expander.messages)
