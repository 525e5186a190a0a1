"""Per-feature statistics in LeRobot's stats.json form (min, max, mean, std, count, quantiles), per
episode at write time and pooled over episodes, so normalisation never has to re-read the data."""

from __future__ import annotations

import numpy as np

# LeRobot's DEFAULT_QUANTILES (lerobot/datasets/compute_stats.py).
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)
PIXEL_LEVELS = 256  # uint8
# Images at least this many pixels on the short side are read at every 2nd row and column for their
# statistics: 4x faster, and normalisation statistics do not need every pixel (LeRobot downsamples
# images above 300 px and samples frames, lerobot/datasets/compute_stats.py).
STAT_SUBSAMPLE_FROM_PX = 128
# Images are scaled to [0, 1] for statistics, as LeRobot's policies normalise them.
PIXEL_SCALE = 255.0

Stats = dict[str, np.ndarray]


def feature_stats(values: np.ndarray) -> Stats:
    """Statistics over frames of a (T, K) or (T,) float array; each stat has shape (K,) or (1,)."""
    values = values.reshape(len(values), -1).astype(np.float64)
    stats = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([len(values)], dtype=np.float64),
    }
    for key, q in zip(QUANTILE_KEYS, np.quantile(values, QUANTILES, axis=0), strict=True):
        stats[key] = q
    return stats


def image_stats(frames: np.ndarray) -> Stats:
    """Per-channel statistics of all (T, H, W, 3) uint8 frames, scaled to [0, 1]; each stat has
    shape (3,) (stats.json reshapes it to LeRobot's (3, 1, 1)). Exact and fast through a 256-bin
    histogram per channel; quantiles are the inverted CDF (the smallest level reaching q)."""
    if min(frames.shape[1:3]) >= STAT_SUBSAMPLE_FROM_PX:
        frames = frames[:, ::2, ::2]
    levels = np.arange(PIXEL_LEVELS, dtype=np.float64) / PIXEL_SCALE
    hist = np.stack([np.bincount(frames[..., c].ravel(), minlength=PIXEL_LEVELS) for c in range(3)])  # (3, 256)
    n = hist.sum(axis=1, keepdims=True)  # (3, 1)
    mean = (hist * levels).sum(axis=1) / n[:, 0]
    cdf = np.cumsum(hist, axis=1) / n  # (3, 256)
    present = hist > 0
    stats = {
        "min": levels[present.argmax(axis=1)],
        "max": levels[PIXEL_LEVELS - 1 - present[:, ::-1].argmax(axis=1)],
        "mean": mean,
        "std": np.sqrt((hist * (levels - mean[:, None]) ** 2).sum(axis=1) / n[:, 0]),
        "count": np.array([len(frames)], dtype=np.float64),
    }
    for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
        stats[key] = levels[(cdf >= q).argmax(axis=1)]
    return stats


def pool(stats_list: list[Stats]) -> Stats:
    """Pool per-episode statistics: exact min/max/mean/std (parallel variance), count-weighted
    quantiles (an approximation, as LeRobot's aggregate_stats does)."""
    counts = np.array([s["count"][0] for s in stats_list])  # (E,)
    total = counts.sum()
    w = counts[:, None] / total  # (E, 1)
    means = np.stack([s["mean"] for s in stats_list])  # (E, K)
    mean = (w * means).sum(axis=0)
    var = (w * (np.stack([s["std"] for s in stats_list]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    pooled = {
        "min": np.min([s["min"] for s in stats_list], axis=0),
        "max": np.max([s["max"] for s in stats_list], axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([total]),
    }
    for key in QUANTILE_KEYS:
        pooled[key] = (w * np.stack([s[key] for s in stats_list])).sum(axis=0)
    return pooled
