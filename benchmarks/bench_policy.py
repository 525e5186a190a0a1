"""Policy speed on CPU, direct and through the ROS graph, in one run:

- request-to-chunk latency p50/p95 at batch 1 (greedy): a direct `VLAPolicy.act` call, and a real
  policy_node process answering a ChunkRequest with an ActionChunk (from publishing the request to
  receiving the chunk, the image and joint state stamped as the request streamed just before it, as
  the sim bridge and the executor do: the node answers only from observations no older than the request);
- throughput (sampled, T=1.6): direct `act` chunks/s at batch 1, 4, 8, and chunks/s of one policy
  node serving 1, 4 and 8 arm namespaces that each re-request as soon as their chunk arrives
  (closed loop; the node batches the requests that are ready together).

    .venv/bin/python benchmarks/bench_policy.py [--checkpoint DIR] [--threads 1] [--repeats 100]
                                                [--seconds 10] [--no-graph] [--json out.json]

Without --checkpoint it times a fresh tiny VLA of the default architecture (the weights do not
change the speed). Direct figures are the mean of a round before and a round after the graph's (the
load of a shared machine drifts). Prints figures; asserts nothing (tests do not time things)."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    DEFAULT_INSTRUCTION,
    STATE_DIM,
    fresh_default,
    isolated_graph,
    peak_rss_mib,
    percentiles_ms,
    write_json,
)
from rclpy.qos import qos_profile_sensor_data
from rosgraph import REPO, RosGraph, wait_until
from sensor_msgs.msg import Image, JointState
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart

from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.ros.convert import image_to_msg, to_stamp
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CHUNK_REQUEST_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    JOINT_STATES_TOPIC,
    camera_topic,
)
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, RESULTS
from vla_rl_ros.sim.env import JOINT_STATE_NAMES

BATCHES = (1, 4, 8)
WARMUP = 5
STARTUP_TIMEOUT_S = 180.0
RESEND_S = 0.05  # an arm whose chunk has not come re-sends its observation (images are best effort)
HOME = [0.0, -0.5, 0.0, -2.3, 0.0, 1.8, 0.8, 0.04, 0.04]  # a plausible Panda joint state (rad, m)


def time_calls(policy: VLAPolicy, batch: int, repeats: int, greedy: bool) -> np.ndarray:
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, policy.image_size, policy.image_size, 3), dtype=np.uint8)
    state = rng.normal(size=(batch, STATE_DIM)).astype(np.float32)
    texts = [DEFAULT_INSTRUCTION] * batch
    for _ in range(WARMUP):
        policy.act(images, state, texts, greedy=greedy)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        policy.act(images, state, texts, greedy=greedy)
        seconds.append(time.perf_counter() - started)
    return np.array(seconds)


class ProbeArm:
    """One arm as the policy node sees it: a camera, a joint-state stream, an executor requesting
    chunks and an episode manager announcing one episode. Played by the benchmark's probe node."""

    def __init__(self, graph: RosGraph, name: str, image_size: int, camera: str, greedy: bool) -> None:
        probe = graph.probe
        self.name, self.greedy = name, greedy
        self.start_pub = probe.publisher(EpisodeStart, f"/{name}/{EPISODE_START_TOPIC}", LATCHED)
        self.result_pub = probe.publisher(EpisodeResult, f"/{name}/{EPISODE_RESULT_TOPIC}", RESULTS)
        self.request_pub = probe.publisher(ChunkRequest, f"/{name}/{CHUNK_REQUEST_TOPIC}", RELIABLE)
        self.image_pub = probe.publisher(Image, f"/{name}/{camera_topic(camera)}", qos_profile_sensor_data)
        self.joint_pub = probe.publisher(JointState, f"/{name}/{JOINT_STATES_TOPIC}", qos_profile_sensor_data)
        self.chunk_sub = probe.node.create_subscription(ActionChunk, f"/{name}/{ACTION_CHUNK_TOPIC}", self.on_chunk,
                                                        RELIABLE)
        pixels = np.random.default_rng(len(name)).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        self.image = image_to_msg(pixels, to_stamp(0))
        self.joints = JointState(name=list(JOINT_STATE_NAMES), position=HOME)
        self.episodes = 0
        self.episode_id = ""
        self.request_id = 0
        self.sent_at = 0.0
        self.latencies: list[float] = []
        self.answered = threading.Event()
        self.closed_loop = False  # re-request as soon as a chunk arrives (throughput)
        self.chunks = 0

    def endpoints(self) -> list:
        return [self.start_pub, self.result_pub, self.request_pub, self.image_pub, self.joint_pub, self.chunk_sub]

    def begin(self) -> None:
        """End the current episode (the node drops its log) and announce a new one: each measurement
        runs in a fresh episode, as rollouts do, so the node's episode logs stay episode-sized."""
        if self.episode_id:
            self.end()
        self.episodes += 1
        self.episode_id = f"bench-{self.name}-{self.episodes}"
        self.start_pub.publish(EpisodeStart(episode_id=self.episode_id, arm=f"/{self.name}", task="bench",
                                            instruction=DEFAULT_INSTRUCTION, evaluation=True))

    def observe(self) -> None:
        self.image_pub.publish(self.image)
        self.joint_pub.publish(self.joints)

    def request(self) -> None:
        """A new observation (stamped with the next step), then the request stamped the same."""
        self.request_id += 1
        stamp = to_stamp(self.request_id * 100_000_000)  # 10 Hz sim time
        self.image.header.stamp = self.joints.header.stamp = stamp
        msg = ChunkRequest(episode_id=self.episode_id, request_id=self.request_id, step=self.request_id,
                           greedy=self.greedy)
        msg.header.stamp = stamp
        self.answered.clear()
        self.observe()
        self.sent_at = time.perf_counter()
        self.request_pub.publish(msg)

    def on_chunk(self, msg: ActionChunk) -> None:
        if msg.episode_id != self.episode_id or msg.request_id != self.request_id:
            return
        self.latencies.append(time.perf_counter() - self.sent_at)
        self.chunks += 1
        self.answered.set()
        if self.closed_loop:
            self.request()

    def nudge(self) -> None:
        """Re-send the observation if the answer is late (a best-effort image may have been lost)."""
        if not self.answered.is_set() and time.perf_counter() - self.sent_at > RESEND_S:
            self.observe()

    def end(self) -> None:
        self.result_pub.publish(EpisodeResult(episode_id=self.episode_id, arm=f"/{self.name}", end_reason="timeout"))


