"""Shared fixtures: an isolated ROS 2 graph per test, and a throwaway ament prefix for test nodes."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rosgraph import TINY_CHUNK, RosGraph

TEST_DIR = Path(__file__).resolve().parent
TEST_PACKAGE = "vla_rl_test_nodes"


@pytest.fixture
def ros_graph(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RosGraph]:
    graph = RosGraph(tmp_path)
    try:
        yield graph
    finally:
        graph.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(graph.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny VLA (real model, real files) that knows the reach task's words."""
    import numpy as np

    from vla_rl_ros.policy import new_tiny_policy
    from vla_rl_ros.sim import TASKS
    from vla_rl_ros.sim.env import STATE_NAMES

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    actions = np.random.default_rng(0).uniform(-0.05, 0.05, size=(64, 4)).astype(np.float32)
    instructions = [TASKS["reach"].sample(seed).instruction for seed in range(20)]
    new_tiny_policy(instructions, actions, chunk_size=TINY_CHUNK, state_dim=len(STATE_NAMES),
                    image_size=32).save(path)
    return path


@pytest.fixture
def test_nodes_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ament prefix holding package `vla_rl_test_nodes` whose executables are test/nodes/*.py,
    so launch files can name them with pkg/exec exactly as they name installed nodes."""
    prefix = tmp_path / "ament_prefix"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages" / TEST_PACKAGE).touch()
    (prefix / "share" / TEST_PACKAGE).mkdir()
    lib = prefix / "lib" / TEST_PACKAGE
    lib.mkdir(parents=True)
    for script in (TEST_DIR / "nodes").glob("*.py"):
        exe = lib / script.stem
        exe.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{prefix}{os.pathsep}{os.environ.get('AMENT_PREFIX_PATH', '')}")
    return prefix
