"""Network traffic per episode between hosts (README, "Scaling out"): the bytes DDS sends, from real
messages serialized as rclpy does (`rclpy.serialization.serialize_message`), at each image size.

    .venv/bin/python benchmarks/bench_traffic.py [--sizes 64 224] [--task lift] [--episodes 4] [--json out.json]

Real episodes: --episodes sampled rollouts of a fresh default-size tiny VLA rendering --task at each
size in the core env (`run_episodes(record=True)`: per chunk the image and state the policy saw and
the tokens it sampled), turned into the policy node's Trajectory message (`trajectory_msg`); the
per-step messages are built as the sim bridge, executor and policy node build them.

learner remote (rollout_host with its policy node; the default): per episode one Trajectory and one
    EpisodeResult go to the learner host; /policy_update (a path: the weights are read from a shared
    filesystem) comes back once per update.
policy remote (rollout_host policy_servers:=0, learner_host policy:=true): every control step's
    camera image and joint state, and per chunk a ChunkRequest and an ActionChunk, cross too.
A link's episodes/s is its line rate over the bytes per episode (UDP/IP/RTPS headers, a few per
cent, and retransmissions not counted).

Compression of the Trajectory's images (OpenCV, one thread): PNG (lossless, level 1) and JPEG
(quality 90, lossy): bytes per episode, and the CPU to encode (rollout host) and decode (learner)
an episode's images, set against the link time the saved bytes would take. The learner must score
the images the policy saw: a lossy codec is usable only if the policy also acts on the decoded image.
Rendered sim frames are flat-shaded and compress far better than camera frames. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from builtin_interfaces.msg import Time
from common import fresh_default, write_json
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult

from vla_rl_ros.nodes.policy_node import trajectory_msg
from vla_rl_ros.policy.evaluate import run_episodes
from vla_rl_ros.policy.serving import EpisodeLog
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE
from vla_rl_ros.ros.convert import image_to_msg
from vla_rl_ros.sim import TASKS, make_env

LINKS_GBIT = (1, 10)
EPISODE_ID = "h1_arm0-train-0123456789ab"  # the length of an episode manager's ids
CODECS = {"png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]), "jpeg90": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])}


def size_of(msg: object) -> int:
    return len(serialize_message(msg))


def episode_logs(size: int, task: str, episodes: int) -> tuple[list[EpisodeLog], list[int], object]:
    """Sampled rollouts at `size` px as the policy node's logs, their step counts, and the policy."""
    spec = TASKS[task]
    policy = fresh_default([spec.sample(s).instruction for s in spec.train_seeds[:50]], image_size=size)
    rollouts = run_episodes(policy, task, list(spec.train_seeds[:episodes]), greedy=False, record=True,
                            temperature=ROLLOUT_TEMPERATURE, generator=torch.Generator().manual_seed(0))
    logs = []
    for k, r in enumerate(rollouts):
        t = r["trajectory"]
        log = EpisodeLog(EPISODE_ID, "/h1/arm0", spec.sample(spec.train_seeds[k]).instruction, False, 3)
        log.images = [image_to_msg(img, Time(sec=1), "camera") for img in t["images"]]
        log.states, log.token_ids = list(t["state"]), list(t["token_ids"])
        log.log_probs, log.steps = [float(x) for x in t["log_probs"]], [int(s) for s in t["steps"]]
        logs.append(log)
    return logs, [int(r["steps"]) for r in rollouts], policy


def step_messages(policy: object, image: object, task: str) -> dict[str, int]:
    """Bytes of each per-step and per-chunk message a remote policy node receives or sends."""
    env = make_env(task, image_size=policy.image_size, cameras=(policy.camera,), action_dim=policy.action_dim)
    env.reset(TASKS[task].train_seeds[0])
    names, positions, velocities = env.joint_state()  # as the sim bridge publishes them
    joints = JointState(name=list(names), position=positions.tolist(), velocity=velocities.tolist())
    tokens = policy.chunk_size * policy.action_dim
    chunk = ActionChunk(episode_id=EPISODE_ID, request_id=1234, policy_version=3, chunk_size=policy.chunk_size,
                        action_dim=policy.action_dim, action_mode="ee_delta", actions=[0.01] * tokens,
                        token_ids=[7] * tokens, log_prob=-3.2)
    return {"image": size_of(image), "joint_states": size_of(joints),
            "chunk_request": size_of(ChunkRequest(episode_id=EPISODE_ID, request_id=1234, step=12)),
            "action_chunk": size_of(chunk)}