def start_policy_node(graph: RosGraph, checkpoint: Path, arms: int) -> None:
    names = ", ".join(f"arm{i}" for i in range(arms))
    graph.node("policy_node", "--params-file", str(REPO / "config" / "policy_node.yaml"),
               "-p", f"checkpoint:={checkpoint}", "-p", f"arms:=[{names}]")


def graph_latency(arm: ProbeArm, repeats: int) -> np.ndarray:
    arm.latencies.clear()
    for i in range(WARMUP + repeats):
        arm.request()
        wait_until(lambda: (arm.nudge(), arm.answered.wait(0.01))[1], 60, f"the chunk of request {i}")
    return np.array(arm.latencies[WARMUP:])


def graph_throughput(arms: list[ProbeArm], seconds: float) -> float:
    """Chunks/s of the node serving these arms in closed loop, after a short warm-up."""
    for arm in arms:
        arm.begin()
        arm.closed_loop = True
        arm.request()

    def run(duration: float) -> tuple[int, float]:
        before, start = sum(a.chunks for a in arms), time.perf_counter()
        while time.perf_counter() - start < duration:
            time.sleep(0.01)
            for arm in arms:
                arm.nudge()
        return sum(a.chunks for a in arms) - before, time.perf_counter() - start

    run(min(2.0, seconds / 4))
    chunks, elapsed = run(seconds)
    for arm in arms:
        arm.closed_loop = False
    time.sleep(0.5)  # the last requests' answers drain
    return chunks / elapsed


def direct_rate(policy: VLAPolicy, batch: int, repeats: int) -> float:
    """Chunks/s of sampled `act` calls at this batch size (median call)."""
    return batch / float(np.median(time_calls(policy, batch, repeats, greedy=False)))


