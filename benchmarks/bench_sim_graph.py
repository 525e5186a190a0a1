"""Control steps per second of a raw MuJoCo step + render loop, the core env, and the full ROS graph
(sim_bridge + executor + a scripted policy), with the ratios core/raw and graph/core, in one run.

    .venv/bin/python benchmarks/bench_sim_graph.py [--steps 150] [--sizes 64,128,224] [--chunks 1,4,8]
                                                   [--repeats 3] [--json out.json] [--breakdown]
                                                   [--render-when chunk_request]

core:  bench_sim_core's CoreLoop: SimEnv.step with random end-effector deltas, both cameras rendered
       every step.
same:  the graph's work in one process: SimEnv.step from the held-out seed the graph runs, driven by
       the task's scripted expert re-planned every C steps (as the stand-in policy answers), past the
       episode's end as the graph's bridge steps on, both cameras rendered when the graph renders them
       (--render-when: every step, or the last step of each chunk). The expert grasps and carries an
       object, so its physics has contacts that random deltas rarely make: graph/same is the graph's
       overhead on the same work (graph/core compares with the random-delta loop rendering every
       step, as earlier sessions did).
graph: the sim_bridge (both cameras rendered and published at --render-when: chunk_request, as
       train_sim runs it, or every step) and the executor (IK, limits, lockstep) in
       one sim_arms process, as train_sim runs them, and test/nodes/scripted_policy.py (the task's
       scripted expert answering every ChunkRequest with a chunk of C steps) in another, on an
       isolated localhost domain; a probe subscribes to both camera topics, as a policy and a
       recorder would. C=1 is one policy round trip per step; C=4 the embedded policies' chunk (what
       make train runs); C=8 a typical VLA chunk. Steps are
       counted on task_state over wall time, after warm-up.
--breakdown: sim_arms runs under benchmarks/sim_arms_breakdown.py, and after each graph run a table
gives its main thread's milliseconds per control step by callback, core call, publish and the gaps
between callbacks (the clocks slow the graph by a few percent).
The core figure is the best of --repeats rounds plus one round after each graph run, each same figure
the best of --repeats rounds before its graph run and one after (the round least disturbed by other
processes; same and core share one env, as a process's second GL context renders slower than its
first); each graph figure is one run of --steps steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "test")]

from bench_sim_core import BENCH_TASK, CoreLoop, RawLoop  # noqa: E402
from common import isolated_graph  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rosgraph import wait_until  # noqa: E402  (the graph tests' isolated-domain helpers)
from sensor_msgs.msg import Image  # noqa: E402
from vla_rl_interfaces.msg import EpisodeStart, TaskState  # noqa: E402
from vla_rl_interfaces.srv import ResetEpisode  # noqa: E402

from vla_rl_ros.nodes.sim_bridge import RENDER_WHEN  # noqa: E402
from vla_rl_ros.ros.names import (  # noqa: E402
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    EPISODE_START_TOPIC,
    RESET_EPISODE_SERVICE,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE  # noqa: E402
from vla_rl_ros.sim import CAMERAS, TASKS, SimEnv  # noqa: E402

SCRIPTED_POLICY = REPO / "test" / "nodes" / "scripted_policy.py"
BREAKDOWN = REPO / "benchmarks" / "sim_arms_breakdown.py"
WARMUP_STEPS = 10
STARTUP_TIMEOUT_S = 120.0


def graph_rate(size: int, chunk_size: int, steps: int, render_when: str, breakdown: Path | None = None) -> float:
    """Control steps/s of one episode of BENCH_TASK through the graph (no step limit); `breakdown`: the
    JSON file sim_arms_breakdown.py writes when the graph stops (sim_arms runs under it)."""
    with tempfile.TemporaryDirectory() as tmp, isolated_graph(Path(tmp)) as graph:
        ros_args = ["-p", "nodes:=[sim_bridge, executor]", "-p", f"sim_bridge.image_size:={size}",
                    "-p", f"sim_bridge.task:={BENCH_TASK}", "-p", f"sim_bridge.render_when:={render_when}"]
        if breakdown is None:
            graph.node("sim_arms", *ros_args)
        else:
            graph.start("sim_arms", [sys.executable, str(BREAKDOWN), "--ros-args", *ros_args],
                        env={"BREAKDOWN_JSON": str(breakdown)})
        graph.start("scripted_policy", [sys.executable, str(SCRIPTED_POLICY), "--ros-args",
                                        "-p", f"chunk_size:={chunk_size}"])
        probe = graph.probe
        frames = [0]
        for topic in CAMERA_TOPICS.values():
            probe.node.create_subscription(Image, topic, lambda _m: frames.__setitem__(0, frames[0] + 1),
                                           qos_profile_sensor_data)
        states = probe.collect(TaskState, TASK_STATE_TOPIC, RELIABLE)
        start_pub = probe.publisher(EpisodeStart, EPISODE_START_TOPIC, LATCHED)
        wait_until(lambda: probe.node.count_publishers(ACTION_CHUNK_TOPIC) and probe.node.count_subscribers(
            EPISODE_START_TOPIC), STARTUP_TIMEOUT_S, "the executor and the scripted policy")
        seed = TASKS[BENCH_TASK].heldout_seeds[0]
        reset = probe.call(ResetEpisode, RESET_EPISODE_SERVICE, ResetEpisode.Request(task=BENCH_TASK, seed=seed,
                                                                                     episode_id="bench"),
                           STARTUP_TIMEOUT_S)
        assert reset.success, reset.message
        wait_until(lambda: states and states[-1].episode_id == "bench", what="the reset state")
        start = EpisodeStart(episode_id="bench", task=BENCH_TASK, seed=seed, max_steps=0, evaluation=True)
        start.header.stamp = states[-1].header.stamp
        start_pub.publish(start)
        wait_until(lambda: states[-1].step >= WARMUP_STEPS, what="warm-up steps")
        first, t0 = states[-1].step, time.perf_counter()
        wait_until(lambda: states[-1].step >= first + steps, 10 * STARTUP_TIMEOUT_S, f"{steps} steps")
        rate = (states[-1].step - first) / (time.perf_counter() - t0)
        assert frames[0] > 0, "no camera image reached the probe"
        return rate


def print_breakdown(path: Path, rate: float) -> None:
    """sim_arms's main thread, milliseconds per control step, largest first (nested entries overlap:
    on_trajectory holds SimEnv.step, which holds the renders)."""
    result = json.loads(path.read_text())
    steps = max(result["steps"], 1)
    print(f"      sim_arms breakdown: {1e3 / rate:.3f} ms of wall per step, {steps} steps; the process used "
          f"{result['cpu_s'] / result['wall_s']:.2f} of a core over its life; ms per step, calls:")
    for name, (calls, seconds) in sorted(result["figures"].items(), key=lambda kv: -kv[1][1]):
        print(f"      {1e3 * seconds / steps:8.3f}  {calls:7d}  {name}")


def same_rate(env: SimEnv, chunk: int, steps: int, render_when: str) -> float:
    """Control steps/s of the graph's work in-process: the graph's seed and warm-up, the scripted expert
    every `chunk` steps, its action repeated in between, the cameras rendered as the graph's bridge
    renders them (every step, or after the last step of each chunk: the frame a policy reads)."""
    spec = TASKS[BENCH_TASK]
    env.reset(spec.heldout_seeds[0])
    start = 0.0
    for i in range(WARMUP_STEPS + steps):
        if i == WARMUP_STEPS:
            start = time.perf_counter()
        if i % chunk == 0:
            action = spec.expert(env)
        env.set_observed_cameras(CAMERAS if render_when == "step" or (i + 1) % chunk == 0 else ())
        env.step(action)
    rate = steps / (time.perf_counter() - start)
    env.set_observed_cameras(CAMERAS)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="control steps per measurement")
    parser.add_argument("--sizes", default="64,128,224", help="image sizes (px, square)")
    parser.add_argument("--chunks", default="1,4,8", help="chunk sizes C the scripted policy answers with")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the core loop (best one kept)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--breakdown", action="store_true", help="time sim_arms's callbacks in each graph run")
    parser.add_argument("--render-when", default="chunk_request", choices=RENDER_WHEN,
                        help="the bridge's render_when in the graph (and the same loop's rendering)")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    rows = []
    print(f"control steps/s of {BENCH_TASK}, both cameras, {args.steps} steps per graph measurement; graph and same "
          f"render at {args.render_when}, core every step")
    header = f"{'size':>5} {'raw':>8} {'core':>8} {'core/raw':>9}"
    header += "".join(f" {f'same C={c}':>10} {f'graph C={c}':>11} {'graph/same':>10} {'graph/core':>10}"
                      for c in chunks)
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        core_loop = CoreLoop(size)
        core_rates = [core_loop.run(args.steps) for _ in range(args.repeats)]
        graph, same = {}, {}
        for c in chunks:  # in-process rounds around each graph run, so both see the machine's same load
            same_rates = [same_rate(core_loop.env, c, args.steps, args.render_when) for _ in range(args.repeats)]
            with tempfile.TemporaryDirectory() as out:
                breakdown = Path(out) / "breakdown.json" if args.breakdown else None
                graph[c] = graph_rate(size, c, args.steps, args.render_when, breakdown)
                if breakdown is not None:
                    print(f"{size:>5} px, C={c}: graph {graph[c]:.1f} steps/s", flush=True)
                    print_breakdown(breakdown, graph[c])
            same[c] = max([*same_rates, same_rate(core_loop.env, c, args.steps, args.render_when)])
            core_rates.append(core_loop.run(args.steps))
        core = max(core_rates)
        core_loop.env.close()
        raw_loop = RawLoop(size)  # a raw MuJoCo step + render loop: the floor of what the core env adds
        raw = max(raw_loop.run(args.steps) for _ in range(args.repeats))
        raw_loop.renderer.close()
        rows.append({"size": size, "raw_steps_per_s": raw, "core_steps_per_s": core, "core_over_raw": core / raw,
                     "same_steps_per_s": same, "graph_steps_per_s": graph,
                     "graph_over_same": {c: graph[c] / same[c] for c in chunks},
                     "graph_over_core": {c: g / core for c, g in graph.items()}})
        cells = "".join(f" {same[c]:>10.1f} {graph[c]:>11.1f} {graph[c] / same[c]:>10.3f} {graph[c] / core:>10.3f}"
                        for c in chunks)
        print(f"{size:>5} {raw:>8.1f} {core:>8.1f} {core / raw:>9.3f}{cells}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"task": BENCH_TASK, "render_when": args.render_when, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
