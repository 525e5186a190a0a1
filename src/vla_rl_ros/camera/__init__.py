"""Cameras without ROS: sources chosen by a `type` key, frame processing, and a reconnecting stream.

`make_source(type, config)` builds a source from the registry below; `CameraSource` (base.py) states
the interface: blocking and timeout behaviour, and what is raised.
"""

from __future__ import annotations

from vla_rl_ros.camera.base import (
    CameraConfig,
    CameraDisconnectedError,
    CameraError,
    CameraSource,
    CameraTimeoutError,
    EndOfStreamError,
    Frame,
)
from vla_rl_ros.camera.opencv import ImageFolderCamera, OpenCVCamera
from vla_rl_ros.camera.processing import ENCODINGS, Calibration, FrameError, FrameProcessor
from vla_rl_ros.camera.stream import CameraStream, Event

# type -> source class. opencv: a device index, a device path or a video file; image_folder: images in name order.
SOURCES: dict[str, type[CameraSource]] = {"opencv": OpenCVCamera, "image_folder": ImageFolderCamera}


def make_source(kind: str, config: CameraConfig) -> CameraSource:
    """The source of type `kind`; ValueError naming the known types (or the config's problem) otherwise."""
    try:
        cls = SOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown camera type {kind!r}; known: {', '.join(SOURCES)}") from None
    return cls(config)


__all__ = [
    "ENCODINGS", "SOURCES", "Calibration", "CameraConfig", "CameraDisconnectedError", "CameraError", "CameraSource",
    "CameraStream", "CameraTimeoutError", "EndOfStreamError", "Event", "Frame", "FrameError", "FrameProcessor",
    "ImageFolderCamera", "OpenCVCamera", "make_source",
]