def codec_costs(images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Per codec: bytes of the encoded images, CPU ms to encode them all and to decode them all."""
    out = {}
    for name, (ext, options) in CODECS.items():
        start = time.process_time()
        encoded = [cv2.imencode(ext, img[:, :, ::-1], options)[1] for img in images]
        encode_s = time.process_time() - start
        start = time.process_time()
        for buf in encoded:
            cv2.imdecode(buf, cv2.IMREAD_COLOR)
        decode_s = time.process_time() - start
        out[name] = {"bytes": float(sum(b.nbytes for b in encoded)), "encode_ms": 1e3 * encode_s,
                     "decode_ms": 1e3 * decode_s}
    return out


def measure(size: int, task: str, episodes: int) -> dict:
    logs, steps, policy = episode_logs(size, task, episodes)
    trajectories = [trajectory_msg(log, ROLLOUT_TEMPERATURE, policy) for log in logs]
    result = EpisodeResult(episode_id=EPISODE_ID, arm="/h1/arm0", group_id="h1_arm0-group-0123456789ab",
                           group_size=8, task=task, instruction=logs[0].instruction, steps=steps[0],
                           end_reason="timeout")
    per_step = step_messages(policy, logs[0].images[0], task)
    chunks = [len(log.steps) for log in logs]
    trajectory_bytes = float(np.mean([size_of(t) for t in trajectories]))
    learner_remote = trajectory_bytes + size_of(result)
    policy_remote = learner_remote + float(np.mean(steps)) * (per_step["image"] + per_step["joint_states"]) + \
        float(np.mean(chunks)) * (per_step["chunk_request"] + per_step["action_chunk"])
    raw_images = [np.asarray(img.data, np.uint8).reshape(img.height, img.width, 3)
                  for log in logs for img in log.images]
    codecs = {name: {k: v / episodes for k, v in c.items()} for name, c in codec_costs(raw_images).items()}
    image_bytes = sum(len(img.data) for log in logs for img in log.images) / episodes
    return {
        "size": size, "task": task, "episodes": episodes, "steps_per_episode": float(np.mean(steps)),
        "chunks_per_episode": float(np.mean(chunks)), "chunk_size": policy.chunk_size,
        "message_bytes": {"trajectory": trajectory_bytes, "episode_result": size_of(result), **per_step},
        "trajectory_image_fraction": image_bytes / trajectory_bytes,
        "bytes_per_episode": {"learner_remote": learner_remote, "policy_remote": policy_remote},
        "episodes_per_s": {f"{g}gbit_{where}": g * 1e9 / 8 / b for g in LINKS_GBIT
                           for where, b in (("learner_remote", learner_remote), ("policy_remote", policy_remote))},
        "compression": {name: {**c, "saved_bytes": image_bytes - c["bytes"],
                               **{f"link_ms_saved_{g}gbit": 1e3 * (image_bytes - c["bytes"]) * 8 / (g * 1e9)
                                  for g in LINKS_GBIT}}
                        for name, c in codecs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="image sizes (px)")
    parser.add_argument("--task", default="lift", help="task of the rollouts (train_sim's default: lift)")
    parser.add_argument("--episodes", type=int, default=4, help="sampled rollouts per size")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = [measure(size, args.task, args.episodes) for size in args.sizes]
    for r in rows:
        b, m = r["bytes_per_episode"], r["message_bytes"]
        print(f"{r['size']} px, {r['task']}: {r['steps_per_episode']:.0f} steps, {r['chunks_per_episode']:.1f} chunks "
              f"(C={r['chunk_size']}) per episode")
        print(f"  Trajectory {m['trajectory'] / 1024:.1f} KiB ({100 * r['trajectory_image_fraction']:.1f}% images), "
              f"EpisodeResult {m['episode_result']} B; per step image {m['image']} B, "
              f"joint_states {m['joint_states']} B; per chunk request {m['chunk_request']} B, "
              f"chunk {m['action_chunk']} B")
        for where in ("learner_remote", "policy_remote"):
            rates = ", ".join(f"{g} Gb/s {r['episodes_per_s'][f'{g}gbit_{where}']:.0f}" for g in LINKS_GBIT)
            print(f"  {where}: {b[where] / 1024:.1f} KiB per episode; episodes/s: {rates}")
        for name, c in r["compression"].items():
            print(f"  {name}: images {c['bytes'] / 1024:.1f} KiB per episode "
                  f"(saves {c['saved_bytes'] / 1024:.1f} KiB); "
                  f"CPU encode {c['encode_ms']:.1f} + decode {c['decode_ms']:.1f} ms per episode; link time saved "
                  + ", ".join(f"{g} Gb/s {c[f'link_ms_saved_{g}gbit']:.2f} ms" for g in LINKS_GBIT))
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
