"""The ROS 2 user's path, as typed: the commands of the README's ROS 2 install and of deploy.launch.yaml.

Without a ROS 2 install here, each command is run by what it runs on one: rosdep's and colcon's
package crawl (catkin_pkg's, which stops at the first package.xml), the keys rosdep must resolve (a
checked-in list), `--show-args` of every launch file (the project's launcher reads them as ros2 launch
does), and `ros2 topic pub` / `ros2 service call` replayed through rclpy with ros2cli's options and
QoS rules, against matching subscriptions in-process and against the real deploy graph.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import io
import os
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from catkin_pkg.packages import find_packages
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from rclpy.node import Node
from rclpy.qos import (
    QoSCompatibility,
    QoSDurabilityPolicy,
    QoSPresetProfiles,
    QoSProfile,
    QoSReliabilityPolicy,
    qos_check_compatible,
)
from rosgraph import RosGraph, small_config, wait_until

from vla_rl_ros.launcher.arguments import declared_arguments, unlisted_arguments
from vla_rl_ros.launcher.cli import show_arguments
from vla_rl_ros.launcher.description import describe
from vla_rl_ros.ros.names import (
    DIAGNOSTICS_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    RELEASE_ESTOP_SERVICE,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, RESULTS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LAUNCH_DIR = REPO / "launch"
DEPLOY = LAUNCH_DIR / "deploy.launch.yaml"
PACKAGES = {"vla_rl_ros", "vla_rl_interfaces"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Every key our package.xml files may use that is not one of our packages: rosdep resolves ROS package
# names through rosdistro's <distro>/distribution.yaml (each of these is released for humble, jazzy
# and kilted) and system dependencies through rosdep/base.yaml and rosdep/python.yaml. A new
# dependency is added here once it is checked against those files.
ROSDEP_KEYS = {
    # ROS packages (rosdistro: released in humble, jazzy, kilted)
    "ament_cmake", "ament_index_python", "builtin_interfaces", "cv_bridge", "diagnostic_msgs",
    "geometry_msgs", "launch_ros", "launch_yaml", "rclpy", "rosgraph_msgs", "rosidl_default_generators",
    "rosidl_default_runtime", "sensor_msgs", "std_msgs", "std_srvs", "trajectory_msgs",
    # rosdep/python.yaml (apt on Ubuntu and Debian)
    "python3-numpy", "python3-opencv", "python3-pytest", "python3-yaml",
}
# The dependency types rosdep reads from a package.xml (rosdep2.catkin_packages.VALID_DEPENDENCY_TYPES).
DEPENDENCY_TYPES = ("build_depends", "buildtool_depends", "build_export_depends", "buildtool_export_depends",
                    "exec_depends", "test_depends", "doc_depends")
# Requirements of setup.py that a ROS 2 install has without pip: rosdep keys of package.xml, and
# setuptools, which colcon needs (and brings) to build an ament_python package.
FROM_ROSDEP = {"numpy": "python3-numpy", "pyyaml": "python3-yaml"}
FROM_COLCON = {"setuptools"}
# What the nodes subscribe with (ros/qos.py; the node docstrings list them per topic).
NODE_QOS = {EPISODE_START_TOPIC: LATCHED, EPISODE_RESULT_TOPIC: RESULTS, ESTOP_TOPIC: RELIABLE}


# -- the documented commands ------------------------------------------------------------------------
def readme_blocks() -> list[list[str]]:
    """The README's ```bash blocks, each a list of commands (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [join_continuations(block.splitlines()) for block in blocks]