def measure(policy: VLAPolicy, checkpoint: Path | None, repeats: int, seconds: float, threads: int,
            graph: bool) -> dict:
    """Direct figures, and with `graph` the policy node's, each graph figure between two direct
    rounds whose mean it is compared with (the load of a shared machine drifts within a run)."""
    latencies = [time_calls(policy, 1, repeats, greedy=True)]
    rates = {batch: [direct_rate(policy, batch, repeats)] for batch in BATCHES}
    figures: dict = {}
    if graph:
        with tempfile.TemporaryDirectory() as tmp, isolated_graph(Path(tmp), threads) as ros:
            if checkpoint is None:
                checkpoint = Path(tmp) / "policy"
                policy.save(checkpoint)
            start_policy_node(ros, checkpoint, max(BATCHES))
            arms = [ProbeArm(ros, f"arm{i}", policy.image_size, policy.camera, greedy=False)
                    for i in range(max(BATCHES))]
            ros.probe.wait_matched(*[e for arm in arms for e in arm.endpoints()], timeout=STARTUP_TIMEOUT_S)
            arms[0].begin()
            arms[0].greedy = True
            figures["graph_latency_ms_batch1"] = percentiles_ms(graph_latency(arms[0], repeats))
            arms[0].greedy = False
            latencies.append(time_calls(policy, 1, repeats, greedy=True))
            for batch in BATCHES:
                figures[f"graph_chunks_per_s_arms{batch}"] = graph_throughput(arms[:batch], seconds)
                rates[batch].append(direct_rate(policy, batch, repeats))
            figures["policy_node_peak_rss_mib"] = peak_rss_mib(ros.procs[0][1].pid)
            for arm in arms:
                arm.end()
    figures["act_latency_ms_batch1"] = percentiles_ms(np.concatenate(latencies))
    for batch, values in rates.items():
        figures[f"chunks_per_s_batch{batch}"] = float(np.mean(values))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="policy checkpoint (default: a fresh default-size tiny VLA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (direct calls and the node); on "
                        "two loaded cores one thread is faster and steadier than two")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls (direct) and requests (graph)")
    parser.add_argument("--seconds", type=float, default=10.0, help="graph throughput: seconds per arm count")
    parser.add_argument("--no-graph", action="store_true", help="direct calls only")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = VLAPolicy.load(args.checkpoint) if args.checkpoint else fresh_default()
    params = sum(p.numel() for p in policy.model.parameters())
    print(f"policy: {args.checkpoint or 'fresh default'}, {params / 1e6:.2f} M parameters, chunk "
          f"{policy.chunk_size} x {policy.action_dim}, {policy.image_size} px, {args.threads} threads")
    figures: dict = {"parameters": params, "threads": args.threads}
    figures |= measure(policy, args.checkpoint, args.repeats, args.seconds, args.threads, not args.no_graph)
    direct, graph = figures["act_latency_ms_batch1"], figures.get("graph_latency_ms_batch1")
    print(f"request-to-chunk latency, batch 1 (greedy): direct act() p50 {direct['p50']:.2f} ms, "
          f"p95 {direct['p95']:.2f} ms" + (f"; graph p50 {graph['p50']:.2f} ms, p95 {graph['p95']:.2f} ms"
                                            if graph else ""))
    print(f"{'batch/arms':>10} {'direct chunks/s':>16} {'graph chunks/s':>15} {'graph/direct':>13}   (sampled, T=1.6)")
    for batch in BATCHES:
        direct_rate = figures[f"chunks_per_s_batch{batch}"]
        graph_rate = figures.get(f"graph_chunks_per_s_arms{batch}")
        cells = f"{graph_rate:>15.1f} {graph_rate / direct_rate:>13.2f}" if graph_rate else f"{'-':>15} {'-':>13}"
        print(f"{batch:>10} {direct_rate:>16.1f} {cells}")
    if figures.get("policy_node_peak_rss_mib"):
        print(f"policy_node peak RSS: {figures['policy_node_peak_rss_mib']:.0f} MiB")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
