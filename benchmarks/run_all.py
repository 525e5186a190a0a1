"""Every benchmark, each in its own subprocess, then ONE table of their figures (also as JSON).

    .venv/bin/python benchmarks/run_all.py [--full] [--only sim,policy,graph_tax,graph_tax4,learner,recording,traffic]
                                           [--threads 1] [--out benchmarks/results.json]

Default sizes are small so the whole run takes a few minutes on two loaded cores; --full runs each
benchmark with its own (larger) defaults. Figures come from one run: on a shared machine treat the
ratios as indicative. `make bench` runs this. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, small arguments, full arguments); --json <file> is appended to each.
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    # 1,000 steps per graph figure: one of 100 steps lasts 0.4 s and swung by +-0.1
    "sim": ("bench_sim_graph.py", ["--sizes", "64", "--steps", "1000", "--repeats", "2"], []),
    "policy": ("bench_policy.py", ["--repeats", "50", "--seconds", "5"], []),
    "graph_tax": ("bench_graph_tax.py", ["--episodes", "16", "--arms", "2"], ["--episodes", "48", "--arms", "2"]),
    "graph_tax4": ("bench_graph_tax.py", ["--episodes", "16", "--arms", "4"], ["--episodes", "48", "--arms", "4"]),
    "learner": ("bench_learner.py", ["--repeats", "2"], ["--groups", "8"]),
    "recording": ("bench_recording.py", ["--frames", "100", "--episodes", "2"], []),
    "traffic": ("bench_traffic.py", ["--episodes", "2"], []),
}
THREADED = {"policy", "graph_tax", "graph_tax4", "learner"}  # take --threads


def run(name: str, full: bool, threads: int, tmp: Path) -> dict:
    """Run one benchmark; its JSON figures plus the command and wall time (or the error)."""
    script, small, large = BENCHMARKS[name]
    out = tmp / f"{name}.json"
    options = [*(large if full else small), *(["--threads", str(threads)] if name in THREADED else [])]
    shown = " ".join([".venv/bin/python", f"benchmarks/{script}", *options])
    print(f"== {name}: {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script), *options, "--json", str(out)], check=False)
    record = {"command": shown, "seconds": time.perf_counter() - start, "exit": proc.returncode}
    if proc.returncode == 0 and out.exists():
        record["figures"] = json.loads(out.read_text())
    return record


def rows(results: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows of the summary table."""
    out: list[tuple[str, str, str]] = []

    def add(bench: str, figure: str, value: str) -> None:
        out.append((bench, figure, value))

    for name, record in results.items():
        f = record.get("figures")
        if f is None:
            add(name, "FAILED", f"exit {record['exit']}")
            continue
        if name == "sim":
            for r in f["rows"]:
                px = f"{r['size']} px"
                add(name, f"raw MuJoCo step+render, {px} (steps/s)", f"{r['raw_steps_per_s']:.0f}")
                add(name, f"core env, {px} (steps/s); core/raw",
                    f"{r['core_steps_per_s']:.0f}; {r['core_over_raw']:.2f}")
                for c, g in r["graph_steps_per_s"].items():
                    add(name, f"graph C={c}, {px}, rendering at {f.get('render_when', 'step')} (steps/s); "
                              "graph/same work in-process; graph/core (target >= 0.7)",
                        f"{g:.0f}; {r['graph_over_same'][c]:.2f}; {r['graph_over_core'][c]:.2f}")
        elif name == "policy":
            d, g = f["act_latency_ms_batch1"], f.get("graph_latency_ms_batch1")
            add(name, "request->chunk latency p50/p95, direct act() (ms)", f"{d['p50']:.1f} / {d['p95']:.1f}")
            if g:
                add(name, "request->chunk latency p50/p95, via policy_node (ms)", f"{g['p50']:.1f} / {g['p95']:.1f}")
            for b in (1, 4, 8):
                direct, graph = f[f"chunks_per_s_batch{b}"], f.get(f"graph_chunks_per_s_arms{b}")
                value = f"{direct:.0f}" + (f" / {graph:.0f}; {graph / direct:.2f}" if graph else "")
                add(name, f"chunks/s batch {b}: direct / policy_node with {b} arms; ratio", value)
        elif name in ("graph_tax", "graph_tax4"):
            add(name, f"episodes/s {f['task']}, {f['arms']} arms: in-process / graph",
                f"{f['in_process_episodes_per_s']:.2f} / {f['graph_episodes_per_s']:.2f}")
            add(name, f"graph / in-process, {f['arms']} arms (target >= 0.9)", f"{f['graph_over_in_process']:.2f}")
            if name == "graph_tax4":  # the CPU and memory rows come from the 2-arm run
                continue
            core_cpu = (f["in_process_before"]["cpu_ms_per_step"] + f["in_process_after"]["cpu_ms_per_step"]) / 2
            add(name, "CPU ms per control step: in-process / graph (all nodes)",
                f"{core_cpu:.1f} / {sum(f['graph']['cpu_ms_per_step'].values()):.1f}")
            for label, ms in sorted(f["graph"]["cpu_ms_per_step"].items()):
                add("cpu", f"CPU ms per control step {label}", f"{ms:.2f}")
            for label, mib in sorted(f["peak_rss_mib"].items()):
                add("memory", f"peak RSS {label} (MiB)", f"{mib:.0f}")
        elif name == "learner":
            add(name, f"raw forward+backward ({f['chunks']} chunks) samples/s", f"{f['raw_samples_per_s']:.0f}")
            add(name, f"GRPO update ({f['epochs']} epochs) samples/s; update/raw",
                f"{f['update_samples_per_s']:.0f}; {f['update_over_raw']:.2f}")
            add("memory", "peak RSS learner benchmark process (MiB)", f"{f['peak_rss_mib']:.0f}")
        elif name == "recording":
            for r in f["rows"]:
                add(name, f"{r['frames']} frames, {'+'.join(r['cameras'])}: write fps, KiB/episode",
                    f"{r['write_fps']:.0f}, {r['bytes_per_episode'] / 1024:.0f}")
        elif name == "traffic":
            for r in f["rows"]:
                b, rate, png = r["bytes_per_episode"], r["episodes_per_s"], r["compression"]["png"]
                for where in ("learner_remote", "policy_remote"):
                    add(name, f"{r['size']} px {r['task']}, {where}: KiB/episode; episodes/s on 1 / 10 Gb/s",
                        f"{b[where] / 1024:.0f}; {rate[f'1gbit_{where}']:.0f} / {rate[f'10gbit_{where}']:.0f}")
                add(name, f"{r['size']} px, PNG of the trajectory's images: KiB/episode; CPU ms encode + decode",
                    f"{png['bytes'] / 1024:.0f}; {png['encode_ms']:.1f} + {png['decode_ms']:.1f}")
    if "policy" in results and results["policy"].get("figures", {}).get("policy_node_peak_rss_mib"):
        add("memory", "peak RSS policy_node serving 8 arms (MiB)",
            f"{results['policy']['figures']['policy_node_peak_rss_mib']:.0f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="each benchmark's own, larger default sizes")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model benchmarks")
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="where the JSON goes")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run(name, args.full, args.threads, Path(tmp)) for name in names}
    table = rows(results)
    width = max(len(figure) for _, figure, _ in table)
    print(f"\n{'benchmark':<10} {'figure':<{width}} value")
    for bench, figure, value in table:
        print(f"{bench:<10} {figure:<{width}} {value}")
    with open("/proc/loadavg") as load:
        loadavg = load.read().split()[:3]
    args.out.write_text(json.dumps({"load_average": loadavg, "results": results,
                                    "table": [list(r) for r in table]}, indent=2, default=float) + "\n")
    print(f"\nload average at the end {' '.join(loadavg)}; figures in {args.out}")


if __name__ == "__main__":
    main()
