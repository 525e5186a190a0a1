"""`vla-rl launch`: the YAML launch files' semantics, process handling, and a real two-node graph."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rosgraph import RosGraph, wait_until

from vla_rl_ros.launcher.description import describe
from vla_rl_ros.launcher.substitutions import LaunchError

TEST_DIR = Path(__file__).resolve().parent
PY = sys.executable


def write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def ros_args(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("--ros-args") + 1 :]


def test_overrides_namespaces_params_and_remaps(tmp_path: Path) -> None:
    params = write(tmp_path / "p.yaml", {"/**": {"ros__parameters": {"rate": 5}}})
    launch = write(tmp_path / "a.launch.yaml", {"launch": [
        {"arg": {"name": "ns", "default": "arm0"}},
        {"arg": {"name": "gain", "default": "1.5"}},
        {"group": {"children": [
            {"push_ros_namespace": {"namespace": "$(var ns)"}},
            {"node": {"pkg": "vla_rl_ros", "exec": "vla-rl", "name": "n1", "namespace": "inner",
                      "param": [{"from": str(params)}, {"name": "gain", "value": "$(var gain)"},
                                {"name": "limits", "param": [{"name": "vmax", "value": 0.5}]}],
                      "remap": [{"from": "image", "to": "camera/image_raw"}]}},
        ]}},
        {"node": {"pkg": "vla_rl_ros", "exec": "vla-rl", "name": "n2", "namespace": "/abs"}},
    ]})
    desc = describe(launch, {"ns": "arm7", "gain": "2.5"}, tmp_path)
    first, second = (ros_args(p.cmd) for p in desc.processes)
    assert first[:4] == ["-r", "__node:=n1", "-r", "__ns:=/arm7/inner"]
    assert first[first.index("--params-file") + 1] == str(params)
    inline = yaml.safe_load(Path(first[first.index("--params-file", first.index("--params-file") + 1) + 1]).read_text())
    assert inline == {"/**": {"ros__parameters": {"gain": 2.5}}}  # substituted strings are re-typed as YAML
    nested = yaml.safe_load(Path(first[[i for i, a in enumerate(first) if a == "--params-file"][2] + 1]).read_text())
    assert nested == {"/**": {"ros__parameters": {"limits": {"vmax": 0.5}}}}
    assert first[-2:] == ["-r", "image:=camera/image_raw"]
    assert "__ns:=/abs" in second  # an absolute namespace is not pushed under the group's
    # Scoped group: its pushed namespace does not leak to the node after it.
    assert not any("arm7" in a for a in second)


def test_conditions_includes_env_and_let(tmp_path: Path) -> None:
    child = write(tmp_path / "child.launch.yaml", {"launch": [
        {"arg": {"name": "who", "default": "nobody"}},
        {"executable": {"cmd": f"{PY} -c pass", "name": "$(var who)",
                        "env": [{"name": "GREETING", "value": "hi $(var who)"}]}},
    ]})
    launch = write(tmp_path / "main.launch.yaml", {"launch": [
        {"arg": {"name": "use_extra", "default": "false"}},
        {"let": {"name": "person", "value": "ada"}},
        {"set_env": {"name": "FROM_SET_ENV", "value": "1"}},
        {"include": {"file": "$(dirname)/child.launch.yaml", "arg": [{"name": "who", "value": "$(var person)"}]}},
        {"executable": {"cmd": f"{PY} -c pass", "name": "extra", "if": "$(var use_extra)"}},
        {"executable": {"cmd": f"{PY} -c pass", "name": "fallback", "unless": "$(var use_extra)"}},
    ]})
    assert child.exists()
    labels = [p.label for p in describe(launch, {}, tmp_path).processes]
    assert labels == ["ada-1", "fallback-1"]
    desc = describe(launch, {"use_extra": "true"}, tmp_path)
    assert [p.label for p in desc.processes] == ["ada-1", "extra-1"]
    assert desc.processes[0].env == {"FROM_SET_ENV": "1", "GREETING": "hi ada"}


def test_an_include_leaks_what_it_sets_unless_a_group_scopes_it(tmp_path: Path) -> None:
    """As in ros2 launch: an include runs in its includer's context, so the arguments it passes and the
    lets of its file stay set after it; a group keeps them inside."""
    write(tmp_path / "child.launch.yaml", {"launch": [
        {"arg": {"name": "device", "default": "cpu"}},
        {"let": {"name": "arms", "value": "[from_child]"}},
    ]})
    include = {"include": {"file": "$(dirname)/child.launch.yaml", "arg": [{"name": "device", "value": "cuda:1"}]}}
    after = {"executable": {"cmd": f"{PY} -c pass", "name": "$(var device)-$(var arms)"}}
    head = [{"arg": {"name": "device", "default": "cpu"}}, {"let": {"name": "arms", "value": "[mine]"}}]
    leaky = write(tmp_path / "leaky.launch.yaml", {"launch": [*head, include, after]})
    scoped = write(tmp_path / "scoped.launch.yaml", {"launch": [*head, {"group": {"children": [include]}}, after]})
    assert [p.label for p in describe(leaky, {}, tmp_path).processes] == ["cuda:1-[from_child]-1"]
    assert [p.label for p in describe(scoped, {}, tmp_path).processes] == ["cpu-[mine]-1"]


@pytest.mark.parametrize(("doc", "overrides", "message"), [
    ({"launch": [{"timer": {"period": 1}}]}, {}, "action `timer` is not supported"),
    ({"launch": [{"node": {"pkg": "vla_rl_ros", "exec": "vla-rl", "launch-prefix": "gdb"}}]}, {},
     "attribute(s) ['launch-prefix']"),
    ({"launch": [{"executable": {"cmd": "$(eval 1+1)"}}]}, {}, "substitution $(eval) is not supported"),
    ({"launch": [{"arg": {"name": "a"}}]}, {}, "launch argument 'a' has no default"),
    ({"launch": [{"arg": {"name": "a", "default": "x"}}]}, {"b": "1"}, "unknown launch argument(s) ['b']"),
    ({"launch": [{"arg": {"name": "a", "default": "x", "choice": [{"value": "x"}]}}]}, {"a": "y"},
     "is not one of ['x']"),
    ({"launch": [{"executable": {"cmd": "true", "if": "maybe"}}]}, {}, "expected true/false"),
    ({"launch": [{"executable": {"cmd": "$(var nope)"}}]}, {}, "no launch argument or `let` named 'nope'"),
    ({"launch": [{"node": {"pkg": "no_such_pkg", "exec": "x"}}]}, {}, "'x' of package 'no_such_pkg' not found"),
    ({"launch": [{"executable": {"cmd": "true", "on_exit": "restart"}}]}, {}, "on_exit supports only"),
    ({"nodes": []}, {}, "one key `launch`"),
    ({"launch": [{"arg": {"name": "ckpt", "default": ""}}, {"node": {
        "pkg": "vla_rl_ros", "exec": "vla-rl", "param": [{"name": "checkpoint", "value": "$(var ckpt)"}]}}]}, {},
     "parameter 'checkpoint' is empty after substitution"),
    ({"launch": [{"arg": {"name": "ckpt", "default": "/tmp/o'brien"}}, {"node": {
        "pkg": "vla_rl_ros", "exec": "vla-rl", "param": [{"name": "checkpoint", "value": "'$(var ckpt)'"}]}}]}, {},
     "is \"'/tmp/o'brien'\" after substitution, which is not valid YAML"),
])
def test_unsupported_or_wrong_constructs_are_refused_by_name(
    tmp_path: Path, doc: dict, overrides: dict, message: str
) -> None:
    launch = write(tmp_path / "bad.launch.yaml", doc)
    with pytest.raises(LaunchError) as err:
        describe(launch, overrides, tmp_path)
    assert message in str(err.value)


def run_launch(tmp_path: Path, doc: dict, *args: str) -> subprocess.CompletedProcess[str]:
    launch = write(tmp_path / "run.launch.yaml", doc)
    return subprocess.run([PY, "-m", "vla_rl_ros.cli", "launch", str(launch), *args], check=False,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ROS_LOG_DIR": str(tmp_path / "log")})


def test_required_process_crash_stops_the_graph_and_names_it(tmp_path: Path) -> None:
    marker = tmp_path / "still_running"
    result = run_launch(tmp_path, {"launch": [
        {"executable": {"cmd": f"{PY} -c 'import time; time.sleep(60); open(\"{marker}\", \"w\")'",
                        "name": "sleeper"}},
        {"executable": {"cmd": f"{PY} -c 'import time, sys; time.sleep(1); sys.exit(3)'", "name": "learner",
                        "on_exit": "shutdown"}},
    ]})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "required process learner-1 failed (exit code 3)" in result.stdout
    assert "stopped sleeper-1" in result.stdout
    assert not marker.exists()


@pytest.mark.parametrize(("statuses", "launch_status", "line"), [
    ([-9, 1, 0], 0, "required process learner-1 finished"),  # killed, crashed: respawned; done: the end
    ([2], 2, "required process learner-1 failed (exit code 2)"),  # refused its parameters: no respawn
])
def test_a_required_process_that_respawns_comes_back_after_a_crash_only(
    tmp_path: Path, statuses: list[int], launch_status: int, line: str
) -> None:
    """train_sim's learner: respawn with on_exit shutdown. It resumes after a crash; its clean exit (its
    updates done) ends the run."""
    starts = tmp_path / "starts"
    # The n-th start ends with statuses[n]; a negative one is that signal.
    body = (f"import os, signal, sys; n = len(open('{starts}').read()) if os.path.exists('{starts}') else 0; "
            f"open('{starts}', 'a').write('x'); s = {statuses}[n]; "
            "os.kill(os.getpid(), -s) if s < 0 else sys.exit(s)")
    result = run_launch(tmp_path, {"launch": [
        {"executable": {"cmd": f"{PY} -c 'import time; time.sleep(60)'", "name": "sleeper"}},
        {"executable": {"cmd": f"{PY} -c \"{body}\"", "name": "learner", "on_exit": "shutdown",
                        "respawn": "true", "respawn_delay": 0.1}},
    ]})
    assert result.returncode == launch_status, result.stdout + result.stderr
    assert starts.read_text() == "x" * len(statuses) and line in result.stdout
    assert "stopped sleeper-1" in result.stdout


@pytest.mark.parametrize("exit_status", [0, 1])
def test_a_node_that_ends_itself_exits_with_its_exit_status(tmp_path: Path, exit_status: int) -> None:
    """run_node: a node that shuts its context down after a failure (the learner's worker) must not
    exit 0, or the launcher would take the crash for a finished run."""
    body = ("import sys, rclpy; from rclpy.node import Node; from vla_rl_ros.ros.node_main import run_node\n"
            "class Ends(Node):\n"
            "    def __init__(self):\n"
            "        super().__init__('ends')\n"
            f"        self.exit_status = {exit_status}\n"
            "        self.create_timer(0.1, lambda: rclpy.try_shutdown(context=self.context))\n"
            "sys.exit(run_node(Ends))\n")
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    result = subprocess.run([PY, "-c", body], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == exit_status, result.stderr


def test_without_the_events_executor_a_node_spins_the_standard_one(tmp_path: Path) -> None:
    """Humble's rclpy has no rclpy.experimental.EventsExecutor: run_node must fall back and still deliver
    messages (here a node's own publication reaches its subscription, then it ends itself)."""
    body = ("import sys; sys.modules['rclpy.experimental'] = None  # as on Humble: the import fails\n"
            "import rclpy; from rclpy.node import Node; from std_msgs.msg import String\n"
            "from vla_rl_ros.ros.node_main import run_node\n"
            "class Echo(Node):\n"
            "    def __init__(self):\n"
            "        super().__init__('echo')\n"
            "        self.create_subscription(String, 'echo', self.heard, 10)\n"
            "        self.pub = self.create_publisher(String, 'echo', 10)\n"
            "        self.create_timer(0.1, lambda: self.pub.publish(String(data='hi')))\n"
            "    def heard(self, msg):\n"
            "        print('heard', msg.data, 'on', type(self.executor).__name__, flush=True)\n"
            "        rclpy.try_shutdown(context=self.context)\n"
            "sys.exit(run_node(Echo))\n")
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(random.randint(1, 100))}
    result = subprocess.run([PY, "-c", body], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "heard hi on SingleThreadedExecutor" in result.stdout, result.stdout + result.stderr


def test_output_is_prefixed_and_a_failed_optional_process_fails_the_run(tmp_path: Path) -> None:
    result = run_launch(tmp_path, {"launch": [
        {"executable": {"cmd": f"{PY} -c 'print(\"hello\")'", "name": "greeter"}},
        {"executable": {"cmd": f"{PY} -c 'import sys; sys.exit(4)'", "name": "broken", "output": "log"}},
    ]})
    assert "[greeter-1] hello" in result.stdout
    assert result.returncode == 1 and "broken-1 (exit code 4)" in result.stdout


def launch_sleepers(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """`vla-rl launch` of two processes that each spawn a grandchild, write "<own pid> <grandchild pid>"
    to the returned file and wait; returned once both have written."""
    pids = tmp_path / "pids"
    body = (f"import os, subprocess, time; c = subprocess.Popen(['sleep', '300']); "
            f"open('{pids}', 'a').write(f'{{os.getpid()}} {{c.pid}}\\n'); time.sleep(300)")
    launch = write(tmp_path / "sleepers.launch.yaml", {"launch": [
        {"executable": {"cmd": f"{PY} -c \"{body}\"", "name": "a"}},
        {"executable": {"cmd": f"{PY} -c \"{body}\"", "name": "b"}},
    ]})
    proc = subprocess.Popen([PY, "-m", "vla_rl_ros.cli", "launch", str(launch)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "ROS_LOG_DIR": str(tmp_path)})
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 4, 60, "both processes to start")
    return proc, pids


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: its parent may not have reaped it yet)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_stops_every_process_and_its_children(tmp_path: Path, sig: signal.Signals) -> None:
    proc, pids = launch_sleepers(tmp_path)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, out
    assert f"received {sig.name}" in out
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: gone(pid), 10, f"pid {pid} to stop with the launch")


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launcher_killed_outright_takes_its_processes_with_it(tmp_path: Path) -> None:
    """SIGKILL gives the launcher no chance to stop anything: the kernel must (an orphaned executor
    would go on commanding its arm). Only the launcher's children get the kernel's SIGTERM; what they
    started is theirs to stop (these sleepers leave their `sleep` behind)."""
    proc, pids = launch_sleepers(tmp_path)
    proc.kill()
    proc.communicate(timeout=10)
    children = [int(line.split()[0]) for line in pids.read_text().splitlines()]
    for pid in children:
        wait_until(lambda pid=pid: gone(pid), 10, f"pid {pid} to die with the launcher")
    for line in pids.read_text().splitlines():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[1]), signal.SIGKILL)


@pytest.mark.graph
def test_launch_file_runs_two_nodes_exchanging_every_interface(
    ros_graph: RosGraph, test_nodes_prefix: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    proc = ros_graph.launch(str(TEST_DIR / "launch/interfaces.launch.yaml"), f"report:={report}", "arm:=arm3")
    assert proc.wait(timeout=90) == 0, ros_graph.logs()
    result = json.loads(report.read_text())
    assert result["messages"] == {
        "action_chunk": True, "chunk_request": True, "trajectory": True, "trajectory_withheld": True,
        "episode_result": True,
        "episode_start": True, "success_signal": True, "policy_update": True, "task_state": True,
    }
    assert result["reset"] == [True, "reset pick_place/1001 as ep-7f3a", "put the red cube on the plate"]
    assert result["label"] == [True, "labelled success=True"]
    assert result["namespace"] == "/arm3"
    assert result["greeting"] == "from a params file"
    assert "required process listener-1 finished" in ros_graph.log("launch")
