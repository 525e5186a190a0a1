"""Recording throughput of EpisodeDataset.append at 224 px with one and two cameras, bytes per
episode, read-back speed and video PSNR, printed in one run.

    .venv/bin/python benchmarks/bench_recording.py [--frames 200] [--episodes 3] [--json out.json]

Frames are synthetic: "render" is smooth shading and a moving box (like a MuJoCo camera), "camera"
adds per-pixel noise of NOISE_STD grey levels (like a real sensor), which H.264 encodes more slowly
and less compactly. Real images with more texture land between or below these figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_json

from vla_rl_ros.data import Episode, EpisodeDataset
from vla_rl_ros.data.video import psnr

IMAGE_SIZE = 224  # px, the usual VLA input size (OpenVLA, SimpleVLA-RL)
FPS = 10
STATE_DIM, ACTION_DIM = 8, 4
NOISE_STD = 2.0  # grey levels of per-pixel noise of the "camera" frames


def render(T: int, size: int, seed: int, noise: float) -> np.ndarray:
    """(T, size, size, 3) uint8 frames: shaded table, a moving box, `noise` grey levels of noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([60 + 100 * xx / size, 70 + 90 * yy / size, np.full_like(xx, 110)], axis=-1)
    frames = np.empty((T, size, size, 3), dtype=np.uint8)
    box = size // 8
    for t in range(T):
        frame = base + rng.normal(0, noise, base.shape) if noise else base.copy()
        cy, cx = int(size / 3 + size / 4 * np.sin(t / 15)), int(size / 3 + t * size / (2 * T))
        frame[cy : cy + box, cx : cx + box] = (200, 40, 30)
        frames[t] = np.clip(frame, 0, 255)
    return frames


def episode(cameras: list[str], T: int, seed: int, noise: float) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        task="pick_place",
        instruction="put the red cube on the plate",
        seed=seed,
        success=True,
        reward=1.0,
        end_reason="success",
        images={cam: render(T, IMAGE_SIZE, seed * 10 + i, noise) for i, cam in enumerate(cameras)},
        state=rng.standard_normal((T, STATE_DIM)).astype(np.float32),
        actions=rng.standard_normal((T, ACTION_DIM)).astype(np.float32),
    )


def run(cameras: list[str], T: int, episodes: int, noise: float, root: Path) -> dict[str, float]:
    ds = EpisodeDataset.create(
        root,
        fps=FPS,
        cameras={cam: (IMAGE_SIZE, IMAGE_SIZE) for cam in cameras},
        state_names=[f"s{i}" for i in range(STATE_DIM)],
        action_names=[f"a{i}" for i in range(ACTION_DIM)],
    )
    made = [episode(cameras, T, seed, noise) for seed in range(episodes)]
    start = time.perf_counter()
    for ep in made:
        ds.append(ep)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    read = [ds[i] for i in range(episodes)]
    read_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "write_fps": episodes * T / write_s,
        "read_fps": episodes * T / read_s,
        "bytes_per_episode": size / episodes,
        "raw_bytes_per_episode": T * len(cameras) * IMAGE_SIZE * IMAGE_SIZE * 3,
        "psnr_db": min(psnr(a.images[c], b.images[c]) for a, b in zip(made, read, strict=True) for c in cameras),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="frames per episode (T)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes per configuration")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = []
    print(f"{IMAGE_SIZE} px, {args.frames} frames per episode, {args.episodes} episodes, H.264 crf 18 veryfast")
    print(
        f"{'frames':<8}{'cameras':<14}{'write fps':>10}{'read fps':>10}{'KiB/episode':>13}{'ratio':>8}{'min PSNR':>10}"
    )
    for kind, noise in (("render", 0.0), ("camera", NOISE_STD)):
        for cameras in (["front"], ["front", "wrist"]):
            with tempfile.TemporaryDirectory() as tmp:
                r = run(cameras, args.frames, args.episodes, noise, Path(tmp) / "ds")
            ratio = r["raw_bytes_per_episode"] / r["bytes_per_episode"]
            rows.append({"frames": kind, "cameras": cameras, **r, "compression": ratio})
            print(
                f"{kind:<8}{'+'.join(cameras):<14}{r['write_fps']:>10.0f}{r['read_fps']:>10.0f}"
                f"{r['bytes_per_episode'] / 1024:>13.0f}{ratio:>7.0f}x{r['psnr_db']:>8.1f} dB"
            )
    print("write fps: frames (all cameras of one time step) appended per second, including encoding and fsync")
    write_json(args.json, {"image_size": IMAGE_SIZE, "frames_per_episode": args.frames, "rows": rows})


if __name__ == "__main__":
    main()
