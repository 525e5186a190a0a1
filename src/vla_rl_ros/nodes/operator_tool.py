"""`vla-rl operator --arm /arm0`: the operator's terminal at a real arm (or a sim one).

Keys: s success, f failure (the running episode's verdict, to the success detector of type operator),
r ready (the layout is restored, or after an abort the arm is clear to go home), a abort (end the
running episode as abort and take over the arm), q quit. On a terminal each key acts at once (termios
cbreak mode); from a pipe or file each line is one key, so scripts and tests can drive it
(`vla_rl_ros.operator.keys`, no ROS; this module is the rclpy client around it). Whatever
the episode manager waits for ("group 3, rollout 5/8 (...): restore the layout of rollout 1, then
press r") is printed as it changes, with each episode's start and result.

ROS surface (names relative to --arm)
  subscribes  operator_prompt  std_msgs/String                  reliable, transient local
              episode_start    vla_rl_interfaces/EpisodeStart   reliable, transient local
              episode_result   vla_rl_interfaces/EpisodeResult  reliable
  clients     success_detector/label_episode  vla_rl_interfaces/LabelEpisode   s, f
              episode_manager/ready           std_srvs/Trigger                 r
              episode_manager/abort           std_srvs/Trigger                 a
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from typing import IO, Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vla_rl_interfaces.msg import EpisodeResult, EpisodeStart
from vla_rl_interfaces.srv import LabelEpisode

from vla_rl_ros.operator.keys import HELP, KEYS, read_keys
from vla_rl_ros.ros.names import (
    DETECTOR_LABEL_SERVICE,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    MANAGER_ABORT_SERVICE,
    MANAGER_READY_SERVICE,
    OPERATOR_PROMPT_TOPIC,
)
from vla_rl_ros.ros.qos import LATCHED, RESULTS


class OperatorTool(Node):
    """Shows the manager's prompts and episodes; turns keys into service calls."""

    def __init__(self, arm: str, context: Context, out: IO[str]) -> None:
        super().__init__("operator", namespace=arm, context=context)
        self.out = out
        self.episode_id = ""  # the running episode, as announced
        self.label = self.create_client(LabelEpisode, DETECTOR_LABEL_SERVICE)
        self.ready = self.create_client(Trigger, MANAGER_READY_SERVICE)
        self.abort = self.create_client(Trigger, MANAGER_ABORT_SERVICE)
        self.create_subscription(String, OPERATOR_PROMPT_TOPIC, lambda m: self.show(f"[prompt] {m.data}"), LATCHED)
        self.create_subscription(EpisodeStart, EPISODE_START_TOPIC, self.on_start, LATCHED)
        self.create_subscription(EpisodeResult, EPISODE_RESULT_TOPIC, self.on_result, RESULTS)

    def show(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def on_start(self, msg: EpisodeStart) -> None:
        self.episode_id = msg.episode_id
        self.show(f"[episode] {msg.episode_id} started: {msg.task}/{msg.seed} {msg.instruction!r}")

    def on_result(self, msg: EpisodeResult) -> None:
        if msg.episode_id == self.episode_id:
            self.episode_id = ""
        self.show(f"[result] {msg.episode_id}: {msg.end_reason} (success={msg.success}) after {msg.steps} steps")

    def request(self, key: str, timeout: float) -> tuple[bool, str]:
        """The service call a key stands for: (accepted, message)."""
        if key in ("s", "f"):
            client, req = self.label, LabelEpisode.Request(episode_id=self.episode_id, success=key == "s")
            who = "the success detector (type operator)"
        else:
            client, req = (self.ready, Trigger.Request()) if key == "r" else (self.abort, Trigger.Request())
            who = "the episode manager" + (" (reset operator)" if key == "r" else "")
        if not client.wait_for_service(timeout_sec=timeout):
            return False, f"{self.resolve_service_name(client.srv_name)} is not available: is {who} running?"
        future = client.call_async(req)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            future.cancel()
            return False, f"{client.srv_name} did not answer within {timeout:.0f} s"
        response: Any = future.result()
        return (response.accepted, response.message) if key in ("s", "f") else (response.success, response.message)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vla-rl operator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", default="/arm0", help="namespace of the arm (default /arm0)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a service (default 5)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    out = sys.stdout
    context = Context()
    rclpy.init(context=context, args=[])
    node = OperatorTool(args.arm, context, out)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    # The node spins on its own thread, so prompts show while the main thread waits for a key.
    spinner = threading.Thread(target=spin, args=(executor, context), daemon=True)
    spinner.start()
    node.show(f"[operator] {node.get_namespace()}: {HELP}")
    try:
        for key in read_keys(sys.stdin):
            if key not in KEYS:
                print(f"[operator] unknown key {key!r}; {HELP}", file=sys.stderr, flush=True)
                continue
            if key == "q":
                break
            accepted, message = node.request(key, args.timeout)
            node.show(f"[{KEYS[key]}] {'ok' if accepted else 'refused'}: {message}")
    except KeyboardInterrupt:
        pass
    finally:
        node.show("[operator] bye")
        executor.shutdown()
        node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.try_shutdown(context=context)
        spinner.join(timeout=2)
    return 0


def spin(executor: SingleThreadedExecutor, context: Context) -> None:
    with contextlib.suppress(ExternalShutdownException):
        while context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not context.ok():
                    return
                raise
