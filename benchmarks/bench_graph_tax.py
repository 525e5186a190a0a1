"""The graph tax: episodes/s of GRPO-style sampled rollouts through the ROS graph divided by episodes/s
of the same rollouts in-process through the core env and model, in one run (target >= 0.9).

    .venv/bin/python benchmarks/bench_graph_tax.py [--task reach] [--episodes 16] [--arms 2]
                                                   [--checkpoint DIR] [--threads 1] [--json out.json]
                                                   [--set policy_node.batch_window_s=0.0 ...]
                                                   [--launch composed:=false ...]

graph:      `vla-rl launch train_sim learner:=false`: per arm a sim_bridge, executor, success_detector
            and episode_manager (one sim_arms process per arm, train_sim's default; --launch
            composed:=false: one process each), and one policy_node batching every arm's requests; the task's
            training seeds in groups, sampled at T=1.6, only the policy's camera rendered. Timed from
            the end of each arm's first episode (start-up and the first reset excluded) to the
            --episodes-th result after it; the peak RSS (VmHWM) of every node is read at the end, and
            the CPU time every node used in the timed window (utime+stime, /proc) per control step
            is set against the in-process loop's: on two busy cores the rate follows the CPU spent.
in-process: `run_episodes(policy, task, seeds, greedy=False, record=True)` with --arms episodes side
            by side (one forward pass per decision, as the policy node batches the arms), after one
            untimed warm-up batch; run before and after the graph, the mean of both counts.
Both sides run the same task, image size, camera, chunk size, temperature and episode count; an
untrained policy rarely succeeds, so nearly every episode runs to the task's step limit on both. With
a trained --checkpoint episodes end early on success and the seeds differ (the episode manager draws
its own), so compare the control steps/s ratio printed next to the episodes/s one.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from common import cpu_seconds, fresh_default, isolated_graph, launched_pids, peak_rss_by_node, write_json
from rosgraph import wait_until
from test_graph_deploy import small_config  # config/ copied with edits, as the graph tests use it
from vla_rl_interfaces.msg import EpisodeResult, EpisodeStart

from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.policy.evaluate import run_episodes
from vla_rl_ros.rl.config import GROUP_SIZE
from vla_rl_ros.ros.names import EPISODE_RESULT_TOPIC
from vla_rl_ros.ros.qos import LATCHED, RESULTS
from vla_rl_ros.sim import TASKS

STARTUP_TIMEOUT_S = 300.0


def in_process_rate(policy: VLAPolicy, task: str, episodes: int, arms: int) -> dict:
    """Episodes/s of `episodes` sampled rollouts, `arms` at a time, after one untimed batch, and the
    process's CPU time per control step."""
    seeds = list(TASKS[task].train_seeds[: episodes + arms])
    generator = torch.Generator().manual_seed(0)
    run_episodes(policy, task, seeds[:arms], greedy=False, record=True, generator=generator)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    results = []
    for i in range(arms, arms + episodes, arms):
        results += run_episodes(policy, task, seeds[i:i + arms], greedy=False, record=True, generator=generator)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"episodes": len(results), "seconds": elapsed, "episodes_per_s": len(results) / elapsed,
            "cpu_ms_per_step": 1e3 * cpu / sum(r["steps"] for r in results),
            "steps_per_episode": sum(r["steps"] for r in results) / len(results),
            "end_reasons": dict(Counter(r["end_reason"] for r in results))}


def parse_settings(settings: list[str]) -> dict[str, dict]:
    """["policy_node.batch_window_s=0.0", ...] -> {"policy_node": {"batch_window_s": 0.0}} (YAML values)."""
    out: dict[str, dict] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        node, dot, name = key.partition(".")
        if not (sep and dot and node and name):
            raise SystemExit(f"--set {item!r}: expected node.parameter=value, e.g. policy_node.batch_window_s=0.0")
        out.setdefault(node, {})[name] = yaml.safe_load(value)
    return out


def graph_rate(checkpoint: Path, policy: VLAPolicy, task: str, episodes: int, arms: int, threads: int,
               tmp: Path, settings: dict[str, dict], launch_args: list[str]) -> dict:
    edits = {"episode_manager": {"group_size": GROUP_SIZE},
             "sim_bridge": {"image_size": policy.image_size, "cameras": [policy.camera]}}
    for node, values in settings.items():
        edits[node] = {**edits.get(node, {}), **values}
    config = small_config(tmp, **edits)
    with isolated_graph(tmp, threads) as graph:
        names = [f"arm{i}" for i in range(arms)]
        results = {a: graph.probe.collect(EpisodeResult, f"/{a}/{EPISODE_RESULT_TOPIC}", RESULTS) for a in names}
        events: list[tuple[float, str, str]] = []  # (arrival, arm, "start" | "result"), for the breakdown
        for a in names:
            for kind, msg_type, qos in (("start", EpisodeStart, LATCHED), ("result", EpisodeResult, RESULTS)):
                graph.probe.node.create_subscription(
                    msg_type, f"/{a}/episode_{kind}",
                    lambda _m, a=a, k=kind: events.append((time.perf_counter(), a, k)), qos)
        graph.launch("train_sim", f"num_arms:={arms}", f"tasks:=[{task}]", "learner:=false",
                     f"checkpoint:={checkpoint}", f"config_dir:={config}", "eval_seeds_per_task:=0", *launch_args)
        wait_until(lambda: all(results.values()), STARTUP_TIMEOUT_S, "every arm's first episode")
        counted = [len(r) for r in results.values()]
        pids = launched_pids(graph.log("launch"))
        cpu_before = {label: cpu_seconds(pid) for label, pid in pids.items()}
        start = time.perf_counter()
        wait_until(lambda: sum(len(r) for r in results.values()) - sum(counted) >= episodes,
                   STARTUP_TIMEOUT_S + 60 * episodes, f"{episodes} episodes")
        elapsed = time.perf_counter() - start
        cpu = {label: cpu_seconds(pid) - cpu_before[label] for label, pid in pids.items()
               if cpu_seconds(pid) is not None and cpu_before[label] is not None}
        timed = [m for r, c in zip(results.values(), counted, strict=True) for m in r[c:]]
        memory = peak_rss_by_node(launched_pids(graph.log("launch")))
        return {"episodes": len(timed), "seconds": elapsed, "episodes_per_s": len(timed) / elapsed,
                "steps_per_episode": sum(m.steps for m in timed) / len(timed),
                "end_reasons": dict(Counter(m.end_reason for m in timed)), "peak_rss_mib": memory,
                # CPU seconds each node used per control step of the timed episodes: where the tax goes
                "cpu_ms_per_step": {k: 1e3 * v / sum(m.steps for m in timed) for k, v in cpu.items()},
                **phases([e for e in events if e[0] >= start], names)}


