"""colcon builds both packages from a workspace, and the install tree is what `ros2 run`/`ros2 launch` need."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.mark.colcon
def test_colcon_build_install_tree(tmp_path: Path) -> None:
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}
    # The README's command for a ROS 2 workspace, with build products kept out of the checkout.
    build = subprocess.run(
        [str(VENV / "bin/colcon"), "build", "--base-paths", str(REPO), str(REPO / "msg"),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert "2 packages finished" in build.stdout

    install = tmp_path / "install"
    share = install / "vla_rl_ros/share/vla_rl_ros"
    lib = install / "vla_rl_ros/lib/vla_rl_ros"
    assert (install / "vla_rl_ros/share/ament_index/resource_index/packages/vla_rl_ros").is_file()
    assert (install / "vla_rl_interfaces/share/ament_index/resource_index/packages/vla_rl_interfaces").is_file()
    for folder in ("launch", "config", "sim"):
        for source in (REPO / folder).rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                assert (share / source.relative_to(REPO)).is_file(), f"{source.relative_to(REPO)} not installed"
    # Every console entry point (each node, and vla-rl) is where `ros2 run vla_rl_ros <name>` looks.
    for name in [p.name for p in distribution("vla_rl_ros").entry_points if p.group == "console_scripts"]:
        exe = lib / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"executable {name} missing from lib/vla_rl_ros"

    # After sourcing the workspace, the interfaces come from its install tree, not from the venv.
    probe = subprocess.run(
        ["bash", "-c", f"source {install}/setup.bash && {sys.executable} -c "
         "'import vla_rl_interfaces.msg as m, ament_index_python.packages as a; "
         "print(m.__file__); print(a.get_package_share_directory(\"vla_rl_ros\"))'"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, share_dir = probe.stdout.split()
    assert module_file.startswith(str(install)), module_file
    assert Path(share_dir) == share
