"""The one entry-point shape every node uses: init, spin, clean shutdown on Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from vla_rl_ros.ros.params import ParameterError


def run_node(make_node: Callable[[], Node], args: list[str] | None = None,
             make_executor: Callable[[], Executor] = SingleThreadedExecutor) -> int:
    """Create the node and spin it until shutdown. Returns the process exit status.

    A bad parameter ends the process with status 2 and one clear log line, before anything moves.
    `rclpy.init` installs handlers that turn SIGINT and SIGTERM into a context shutdown, so both
    stop the spin here and reach the same `finally`. `make_executor` is called after `rclpy.init`
    (an executor needs an initialised context).
    """
    rclpy.init(args=args)
    node: Node | None = None
    name = "node"
    try:
        node = make_node()
        name = node.get_name()  # read now: after a shutdown from inside the node its handle is gone
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except ParameterError as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            # Not a ROS logger: after Ctrl-C the context is gone and rosout cannot publish.
            print(f"[INFO] [{name}]: shutting down", file=sys.stderr)
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
