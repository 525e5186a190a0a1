"""Node parameters: declared with descriptors, unknown names refused, ranges checked, config/ YAML in step."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.node import Node

from vla_rl_ros.ros.params import ParameterError, declare, defaults, param

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class DemoParams:
    rate_hz: float = param(10.0, "control rate", unit="Hz", low=1.0, high=100.0)
    arms: list[str] = param(["arm0"], "arm namespaces served")
    mode: str = param("ee_delta", "action mode", choices=("ee_delta", "joint_position"))
    steps: int = param(5, "steps", low=1, high=10)


def make_node(*overrides: str) -> tuple[Node, Context]:
    context = Context()
    rclpy.init(context=context, args=["--ros-args", *[a for o in overrides for a in ("-p", o)]],
               domain_id=0)
    return Node("demo", context=context), context


def close(node: Node, context: Context) -> None:
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_declares_with_descriptions_and_reads_overrides() -> None:
    node, context = make_node("rate_hz:=20", "mode:=joint_position")
    try:
        values = declare(node, DemoParams)
        assert values == DemoParams(rate_hz=20.0, mode="joint_position")
        described = node.describe_parameter("rate_hz")
        assert described.description == "control rate [Hz]" and described.read_only
        assert described.floating_point_range[0].to_value == 100.0
        assert "one of: ee_delta, joint_position" in node.describe_parameter("mode").description
    finally:
        close(node, context)


@pytest.mark.parametrize(("override", "message"), [
    ("rate_hx:=20", "has no parameter(s) ['rate_hx']"),
    ("mode:=cartesian", "mode='cartesian' is not one of"),
    ("steps:=11", "steps=11 is outside [1, 10]"),
])
def test_bad_parameters_are_refused_by_name(override: str, message: str) -> None:
    node, context = make_node(override)
    try:
        with pytest.raises(ParameterError) as err:
            declare(node, DemoParams)
        assert message in str(err.value)
    finally:
        close(node, context)


def node_params_classes() -> dict[str, type]:
    """Every node's Params class, by node name, from the nodes registry."""
    from vla_rl_ros.nodes import node_params

    return node_params()


@pytest.mark.parametrize("node_name", sorted(node_params_classes()))
def test_config_yaml_defaults_equal_the_code(node_name: str) -> None:
    cls = node_params_classes()[node_name]
    config = yaml.safe_load((REPO / "config" / f"{node_name}.yaml").read_text())
    assert config == {f"/**/{node_name}": {"ros__parameters": defaults(cls)}}


@pytest.mark.parametrize("node", ["executor", "sim_bridge", "success_detector", "episode_manager", "recorder",
                                  "camera_node", "sim_arms"])
def test_nodes_without_a_model_do_not_import_torch(node: str) -> None:
    """torch costs each process ~190 MiB and seconds of start-up; only the policy node, the learner and
    a classifier backend need it."""
    code = f"import sys, vla_rl_ros.nodes.{node}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_sim_arms_gives_each_composed_arm_its_share_of_the_evaluation_seeds() -> None:
    """Several arms in one sim_arms process: each episode manager got arm_index 0, 1, ... but num_arms 1,
    which it refused (arm_index must be below num_arms): the process exited with status 2, respawned."""
    from vla_rl_ros.nodes.sim_arms import SimArms

    rclpy.init(args=["--ros-args", "-p", "arms:=[a0, a1, a2]", "-p", "nodes:=[episode_manager]"],
               domain_id=random.randint(1, 101))
    made: list[Node] = []
    try:
        container = SimArms()
        made = [container, *container.arm_nodes()]
        assert [(m.get_namespace(), m.params.arm_index, m.params.num_arms) for m in made[1:]] == [
            ("/a0", 0, 3), ("/a1", 1, 3), ("/a2", 2, 3)]
    finally:
        for node in made:
            node.destroy_node()
        rclpy.try_shutdown()
