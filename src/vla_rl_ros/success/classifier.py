"""The classifier backend: a small CNN says from one camera image whether the task is done.

Trained by `vla-rl train-classifier` (success/train.py) from labelled frames of recorded episodes;
stored as a directory with `model.safetensors` (weights, no pickle) and `classifier.json` (the
architecture, the preprocessing, the decision threshold, the labelling rule and the held-out
precision/recall it reached). `load_classifier` refuses a missing or corrupt file with a
ClassifierError naming it. The success detector's HoldFilter then asks for success on k consecutive
frames (`hold_steps`, stored with the model), so one optimistic frame is not a success.

Shapes: B images, H x W pixels (the stored image_size), C channels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = "model.safetensors"
CONFIG = "classifier.json"
FORMAT = "vla_rl_ros.success_classifier/1"


class ClassifierError(ValueError):
    """A classifier directory that cannot be used (missing, corrupt, or not a classifier)."""


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild the model and use it as it was trained."""

    camera: str = field(default="front", metadata={"help": "dataset camera it was trained on"})
    # 32 px: the scene's large features survive and a training step costs a quarter of 64 px on a CPU.
    image_size: int = field(default=32, metadata={"help": "images are resized to image_size x image_size (px)"})
    channels: tuple[int, ...] = field(default=(16, 32, 32), metadata={
        "help": "output channels of the stride-2 3x3 conv layers"})
    threshold: float = field(default=0.5, metadata={"help": "probability at or above which a frame is a success"})
    hold_steps: int = field(default=3, metadata={"help": "consecutive success frames for a success (HoldFilter)"})
    positive_tail: int = field(default=2, metadata={"help": "last frames of a successful episode labelled "
                                                            "positive"})
    negative_head: float = field(default=0.5, metadata={"help": "leading fraction of a successful episode's "
                                                                "frames labelled negative"})
    trained_on: dict = field(default_factory=dict, metadata={"help": "datasets, episodes and split"})
    heldout: dict = field(default_factory=dict, metadata={"help": "held-out precision/recall"})

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not 8 <= self.image_size <= 512 or not self.channels or min(self.channels) < 1:
            raise ValueError(f"image_size={self.image_size} (8-512 px) and channels={self.channels} (positive)")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold={self.threshold} must be in (0, 1) (try 0.5)")
        if self.hold_steps < 1 or self.positive_tail < 1 or not 0.0 <= self.negative_head < 1.0:
            raise ValueError(f"hold_steps={self.hold_steps} and positive_tail={self.positive_tail} must be at "
                             f"least 1, negative_head={self.negative_head} in [0, 1)")


class SuccessNet(nn.Module):
    """Stride-2 3x3 convolutions with ReLU, then one linear layer over the whole feature map.

    No global pooling: where things are (an object above the table, the drawer's front) is what
    success is about, and pooling would throw the position away."""

    def __init__(self, channels: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 3, image_size
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in, side = c_out, (side + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] -> (B,) logits."""
        return self.head(self.features(x).flatten(1)).squeeze(-1)  # (B, C, S', S') -> (B, C*S'*S') -> (B,)


def preprocess(images: np.ndarray, image_size: int) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8 RGB -> (B, 3, S, S) float in [0, 1]."""
    images = images[None] if images.ndim == 3 else images
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (B, H, W, 3) uint8 RGB, got {images.shape} {images.dtype}")
    if images.shape[1:3] != (image_size, image_size):
        images = np.stack([cv2.resize(i, (image_size, image_size), interpolation=cv2.INTER_AREA) for i in images])
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def save_classifier(directory: str | Path, model: SuccessNet, config: ClassifierConfig) -> Path:
    """Write the weights (safetensors) and the config (JSON) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, directory / WEIGHTS,
              metadata={"format": FORMAT})
    (directory / CONFIG).write_text(json.dumps({"format": FORMAT, **dataclasses.asdict(config)}, indent=2) + "\n")
    return directory


def load_classifier(directory: str | Path) -> tuple[SuccessNet, ClassifierConfig]:
    """The model (eval mode) and its config; ClassifierError naming the file if anything is wrong."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ClassifierError(f"no {path.name} in {directory} (train one with `vla-rl train-classifier`)")
    try:
        data = json.loads(config_path.read_text())
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"not a success classifier config (format {FORMAT!r} expected)")
        config = ClassifierConfig(**data)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ClassifierError(f"{config_path} is corrupt: {exc}") from exc
    try:
        weights = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ClassifierError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    model = SuccessNet(config.channels, config.image_size)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:  # missing/unexpected keys, shape mismatch
        raise ClassifierError(f"{weights_path} does not match the architecture in {config_path}: {exc}") from exc
    return model.eval(), config


class SuccessClassifier:
    """The success detector backend: one camera image -> (frame looks like success, probability)."""

    source = "classifier"
    observes = "image"
    options = ("model", "threshold")

    def __init__(self, model: str, threshold: float = 0.0) -> None:
        if not model:
            raise ClassifierError("type classifier needs the model parameter: a directory written by "
                                  "`vla-rl train-classifier`")
        self.net, self.config = load_classifier(model)
        self.threshold = threshold or self.config.threshold  # 0: the threshold stored with the model
        torch.set_num_threads(1)  # one image per step; leave the cores to the policy
        # The first forward pass pays torch's one-off set-up: here, not on the first episode's first frames
        # (a lockstep sim does not wait for the detector, and frames that queue up meanwhile are dropped).
        self.probability(np.zeros((1, self.config.image_size, self.config.image_size, 3), np.uint8))

    def hold_steps(self, task: str) -> int:
        """Consecutive success frames required: the model's own (set when it was trained)."""
        return self.config.hold_steps

    @torch.no_grad()
    def probability(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B,) success probabilities."""
        return torch.sigmoid(self.net(preprocess(images, self.config.image_size))).numpy()

    def judge(self, task: str, image: np.ndarray) -> tuple[bool, float]:
        p = float(self.probability(image)[0])
        return p >= self.threshold, p
