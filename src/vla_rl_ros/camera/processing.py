"""What happens to a frame between the source and the topic: crop, resize, encoding; and the
camera calibration (camera_calibration_parsers' YAML) adjusted to the published image."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from vla_rl_ros.camera.base import CameraError

ENCODINGS = ("rgb8", "bgr8", "mono8")
_CONVERSIONS = {  # (source is mono, encoding) -> cv2 colour conversion; None: as is
    (False, "rgb8"): cv2.COLOR_BGR2RGB, (False, "bgr8"): None, (False, "mono8"): cv2.COLOR_BGR2GRAY,
    (True, "rgb8"): cv2.COLOR_GRAY2RGB, (True, "bgr8"): cv2.COLOR_GRAY2BGR, (True, "mono8"): None,
}


class FrameError(CameraError):
    """A frame the processor cannot turn into the configured image (e.g. smaller than the crop)."""


@dataclass(frozen=True)
class FrameProcessor:
    """crop (x, y, w, h; w = 0: none) of the captured frame, then resize to (w, h) (0: keep), then encoding."""

    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    resize: tuple[int, int] = (0, 0)
    encoding: str = "rgb8"

    def __post_init__(self) -> None:
        if len(self.crop) != 4 or min(self.crop) < 0 or (self.crop[2] == 0) != (self.crop[3] == 0):
            raise ValueError(f"crop={list(self.crop)} must be [x, y, width, height] >= 0, width and height both 0 "
                             "(no crop) or both positive")
        if len(self.resize) != 2 or min(self.resize) < 0 or (self.resize[0] == 0) != (self.resize[1] == 0):
            raise ValueError(f"resize={list(self.resize)} must be [width, height], both 0 (keep) or both positive")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r} is not one of {list(ENCODINGS)}")

    def window(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The crop window (x, y, w, h) in a width x height frame; FrameError if it does not fit."""
        x, y, w, h = self.crop
        if w == 0:
            return 0, 0, width, height
        if x + w > width or y + h > height:
            raise FrameError(f"crop {list(self.crop)} does not fit the {width}x{height} frame")
        return x, y, w, h

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the published image for a captured width x height frame."""
        _, _, w, h = self.window(width, height)
        return self.resize if self.resize[0] else (w, h)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR or (H, W) mono uint8 -> the published (h, w, 3) or (h, w) uint8 image."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) \
                or image.size == 0:
            raise FrameError(f"frame of shape {image.shape} and dtype {image.dtype} is not 8-bit BGR or mono")
        height, width = image.shape[:2]
        x, y, w, h = self.window(width, height)
        out = image[y:y + h, x:x + w]
        size = self.output_size(width, height)
        if size != (w, h):
            # INTER_AREA averages the pixels a smaller image covers (no aliasing); it interpolates when enlarging.
            out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
        conversion = _CONVERSIONS[(out.ndim == 2, self.encoding)]
        return np.ascontiguousarray(out if conversion is None else cv2.cvtColor(out, conversion))


@dataclass(frozen=True)
class Calibration:
    """A camera's intrinsics as camera_calibration_parsers writes them (the CameraInfo fields)."""

    width: int
    height: int
    camera_name: str
    distortion_model: str
    k: tuple[float, ...]  # (9,) row-major 3x3 camera matrix
    d: tuple[float, ...]  # distortion coefficients
    r: tuple[float, ...]  # (9,) rectification matrix
    p: tuple[float, ...]  # (12,) row-major 3x4 projection matrix

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration YAML; ValueError naming the file and the field for anything malformed."""
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read camera calibration {path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"camera calibration {path} is not a YAML mapping")

        def matrix(key: str, rows: int | None, cols: int | None) -> tuple[float, ...]:
            entry = doc.get(key)
            if not isinstance(entry, dict) or "data" not in entry:
                raise ValueError(f"camera calibration {path}: `{key}` needs rows, cols and data")
            data = tuple(float(v) for v in entry["data"])
            r, c = int(entry.get("rows", 0)), int(entry.get("cols", 0))
            if (rows is not None and (r, c) != (rows, cols)) or len(data) != r * c or not np.all(np.isfinite(data)):
                raise ValueError(f"camera calibration {path}: `{key}` is {r}x{c} with {len(data)} finite values; "
                                 f"expected {rows or 'n'}x{cols or 'm'}")
            return data

        try:
            width, height = int(doc["image_width"]), int(doc["image_height"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"camera calibration {path}: image_width and image_height are required") from None
        if width <= 0 or height <= 0:
            raise ValueError(f"camera calibration {path}: image size {width}x{height}")
        return cls(width=width, height=height, camera_name=str(doc.get("camera_name", "")),
                   distortion_model=str(doc.get("distortion_model", "plumb_bob")),
                   k=matrix("camera_matrix", 3, 3), d=matrix("distortion_coefficients", None, None),
                   r=matrix("rectification_matrix", 3, 3), p=matrix("projection_matrix", 3, 4))

    def for_output(self, processor: FrameProcessor) -> Calibration:
        """The intrinsics of the published image: the crop shifts the principal point, the resize scales
        focal lengths and principal point (distortion and rectification are unchanged)."""
        x, y, w, h = processor.window(self.width, self.height)
        out_w, out_h = processor.output_size(self.width, self.height)
        sx, sy = out_w / w, out_h / h
        k = list(self.k)
        k[0], k[2], k[4], k[5] = k[0] * sx, (k[2] - x) * sx, k[4] * sy, (k[5] - y) * sy
        p = list(self.p)
        p[0], p[2], p[3] = p[0] * sx, (p[2] - x) * sx, p[3] * sx
        p[5], p[6], p[7] = p[5] * sy, (p[6] - y) * sy, p[7] * sy
        return replace(self, width=out_w, height=out_h, k=tuple(k), p=tuple(p))