def phases(events: list[tuple[float, str, str]], arms: list[str]) -> dict[str, float]:
    """Mean seconds per arm from an EpisodeStart to its result (running) and from a result to the
    next start (reset and announcement), as the probe saw them."""
    running, between = [], []
    for arm in arms:
        mine = [(t, k) for t, a, k in events if a == arm]
        for (t0, k0), (t1, k1) in itertools.pairwise(mine):
            if (k0, k1) == ("start", "result"):
                running.append(t1 - t0)
            elif (k0, k1) == ("result", "start"):
                between.append(t1 - t0)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"running_s": mean(running), "between_s": mean(between)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach", choices=list(TASKS), help="the task every episode runs")
    parser.add_argument("--episodes", type=int, default=16, help="timed episodes on each side")
    parser.add_argument("--arms", type=int, default=2, choices=(1, 2, 4), help="arms (graph) = episodes side by "
                        "side (in-process)")
    parser.add_argument("--checkpoint", type=Path, help="policy checkpoint (default: a fresh default-size tiny VLA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (this process and the nodes)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="change a node parameter of the graph (repeatable), e.g. policy_node.batch_window_s=0.0")
    parser.add_argument("--launch", action="append", default=[], metavar="NAME:=VALUE",
                        help="a train_sim launch argument (repeatable), e.g. composed:=false")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    settings = parse_settings(args.set)
    torch.set_num_threads(args.threads)
    instructions = [TASKS[args.task].sample(s).instruction for s in TASKS[args.task].train_seeds[:200]]
    policy = VLAPolicy.load(args.checkpoint) if args.checkpoint else fresh_default(instructions)
    print(f"{args.task}: {args.episodes} sampled episodes per side, {args.arms} arm(s) / side by side, "
          f"{policy.image_size} px {policy.camera} camera, chunk {policy.chunk_size}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = Path(tmp) / "policy"
            policy.save(checkpoint)
        before = in_process_rate(policy, args.task, args.episodes, args.arms)
        graph = graph_rate(checkpoint, policy, args.task, args.episodes, args.arms, args.threads, Path(tmp), settings,
                           args.launch)
        after = in_process_rate(policy, args.task, args.episodes, args.arms)
    core = (before["episodes_per_s"] + after["episodes_per_s"]) / 2
    core_steps = sum(r["episodes_per_s"] * r["steps_per_episode"] for r in (before, after)) / 2
    figures = {"task": args.task, "arms": args.arms, "episodes": args.episodes, "settings": settings,
               "launch": args.launch,
               "in_process_before": before,
               "in_process_after": after, "graph": graph, "in_process_episodes_per_s": core,
               "graph_episodes_per_s": graph["episodes_per_s"], "graph_over_in_process": graph["episodes_per_s"] / core,
               "graph_over_in_process_steps": graph["episodes_per_s"] * graph["steps_per_episode"] / core_steps,
               "peak_rss_mib": graph["peak_rss_mib"]}
    print(f"{'':>12} {'episodes/s':>11} {'steps/episode':>14}  end reasons")
    for name, r in (("in-process", before), ("graph", graph), ("in-process", after)):
        print(f"{name:>12} {r['episodes_per_s']:>11.3f} {r['steps_per_episode']:>14.1f}  {r['end_reasons']}")
    print(f"graph / in-process: {figures['graph_over_in_process']:.2f} episodes/s (target >= 0.9), "
          f"{figures['graph_over_in_process_steps']:.2f} control steps/s; graph per arm: "
          f"{graph['running_s']:.2f} s from start to result, {graph['between_s']:.2f} s from result to the next start")
    print("peak RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(graph["peak_rss_mib"].items())))
    per_step = graph["cpu_ms_per_step"]
    print(f"CPU ms per control step: in-process {before['cpu_ms_per_step']:.1f}, {after['cpu_ms_per_step']:.1f}; graph "
          f"{sum(per_step.values()):.1f} = " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_step.items())))
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
