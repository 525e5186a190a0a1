"""Actions as tokens (the OpenVLA / SimpleVLA-RL recipe): each action dimension is normalised by
per-dimension bounds taken from the demonstrations and cut into uniform bins; a bin index is later
mapped to one of the last `N_BINS` token ids of the model's vocabulary (see `VLAPolicy`).

Only bins live here (no vocabulary), so the same tokenizer serves any model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# OpenVLA (Kim et al. 2024, sec. 3.2) and SimpleVLA-RL discretise every dimension into 256 bins.
N_BINS = 256
# OpenVLA takes the 1st and 99th percentiles of the demonstrations as bounds, so that a few
# outliers do not stretch the bins.
LOWER_PERCENTILE = 1.0
UPPER_PERCENTILE = 99.0
# A dimension whose bounds are closer than this (robot units) is constant in the demonstrations:
# every value maps to DEGENERATE_BIN and decodes to the constant, with no division by the width.
DEGENERATE_WIDTH = 1e-8
DEGENERATE_BIN = N_BINS // 2


@dataclass(frozen=True)
class ActionTokenizer:
    """Per-dimension bounds `low`/`high` (A,) in robot units and the bin count."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    n_bins: int = N_BINS

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not self.low:
            raise ValueError(f"low and high need the same non-zero length, got {len(self.low)} and "
                             f"{len(self.high)}; build them with ActionTokenizer.fit(actions)")
        lo, hi = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError(f"bounds must be finite, got low={self.low} high={self.high}")
        if (hi < lo).any():
            bad = np.flatnonzero(hi < lo).tolist()
            raise ValueError(f"high < low in action dimensions {bad}; swap the bounds")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")

    @property
    def action_dim(self) -> int:
        return len(self.low)

    @property
    def bin_width(self) -> np.ndarray:
        """(A,) width of one bin in robot units (0 for a constant dimension)."""
        return (np.asarray(self.high) - np.asarray(self.low)) / self.n_bins

    @classmethod
    def fit(cls, actions: np.ndarray, *, lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE,
            n_bins: int = N_BINS) -> ActionTokenizer:
        """Bounds from the `lower`/`upper` percentiles of demonstration actions (N, A)."""
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ValueError(f"actions must be (N, A) with N > 0, got shape {actions.shape}")
        _check_finite(actions)
        low, high = np.percentile(actions, [lower, upper], axis=0)
        return cls(tuple(map(float, low)), tuple(map(float, high)), n_bins)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Actions (..., A) in robot units -> bins (..., A) int64 in [0, n_bins). Values outside the
        bounds clip to the end bins; NaN or inf raise ValueError."""
        position = self.bin_position(actions)
        return np.minimum(np.floor(position), self.n_bins - 1).astype(np.int64)

    def bin_position(self, actions: np.ndarray) -> np.ndarray:
        """Actions (..., A) -> where they fall on the bin axis (..., A) float64 in [0, n_bins]: bin b
        spans [b, b + 1). What a distributional (HL-Gauss) label is centred on, finer than the bin."""
        actions = np.asarray(actions, np.float64)
        self._check_dim(actions)
        _check_finite(actions)
        low, width = np.asarray(self.low), np.asarray(self.high) - np.asarray(self.low)
        live = width > DEGENERATE_WIDTH
        unit = np.clip((actions - low) / np.where(live, width, 1.0), 0.0, 1.0)
        return np.where(live, unit * self.n_bins, DEGENERATE_BIN + 0.5)

    def decode(self, bins: np.ndarray) -> np.ndarray:
        """Bins (..., A) -> actions (..., A) float32 at the bin centres (the constant for a
        degenerate dimension)."""
        bins = np.asarray(bins)
        self._check_dim(bins)
        if bins.size and (bins.min() < 0 or bins.max() >= self.n_bins):
            raise ValueError(f"bins must lie in [0, {self.n_bins}), got range [{bins.min()}, {bins.max()}]")
        low, width = np.asarray(self.low), np.asarray(self.high) - np.asarray(self.low)
        return (low + (bins + 0.5) / self.n_bins * width).astype(np.float32)

    def to_json(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "n_bins": self.n_bins}

    @classmethod
    def from_json(cls, data: dict) -> ActionTokenizer:
        return cls(tuple(data["low"]), tuple(data["high"]), int(data.get("n_bins", N_BINS)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ActionTokenizer:
        return cls.from_json(json.loads(Path(path).read_text()))

    def _check_dim(self, array: np.ndarray) -> None:
        if array.ndim == 0 or array.shape[-1] != self.action_dim:
            raise ValueError(f"expected a last dimension of {self.action_dim} (action dim), "
                             f"got shape {array.shape}")


def _check_finite(actions: np.ndarray) -> None:
    if not np.isfinite(actions).all():
        dims = sorted(set(np.argwhere(~np.isfinite(actions))[:, -1].tolist()))
        raise ValueError(f"actions contain NaN or inf in dimensions {dims}; clean the demonstrations "
                         "or the policy output before tokenizing")
