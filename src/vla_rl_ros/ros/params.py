"""Node parameters declared from a dataclass: one place for type, default, unit, range and description.

A node's parameters are a dataclass whose fields carry `param(...)` metadata. `declare(node, Params)`
declares each as a read-only ROS parameter with a ParameterDescriptor, reads the values given by
launch files and --params-file, builds the dataclass (whose __post_init__ checks cross-field rules)
and refuses parameters the node does not have, naming them, instead of silently ignoring a typo.
Parameters are read once at start-up: restart the node to change them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, get_type_hints

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

P = TypeVar("P")

# Parameters every rclpy node has, which no Params dataclass declares.
BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}


class ParameterError(ValueError):
    """A node was given a parameter it does not have, or a value outside its range."""


def param(default: Any, description: str, *, unit: str = "", low: float | None = None,
          high: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field that is also a ROS parameter. `low`/`high` bound numbers, `choices` strings."""
    meta = {"description": description, "unit": unit, "low": low, "high": high, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def threads_param() -> Any:
    """The torch CPU threads parameter of the nodes that run a model (policy node, learner)."""
    return param(1, "torch CPU threads (intra-op); 0: torch's default, one per core. One suits the tiny "
                 "default on a machine shared with the sims: idle OpenMP threads spin on cores they need",
                 low=0, high=1024)


def _meta(field: dataclasses.Field[Any]) -> dict[str, Any]:
    """`param(...)` metadata, or a config dataclass's plain `{"help": ...}` (e.g. GRPOConfig's fields)."""
    meta = field.metadata
    return {"description": meta.get("description", meta.get("help", "")), "unit": meta.get("unit", ""),
            "low": meta.get("low"), "high": meta.get("high"), "choices": meta.get("choices", ())}


def descriptor(field: dataclasses.Field[Any], value_type: type) -> ParameterDescriptor:
    meta = _meta(field)
    text = meta["description"] + (f" [{meta['unit']}]" if meta["unit"] else "")
    if meta["choices"]:
        text += f" (one of: {', '.join(meta['choices'])})"
    # A float parameter accepts an integer (`-p rate_hz:=20`); the value is converted after reading.
    desc = ParameterDescriptor(name=field.name, description=text, read_only=True, dynamic_typing=value_type is float)
    if meta["low"] is not None and meta["high"] is not None:
        if value_type is int:
            desc.integer_range = [IntegerRange(from_value=int(meta["low"]), to_value=int(meta["high"]), step=0)]
        elif value_type is float:
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(meta["low"]), to_value=float(meta["high"]), step=0.0)
            ]
    return desc


def check(params_cls: type, name: str, value: Any) -> None:
    """Range and choice checks with a message that names the parameter, the value and what is allowed."""
    meta = _meta({f.name: f for f in dataclasses.fields(params_cls)}[name])
    if meta["choices"] and value not in meta["choices"]:
        raise ParameterError(f"parameter {name}={value!r} is not one of {list(meta['choices'])}")
    low, high = meta["low"], meta["high"]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
        (low is not None and value < low) or (high is not None and value > high)
    ):
        raise ParameterError(f"parameter {name}={value!r} is outside [{low}, {high}] {meta['unit']}".rstrip())


def declare(node: Node, params_cls: type[P], passed_on: tuple[str, ...] = ()) -> P:
    """Declare `params_cls`'s fields on `node` and return the values it was started with. Overrides named
    `<n>.<parameter>` for n in `passed_on` are another node's, which checks them (`nodes/sim_arms.py`)."""
    hints = get_type_hints(params_cls)
    values: dict[str, Any] = {}
    # rclpy keeps overrides for undeclared names without complaint; a typo would go unnoticed.
    overrides = node._parameter_overrides
    for field in dataclasses.fields(params_cls):  # type: ignore[arg-type]
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        value_type = float if hints[field.name] is float else type(default)
        if field.name in overrides:  # checked first, so the error names the range, not rclpy's internals
            check(params_cls, field.name, overrides[field.name].value)
        value = node.declare_parameter(field.name, default, descriptor(field, value_type)).value
        if value_type is float and isinstance(value, int):
            value = float(value)
        elif isinstance(default, tuple):  # ROS arrays come back as lists
            value = tuple(value)
        check(params_cls, field.name, value)
        values[field.name] = value
    unknown = {name for name in set(overrides) - set(values) - BUILTIN_PARAMETERS
               if name.split(".", 1)[0] not in passed_on or "." not in name}
    if unknown:
        raise ParameterError(
            f"node {node.get_name()} has no parameter(s) {sorted(unknown)}; "
            f"it has: {', '.join(sorted(values))}"
        )
    try:
        return params_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"node {node.get_name()}: {exc}") from exc


def defaults(params_cls: type) -> dict[str, Any]:
    """The defaults of a Params dataclass, as they appear in config/*.yaml (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params_cls()).items()}
