"""The one entry-point shape every node uses: init, spin, clean shutdown on Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from vla_rl_ros.ros.params import ParameterError

# How often the spin loop looks at the stop flag: a signal ends the process within this (s).
STOP_CHECK_S = 0.2


def default_executor() -> Executor:
    """rclpy's EventsExecutor where this rclpy has it (Jazzy, Kilted); Humble's rclpy has none, and
    there the nodes spin the SingleThreadedExecutor: the same callbacks, more CPU per message."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor()
    return EventsExecutor()


def run_node(make_node: Callable[[], Node | Sequence[Node]], args: list[str] | None = None,
             make_executor: Callable[[], Executor] = default_executor) -> int:
    """Create the node (or several: `nodes/sim_arms.py`) and spin it on one executor until shutdown.
    Returns the process exit status.

    A bad parameter ends the process with status 2 and one clear log line, before anything moves.

    The default executor is rclpy's EventsExecutor (C++ event queue) where it exists: each message or timer wake-up
    costs a few hundred microseconds of Python less than in the SingleThreadedExecutor, which rebuilds
    its wait set every time; in the train_sim graph that is a third of all CPU per control step
    (benchmarks/bench_graph_tax.py). SIGINT and SIGTERM only set a flag that the spin loop checks
    between callbacks, so a callback is never cut short by a KeyboardInterrupt (the EventsExecutor
    would report that as a failed callback) and the node shuts down with its state consistent.
    A node may end the process itself by shutting its context down (`rclpy.try_shutdown`); one that
    does so because it failed sets its `exit_status` (non-zero) first, which the process then exits
    with, so that a launcher tells a crash (respawned) from a finished run (the launch ends).
    `make_executor` is called after `rclpy.init` (an executor needs an initialised context).
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    nodes: list[Node] = []
    names: list[str] = []
    try:
        made = make_node()
        nodes = [made] if isinstance(made, Node) else list(made)
        names = [node.get_name() for node in nodes]  # read now: after a shutdown from inside a node its handle is gone
        executor = make_executor()
        for node in nodes:
            executor.add_node(node)
        while not stop.is_set() and rclpy.ok(context=nodes[0].context):
            executor.spin_once(timeout_sec=STOP_CHECK_S)
    except ParameterError as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        return 2
    except ExternalShutdownException:
        pass
    finally:
        for node, name in zip(nodes, names, strict=False):
            # Not a ROS logger: after a shutdown from inside the node, rosout cannot publish.
            print(f"[INFO] [{name}]: shutting down", file=sys.stderr)
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return next((status for node in nodes if (status := getattr(node, "exit_status", 0))), 0)
