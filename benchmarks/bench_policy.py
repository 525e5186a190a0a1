"""Policy speed on CPU: act() latency p50/p95 at batch 1, and chunks/s at batch 1, 4 and 8.

    .venv/bin/python benchmarks/bench_policy.py [--checkpoint DIR] [--threads 2] [--repeats 100]

Without --checkpoint it times a fresh tiny VLA of the default architecture (the weights do not
change the speed). Prints figures; asserts nothing (tests do not time things)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vla_rl_ros.policy import VLAPolicy, new_tiny_policy
from vla_rl_ros.policy.sft import SFTConfig

BATCHES = (1, 4, 8)
WARMUP = 5
INSTRUCTION = "put the blue cube on the plate"
STATE_DIM = 11  # the sim's proprioception (7 joints, TCP xyz, gripper)


def fresh_default() -> VLAPolicy:
    defaults = SFTConfig()
    demos = np.random.default_rng(0).uniform(-0.04, 0.04, (256, 4))
    return new_tiny_policy([INSTRUCTION], demos, chunk_size=defaults.chunk_size, state_dim=STATE_DIM,
                           vision=defaults.vision, film=defaults.film, hidden_size=defaults.hidden_size,
                           num_hidden_layers=defaults.layers)


def time_calls(policy: VLAPolicy, batch: int, repeats: int, greedy: bool) -> np.ndarray:
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, policy.image_size, policy.image_size, 3), dtype=np.uint8)
    state = rng.normal(size=(batch, STATE_DIM)).astype(np.float32)
    texts = [INSTRUCTION] * batch
    for _ in range(WARMUP):
        policy.act(images, state, texts, greedy=greedy)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        policy.act(images, state, texts, greedy=greedy)
        seconds.append(time.perf_counter() - started)
    return np.array(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="policy checkpoint (default: a fresh default-size tiny VLA)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per batch size")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = VLAPolicy.load(args.checkpoint) if args.checkpoint else fresh_default()
    params = sum(p.numel() for p in policy.model.parameters())
    print(f"policy: {args.checkpoint or 'fresh default'}, {params / 1e6:.2f} M parameters, chunk "
          f"{policy.chunk_size} x {policy.action_dim}, {policy.image_size} px, {args.threads} threads")
    figures: dict = {"parameters": params, "threads": args.threads}
    one = time_calls(policy, 1, args.repeats, greedy=True)
    figures["act_latency_ms_batch1"] = {"p50": 1e3 * np.percentile(one, 50), "p95": 1e3 * np.percentile(one, 95)}
    print(f"act() latency at batch 1 (greedy): p50 {figures['act_latency_ms_batch1']['p50']:.2f} ms, "
          f"p95 {figures['act_latency_ms_batch1']['p95']:.2f} ms")
    for batch in BATCHES:
        seconds = time_calls(policy, batch, args.repeats, greedy=False)
        figures[f"chunks_per_s_batch{batch}"] = batch / np.median(seconds)
        print(f"batch {batch}: {batch / np.median(seconds):8.1f} chunks/s (sampled, T=1.6)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
