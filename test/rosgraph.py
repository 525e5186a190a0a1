"""Test helpers for real ROS 2 graphs: isolated domains, node processes, and an in-test probe node.

Every graph test gets its own random ROS_DOMAIN_ID with localhost-only discovery, so tests running
side by side never see each other; every process started here is killed (its whole process group)
when the test ends, and the logs of the processes are printed when it fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from vla_rl_ros.launcher.runner import SIGINT_TIMEOUT_S, SIGTERM_TIMEOUT_S, lifeline

REPO = Path(__file__).resolve().parents[1]
TINY_CHUNK = 4  # chunk size of the `tiny_checkpoint` fixture (conftest.py)
DEFAULT_TIMEOUT_S = 30.0
# An executor of a simulated arm, as the sim launch files set it (a real arm's starts e-stopped and watches
# its camera): `ros_graph.node("executor", *SIM_EXECUTOR)`.
SIM_EXECUTOR = ("-p", "estop_at_start:=false", "-p", "image_timeout_s:=0.0")
# Longer than the launcher's SIGINT + SIGTERM time-outs (launcher/runner.py, 5 s + 5 s).
STOP_TIMEOUT_S = SIGINT_TIMEOUT_S + SIGTERM_TIMEOUT_S + 5.0
RESEND_AFTER_S = 10.0  # a service call with no response by then is sent again (`RosProbe.call`)


def wait_until(predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class RosGraph:
    """One isolated ROS 2 graph: its environment, its processes and a probe node in this process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # Fast DDS domain ids 0-101 map to distinct port ranges on one host; skip 0 (the default).
        self.domain_id = random.randint(1, 101)
        self.overrides = {
            "ROS_DOMAIN_ID": str(self.domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1",
            "ROS_LOG_DIR": str(tmp / "ros_log"),
            "RCUTILS_COLORIZED_OUTPUT": "0",
        }
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self._probe: Probe | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment of the graph's processes, read when each starts (fixtures may change os.environ)."""
        return {**os.environ, **self.overrides}

    # -- processes -------------------------------------------------------------------------------
    def start(self, label: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `cmd` in its own process group, ended by the kernel if this process dies (a killed
        pytest or benchmark leaves no node running to load the next measurement); its output goes to
        <tmp>/<label>.log."""
        log = self.tmp / f"{label}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*lifeline(), *cmd], env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.procs.append((label, proc, log))
        return proc

    def node(self, executable: str, *ros_args: str, label: str | None = None) -> subprocess.Popen[bytes]:
        """Start one of this package's nodes by its console entry point, with `--ros-args ...`."""
        cmd = [sys.executable, "-c", f"import sys; from vla_rl_ros.nodes.{executable} import main; sys.exit(main())"]
        return self.start(label or executable, [*cmd, "--ros-args", *ros_args])

    def launch(self, *args: str, label: str = "launch") -> subprocess.Popen[bytes]:
        """Run `vla-rl launch ...` as a process."""
        return self.start(label, self.launch_command(*args))

    @staticmethod
    def launch_command(*args: str) -> list[str]:
        """The command line of `vla-rl launch ...` (to run under a wrapper such as `ip netns exec`)."""
        return [sys.executable, "-m", "vla_rl_ros.cli", "launch", *args]

    def log(self, label: str) -> str:
        return next((p for name, _, p in self.procs if name == label), self.tmp / "none").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"----- {name} (exit {proc.poll()}) -----\n{path.read_text(errors='replace')[-6000:]}"
                         for name, proc, path in self.procs)

    @staticmethod
    def group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def close(self) -> None:
        """SIGINT each process group, then SIGKILL what is left. A `vla-rl launch` gets longer than its own
        SIGINT + SIGTERM escalation to stop its children: they run in sessions of their own, so a launcher
        killed mid-stop would leave them running (and answering on this domain when a later test draws it)."""
        if self._probe is not None:
            self._probe.close()
        for _, proc, _ in self.procs:
            for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
                if proc.poll() is None or self.group_alive(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=wait_s)

    # -- the probe node --------------------------------------------------------------------------
    @property
    def probe(self) -> Probe:
        if self._probe is None:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
            self._probe = Probe(self.domain_id)
        return self._probe


class Probe:
    """An rclpy node in the test process, on the graph's domain, spun by a background thread."""

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.subscriptions: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok():
                    return
                raise

    def wait_for_topic(self, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        wait_until(lambda: name in dict(self.node.get_topic_names_and_types()), timeout, f"topic {name}")

    def wait_for_publisher(self, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        wait_until(lambda: self.node.count_publishers(name) > 0, timeout, f"a publisher on {name}")

    def wait_for_subscriber(self, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        wait_until(lambda: self.node.count_subscribers(name) > 0, timeout, f"a subscriber on {name}")

    @staticmethod
    def wait_matched(*endpoints: Any, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until each of this probe's publishers/subscriptions is matched with a peer in DDS.

        The graph (count_subscribers) is learned from a separate discovery topic and can run ahead
        of the actual matching; a message published before its pair is matched is lost.
        """
        for endpoint in endpoints:
            count = getattr(endpoint, "get_subscription_count", None) or endpoint.get_publisher_count
            wait_until(lambda c=count: c() > 0, timeout, f"{endpoint.topic_name} to be matched")

    def collect(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> list[Any]:
        """Subscribe and return the list the messages are appended to, as they arrive
        (the subscription is `self.subscriptions[topic]`, for wait_matched)."""
        received: list[Any] = []
        self.subscriptions[topic] = self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type: type, name: str, request: Any, timeout: float = DEFAULT_TIMEOUT_S,
             resend_after_s: float = RESEND_AFTER_S) -> Any:
        """Call a service and return its response, sending the request again if none came.

        rmw_fastrtps waits only 100 ms for the server to match a new client's reply reader and then
        drops the response ("failed to send response (timeout)" in the server's log); on a loaded
        machine discovery can take longer, and the call would wait for ever. The request is sent
        again every `resend_after_s` until `timeout`: the services the tests call are idempotent
        or answer a repeat with the same outcome, and a dropped response means nobody saw the first.
        """
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available after {timeout:.0f} s")
        deadline = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            try:
                wait_until(future.done, min(resend_after_s, max(deadline - time.monotonic(), 0.0)),
                           f"a response from {name}")
                return future.result()
            except TimeoutError:
                client.remove_pending_request(future)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for a response from {name}") from None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self.thread.join(timeout=2)


def small_config(tmp: Path, **edits: dict) -> Path:
    """config/ copied with per-node parameter changes (node name -> {parameter: value}); the sim
    bridge renders one 32 px camera unless the edits say otherwise."""
    config = tmp / "config"
    shutil.copytree(REPO / "config", config)
    edits = {"sim_bridge": {"image_size": 32, "cameras": ["front"]}, **edits}
    for node, values in edits.items():
        path = config / f"{node}.yaml"
        doc = yaml.safe_load(path.read_text())
        doc[f"/**/{node}"]["ros__parameters"].update(values)
        path.write_text(yaml.safe_dump(doc))
    return config
