"""Helpers the benchmarks share: a fresh default-size policy, node processes' peak memory, JSON output.

Benchmarks import the graph tests' isolated-domain fixture (test/rosgraph.py) from here, so every
graph benchmark runs on its own random ROS_DOMAIN_ID with localhost-only discovery.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "test") not in sys.path:
    sys.path.append(str(REPO / "test"))

STATE_DIM = 11  # the sim's proprioception (7 joints, TCP xyz, gripper)
DEFAULT_INSTRUCTION = "put the blue cube on the plate"
# "[vla-rl launch] started sim_bridge-3 [pid 1234]": the launcher's line for every (re)start.
STARTED = re.compile(r"started (\S+) \[pid (\d+)\]")


def fresh_default(instructions: list[str] | None = None, image_size: int = 64):  # -> VLAPolicy (torch lazily)
    """An untrained tiny VLA of the default architecture (the weights do not change the speed);
    `instructions` give its word vocabulary."""
    from vla_rl_ros.policy import new_tiny_policy
    from vla_rl_ros.policy.sft import SFTConfig

    defaults = SFTConfig()
    demos = np.random.default_rng(0).uniform(-0.04, 0.04, (256, 4))
    return new_tiny_policy(instructions or [DEFAULT_INSTRUCTION], demos, chunk_size=defaults.chunk_size,
                           state_dim=STATE_DIM, vision=defaults.vision, film=defaults.film,
                           hidden_size=defaults.hidden_size, num_hidden_layers=defaults.layers,
                           image_size=image_size)


def peak_rss_mib(pid: int) -> float | None:
    """A live process's peak resident set (VmHWM) in MiB; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far (s); None once it has exited."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def launched_pids(launch_log: str) -> dict[str, int]:
    """label -> pid of each process the launcher started (the newest pid of a respawned one)."""
    return {label: int(pid) for label, pid in STARTED.findall(launch_log)}


def node_label(label: str) -> str:
    """'sim_bridge-3' -> 'sim_bridge' (the launcher numbers its processes)."""
    return label.rsplit("-", 1)[0]


def peak_rss_by_node(pids: dict[str, int]) -> dict[str, float]:
    """Peak RSS (MiB) of each live labelled process, labels as given."""
    out = {}
    for label, pid in pids.items():
        rss = peak_rss_mib(pid)
        if rss is not None:
            out[label] = rss
    return out


def percentiles_ms(seconds: np.ndarray | list[float]) -> dict[str, float]:
    values = 1e3 * np.asarray(seconds)
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": len(values)}


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=2, default=float) + "\n")


@contextlib.contextmanager
def isolated_graph(tmp: Path, threads: int | None = None) -> Iterator[Any]:  # -> RosGraph
    """A RosGraph on its own domain whose processes use `threads` torch/OpenMP threads; the processes'
    logs are printed if the benchmark fails or times out, and every process is stopped at the end."""
    from rosgraph import RosGraph

    graph = RosGraph(tmp)
    if threads:
        graph.overrides["OMP_NUM_THREADS"] = str(threads)
    try:
        yield graph
    except (AssertionError, TimeoutError):
        print(graph.logs(), file=sys.stderr)
        raise
    finally:
        graph.close()