def join_continuations(lines: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        commands.append((pending + line.strip()).strip())
        pending = ""
    return [c for c in commands if c]


def header_commands(path: Path) -> list[str]:
    """The `ros2 topic pub` and `ros2 service call` commands quoted in a launch file's header comment."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return [c for c in join_continuations(header) if c.startswith(("ros2 topic pub", "ros2 service call"))]


def words(command: str) -> list[list[str]]:
    """A shell line as simple commands (split at && and ;), comments dropped."""
    out: list[list[str]] = [[]]
    for word in shlex.split(command, comments=True):
        if word in ("&&", ";"):
            out.append([])
        else:
            out[-1].append(word)
    return [w for w in out if w]


def ros_install_block() -> list[list[str]]:
    """The README's block for a ROS 2 install, as simple commands in order."""
    block = next(b for b in readme_blocks() if any("rosdep install" in c for c in b))
    return [w for command in block for w in words(command)]


def find(commands: list[list[str]], *prefix: str) -> list[tuple[int, list[str]]]:
    return [(i, c) for i, c in enumerate(commands) if c[: len(prefix)] == list(prefix)]


def workspace(tmp: Path) -> Path:
    """~/ws as the README lays it out: this repository cloned to src/vla_rl_ros."""
    commands = ros_install_block()
    assert find(commands, "git", "clone") and find(commands, "git", "clone")[0][1][-1] == "vla_rl_ros"
    assert ["cd", "~/ws/src"] in commands and ["cd", "~/ws"] in commands
    ws = tmp / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src/vla_rl_ros").symlink_to(REPO)
    return ws


def crawl(ws: Path, paths: list[str]) -> dict[str, Any]:
    """Packages found under `paths` (relative to ~/ws) as rosdep and colcon find them."""
    found = {}
    for path in paths:
        found.update({pkg.name: pkg for pkg in find_packages(str(ws / path)).values()})
    return found


# -- rosdep and colcon ------------------------------------------------------------------------------
def test_rosdep_install_finds_both_packages_and_every_key_is_known(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (_, rosdep), = find(ros_install_block(), "rosdep", "install")
    assert {"--from-paths", "--ignore-src", "-y"} <= set(rosdep)
    paths = [w for w in rosdep[2:] if not w.startswith("-")]
    found = crawl(ws, paths)
    assert set(found) == PACKAGES, f"rosdep --from-paths {paths} finds {sorted(found)}"
    # Why both folders: the crawl stops at the repository's package.xml, the interfaces are not seen.
    assert set(crawl(ws, ["src"])) == {"vla_rl_ros"}
    # Every package.xml of the repository (the root's and its folders') is one of the two.
    manifests = [REPO / "package.xml", *REPO.glob("*/package.xml")]
    assert {pkg.name for m in manifests for pkg in find_packages(str(m.parent)).values()} == PACKAGES

    keys = {dep.name for pkg in found.values() for kind in DEPENDENCY_TYPES for dep in getattr(pkg, kind)}
    unknown = keys - PACKAGES - ROSDEP_KEYS
    assert not unknown, f"not a rosdep key (check rosdistro, then add it to ROSDEP_KEYS): {sorted(unknown)}"
    assert "vla_rl_interfaces" in keys  # --ignore-src must skip it: it is found in the given paths


def test_colcon_builds_both_packages_with_the_venvs_python(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    commands = ros_install_block()
    (index, colcon), = find(commands, "python", "-m", "colcon", "build")
    paths = colcon[colcon.index("--base-paths") + 1:]
    assert set(crawl(ws, paths)) == PACKAGES
    (activated, _), = find(commands, "source", "~/ws/venv/bin/activate")
    assert activated < index, "colcon must run with the venv's python, so the nodes' executables use it"


@pytest.mark.colcon
def test_colcon_run_by_the_venvs_python_gives_the_nodes_that_python(tmp_path: Path) -> None:
    """The README's `python -m colcon build`, run by this venv's python: every node executable starts
    with it, so it finds what pip put in the venv (vla_rl_ros alone: test_colcon builds both)."""
    (_, colcon), = find(ros_install_block(), "python", "-m", "colcon", "build")
    env = {**os.environ, "AMENT_PREFIX_PATH": sys.prefix, "CMAKE_PREFIX_PATH": sys.prefix}
    build = subprocess.run(
        [sys.executable, *colcon[1:4], "--base-paths", str(REPO), "--build-base", str(tmp_path / "build"),
         "--install-base", str(tmp_path / "install")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    lib = tmp_path / "install/vla_rl_ros/lib/vla_rl_ros"
    nodes = [p.name for p in importlib.metadata.distribution("vla_rl_ros").entry_points if p.group == "console_scripts"]
    assert nodes and all((lib / n).read_text().splitlines()[0] == f"#!{sys.executable}" for n in nodes)


def test_pip_installs_into_a_venv_with_the_cpu_torch_and_covers_every_requirement() -> None:
    commands = ros_install_block()
    (created, venv), = find(commands, "python3", "-m", "venv")
    assert "--system-site-packages" in venv and venv[-1] == "~/ws/venv"  # sees apt's numpy, OpenCV, colcon
    assert ["touch", "~/ws/venv/COLCON_IGNORE"] in commands
    (activated, _), = find(commands, "source", "~/ws/venv/bin/activate")
    pips = find(commands, "pip", "install")
    assert pips and all(created < activated < i for i, _ in pips), "pip only inside the activated venv"
    assert not any(w in ("--user", "--break-system-packages") for _, pip in pips for w in pip)
    assert not any(c[0] == "sudo" and "pip" in c for c in commands)

    requirements = {}
    torch_commands = []
    for _, pip in pips:
        specs = [w for w in pip[2:] if not w.startswith("-") and w != CPU_INDEX]
        for spec in specs:
            requirement = Requirement(spec)
            requirements[canonicalize_name(requirement.name)] = requirement
            if requirement.name == "torch":
                torch_commands.append(pip)
    # torch from the CPU index, pinned as requirements/torch.txt pins it; no other pip line names it.
    pinned = [Requirement(line) for line in (REPO / "requirements/torch.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert len(torch_commands) == 1 and str(requirements["torch"]) == str(pinned[0])
    torch = torch_commands[0]
    assert torch[torch.index("--index-url") + 1] == CPU_INDEX
    # numpy stays 1.x: the distribution's compiled packages (cv_bridge, message types) are built against it.
    assert not requirements["numpy"].specifier.contains("2.0.0")

    needed = {canonicalize_name(Requirement(r).name) for r in importlib.metadata.requires("vla_rl_ros") or []
              if "extra ==" not in r}
    package_keys = {d.name for d in find_packages(str(REPO))["."].exec_depends}
    provided = {name for name, key in FROM_ROSDEP.items() if key in package_keys} | FROM_COLCON
    missing = needed - set(requirements) - provided
    assert not missing, f"setup.py requires {sorted(missing)}, which neither pip nor rosdep installs"


# -- launch arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(LAUNCH_DIR.glob("*.launch.yaml")), ids=lambda p: p.name)
def test_show_args_lists_every_argument_of_the_included_files(path: Path) -> None:
    assert unlisted_arguments(path) == []
    out = io.StringIO()
    with redirect_stdout(out):
        show_arguments(path)
    listed = re.findall(r"^  '([^']+)':", out.getvalue(), flags=re.MULTILINE)
    assert listed == list(declared_arguments(path))


def test_collect_and_train_real_list_deploys_arguments() -> None:
    deploy = set(declared_arguments(DEPLOY))
    collect = set(declared_arguments(LAUNCH_DIR / "collect.launch.yaml"))
    train_real = set(declared_arguments(LAUNCH_DIR / "train_real.launch.yaml"))
    assert deploy < collect < train_real
    assert collect - deploy == {"success", "success_model", "dataset", "record_cameras", "record_camera_topics",
                                "bag_dir"}
    assert train_real - collect == {"run_dir", "max_updates", "max_wall_time_s", "learner"}


def test_an_argument_the_top_level_file_does_not_declare_is_reported(tmp_path: Path) -> None:
    (tmp_path / "child.launch.yaml").write_text(yaml.safe_dump({"launch": [
        {"arg": {"name": "a", "default": "1"}}, {"arg": {"name": "b", "default": "2"}},
        {"arg": {"name": "c", "default": "3"}}]}))
    parent = tmp_path / "parent.launch.yaml"

    def check(args: list[dict], passed: list[dict]) -> list[str]:
        parent.write_text(yaml.safe_dump({"launch": [
            *({"arg": a} for a in args),
            {"group": {"children": [{"include": {"file": "$(dirname)/child.launch.yaml", "arg": passed}}]}}]}))
        return unlisted_arguments(parent)

    problems = check([{"name": "a", "default": "1"}, {"name": "b", "default": "5"}], [])
    assert len(problems) == 2 and "'b' defaults to '5'" in problems[0] and "'c' of child" in problems[1]
    assert check([{"name": "a", "default": "1"}, {"name": "b", "default": "2"}], [{"name": "c", "value": "x"}]) == []


def test_command_line_arguments_reach_included_files_unless_the_include_passes_them(tmp_path: Path) -> None:
    """As in ros2 launch, `name:=value` sets a launch configuration of the root: an included file sees
    it, but an include's own `arg` wins (rollout_host's `arm: ...arm1` is not overridden by `arm:=...`)."""
    (tmp_path / "child.launch.yaml").write_text(yaml.safe_dump({"launch": [
        {"arg": {"name": "who", "default": "nobody"}},
        {"executable": {"cmd": "true", "name": "$(var who)"}}]}))
    parent = tmp_path / "parent.launch.yaml"
    parent.write_text(yaml.safe_dump({"launch": [
        {"group": {"children": [{"include": {"file": "$(dirname)/child.launch.yaml",
                                             "arg": [{"name": "who", "value": "ada"}]}}]}},
        {"group": {"children": [{"include": {"file": "$(dirname)/child.launch.yaml"}}]}}]}))
    labels = [p.label for p in describe(parent, {"who": "bob"}, tmp_path).processes]
    assert labels == ["ada-1", "bob-1"]


def launch_commands() -> list[tuple[str, Path, dict[str, str]]]:
    """Every documented `ros2 launch vla_rl_ros <file>` and `vla-rl launch <name>` (README blocks and
    launch file headers) of a file of launch/: (the command, the file, its name:=value arguments)."""
    lines = [c for block in readme_blocks() for c in block]
    for path in sorted(LAUNCH_DIR.glob("*.launch.yaml")):
        lines += join_continuations([line.lstrip("#").strip() for line in path.read_text().splitlines()
                                     if line.startswith("#")])
    out = []
    for line in (c for c in lines if c.startswith(("ros2 launch ", "vla-rl launch ", ".venv/bin/vla-rl launch "))):
        for argv in words(line):
            if argv[:2] == ["ros2", "launch"]:
                assert argv[2] == "vla_rl_ros", line
                name, rest = argv[3], argv[4:]
            elif argv[0].endswith("vla-rl") and argv[1:2] == ["launch"]:
                name, rest = argv[2], argv[3:]
            else:
                continue
            path = LAUNCH_DIR / (name if name.endswith(".launch.yaml") else f"{name}.launch.yaml")
            if not path.is_file():
                continue  # "path/to/other.launch.yaml"
            given = []
            for word in rest:
                if word.startswith("("):  # a remark after the command
                    break
                given.append(word)
            out.append((line, path, dict(w.split(":=", 1) for w in given if ":=" in w)))
    return out


def test_every_documented_launch_command_expands_with_arguments_show_args_lists(tmp_path: Path) -> None:
    commands = launch_commands()
    assert {path.name for _, path, _ in commands} >= {f"{n}.launch.yaml" for n in
                                                      ("train_sim", "deploy", "collect", "train_real")}
    for line, path, args in commands:
        unlisted = set(args) - set(declared_arguments(path))
        assert not unlisted, f"{line}: {sorted(unlisted)} not among {path.name}'s --show-args"
        assert describe(path, args, tmp_path).processes, line


def test_readme_names_every_argument_of_the_user_facing_launch_files() -> None:
    text = README.read_text()
    # "Running the launch files" and "Deploy, collect and fine-tune on a real arm", where they are described.
    text = text[text.index("## Running the launch files"):text.index("## The simulation")]
    for name in ("train_sim", "rollout_host", "learner_host", "deploy", "collect", "train_real"):
        missing = [a for a in declared_arguments(LAUNCH_DIR / f"{name}.launch.yaml")
                   if not re.search(rf"`{a}(`|:=| )", text)]
        assert not missing, f"{name}.launch.yaml arguments the README does not describe: {missing}"


# -- ros2 topic pub / ros2 service call -------------------------------------------------------------
def episode_commands() -> list[str]:
    """Every documented `ros2 topic pub` / `ros2 service call` (deploy's header, then the README's)."""
    readme = [c for block in readme_blocks() for c in block if c.startswith(("ros2 topic pub", "ros2 service call"))]
    commands = header_commands(DEPLOY) + readme
    assert len([c for c in commands if EPISODE_START_TOPIC in c]) == 2
    return commands


def parse_pub(command: str) -> argparse.Namespace:
    """`ros2 topic pub ...` parsed with the ros2cli 0.36 options these commands use; any other word fails."""
    argv = words(command)[0]
    assert argv[:3] == ["ros2", "topic", "pub"], command
    parser = argparse.ArgumentParser(prog="ros2 topic pub")
    parser.add_argument("topic_name")
    parser.add_argument("message_type")
    parser.add_argument("values", nargs="?", default="{}")
    parser.add_argument("-1", "--once", action="store_true")
    parser.add_argument("-w", "--wait-matching-subscriptions", type=int)
    parser.add_argument("--qos-profile", default="default", choices=QoSPresetProfiles.short_keys())
    parser.add_argument("--qos-reliability", choices=QoSReliabilityPolicy.short_keys())
    parser.add_argument("--qos-durability", choices=QoSDurabilityPolicy.short_keys())
    parser.add_argument("--qos-depth", type=int)
    args, extra = parser.parse_known_args(argv[3:])
    assert not extra, f"{command}: {extra} not modelled here"
    assert args.once, command
    return args


def cli_qos(args: argparse.Namespace) -> QoSProfile:
    """The publisher QoS ros2cli makes: the preset (default: 'default', volatile), then the overrides."""
    qos = copy.copy(QoSPresetProfiles.get_from_short_key(args.qos_profile))
    if args.qos_durability:
        qos.durability = QoSDurabilityPolicy.get_from_short_key(args.qos_durability)
    if args.qos_reliability:
        qos.reliability = QoSReliabilityPolicy.get_from_short_key(args.qos_reliability)
    if args.qos_depth:
        qos.depth = args.qos_depth
    return qos


def message(args: argparse.Namespace) -> Any:
    """The message `values` describe (ros2cli's set_message_fields for these flat messages)."""
    package, kind, name = args.message_type.split("/")
    msg = getattr(importlib.import_module(f"{package}.{kind}"), name)()
    for field, value in yaml.safe_load(args.values).items():
        setattr(msg, field, value)  # a wrong name or type raises, as the CLI's "Failed to populate field"
    return msg


def run_pub(node: Node, command: str, timeout: float, wanted: int | None = None) -> Any:
    """Run a documented `ros2 topic pub --once` from `node`: wait for -w matching subscriptions (the
    CLI's default with --once: 1; `wanted` overrides it), then publish. Returns the publisher."""
    args = parse_pub(command)
    publisher = node.create_publisher(type(message(args)), args.topic_name, cli_qos(args))
    if wanted is None:
        wanted = 1 if args.wait_matching_subscriptions is None else args.wait_matching_subscriptions
    wait_until(lambda: publisher.get_subscription_count() >= wanted, timeout,
               f"{wanted} matching subscription(s) for: {command}")
    publisher.publish(message(args))
    return publisher


def parse_service_call(command: str) -> tuple[str, type]:
    """`ros2 service call NAME TYPE` (no request values): the name and the service type."""
    argv = words(command)[0]
    assert argv[:3] == ["ros2", "service", "call"] and len(argv) == 5, command
    package, kind, name = argv[4].split("/")
    return argv[3], getattr(importlib.import_module(f"{package}.{kind}"), name)


def test_every_documented_pub_command_matches_the_nodes_subscriptions_qos() -> None:
    from std_srvs.srv import Trigger

    for command in episode_commands():
        if command.startswith("ros2 service call"):
            assert parse_service_call(command) == (f"/arm0/{RELEASE_ESTOP_SERVICE}", Trigger)
            continue
        args = parse_pub(command)
        assert args.topic_name.startswith("/arm0/"), command  # deploy's default arm
        topic = args.topic_name.removeprefix("/arm0/")
        compatibility, reason = qos_check_compatible(cli_qos(args), NODE_QOS[topic])
        assert compatibility != QoSCompatibility.ERROR, f"{command}: {reason}"
        message(args)
    # Without the QoS flags (the CLI's default, volatile) episode_start matches nothing: the CLI hangs.
    start = parse_pub(next(c for c in episode_commands() if EPISODE_START_TOPIC in c))
    start.qos_durability = start.qos_reliability = None
    assert qos_check_compatible(cli_qos(start), LATCHED)[0] == QoSCompatibility.ERROR


def test_the_documented_episode_start_reaches_a_latched_subscription(ros_graph: RosGraph) -> None:
    from vla_rl_interfaces.msg import EpisodeStart

    probe = ros_graph.probe
    received = probe.collect(EpisodeStart, f"/arm0/{EPISODE_START_TOPIC}", LATCHED)  # as the executor subscribes
    for command in (c for c in episode_commands() if EPISODE_START_TOPIC in c):
        received.clear()
        # One subscription here (deploy's two: the graph test below).
        publisher = run_pub(probe.node, command, timeout=10, wanted=1)
        wait_until(lambda: received, 10, "the episode start")
        assert received[0].episode_id == "run1" and received[0].max_steps == 300
        assert received[0].instruction == "put the red cube on the plate"
        probe.node.destroy_publisher(publisher)


@pytest.mark.graph
def test_the_documented_commands_run_an_episode_under_deploy(ros_graph: RosGraph, tiny_checkpoint: Path,
                                                              tmp_path: Path) -> None:
    """deploy.launch.yaml as its header says: start an episode, see the arm commanded, end it, e-stop
    and release, each command as typed (through rclpy, as ros2cli runs it)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    startup_s = 120  # five Python nodes (torch, MuJoCo) on a loaded 2-core machine
    ros_graph.launch("deploy", f"checkpoint:={tiny_checkpoint}", f"config_dir:={small_config(tmp_path)}")
    probe = ros_graph.probe
    commands = probe.collect(JointTrajectory, f"/arm0/{JOINT_TRAJECTORY_TOPIC}", RELIABLE)
    diagnostics = probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)

    def hold() -> str:
        statuses = [s for d in diagnostics for s in d.status if s.name == "/arm0/executor"]
        return {kv.key: kv.value for kv in statuses[-1].values}.get("hold", "") if statuses else ""

    # The first: a real arm's release of the e-stop latched at start (this sim arm starts released).
    release_at_start, start, result, estop, release = header_commands(DEPLOY)
    assert release_at_start == release
    run_pub(probe.node, start, startup_s)
    # -w 2: the executor and the policy node; the documented QoS matches both, the CLI's default neither.
    def subscriptions() -> list[Any]:
        return [i for i in probe.node.get_subscriptions_info_by_topic(f"/arm0/{EPISODE_START_TOPIC}")
                if i.node_name != probe.node.get_name()]

    # (node names reach the graph a little after the endpoints)
    wait_until(lambda: sorted(i.node_name for i in subscriptions()) == ["executor", "policy_node"], 30,
               "the executor and the policy node as the subscribers")
    default = parse_pub(start)
    default.qos_durability = default.qos_reliability = None
    for info in subscriptions():
        # Their reliability and durability as the graph reports them (its deadline and lease read as
        # "Infinite" durations, which qos_check_compatible takes for set ones).
        theirs = QoSProfile(depth=1, reliability=info.qos_profile.reliability, durability=info.qos_profile.durability)
        assert qos_check_compatible(cli_qos(parse_pub(start)), theirs)[0] != QoSCompatibility.ERROR
        assert qos_check_compatible(cli_qos(default), theirs)[0] == QoSCompatibility.ERROR
    wait_until(lambda: len(commands) >= 3, 60, "the executor commanding the arm")

    run_pub(probe.node, result, 30)
    wait_until(lambda: hold() == "episode_ended", 30, "the episode's end")
    run_pub(probe.node, estop, 30)
    wait_until(lambda: hold() == "estop", 30, "the e-stop hold")
    name, service = parse_service_call(release)
    assert service is Trigger and probe.call(Trigger, name, Trigger.Request()).success
    wait_until(lambda: hold() not in ("estop", ""), 30, "the e-stop released")
