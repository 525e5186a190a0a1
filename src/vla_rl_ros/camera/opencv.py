"""OpenCV sources: a camera by device index or path (V4L2 on Linux), a video file, a folder of images."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from vla_rl_ros.camera.base import CameraConfig, CameraDisconnectedError, CameraError, EndOfStreamError, GrabberSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class Pacer:
    """Releases one frame every 1/fps s of wall time (replays run in real time, not as fast as decoding)."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.due = time.monotonic()

    def wait(self, stop_wait) -> None:  # stop_wait: threading.Event.wait, so close() interrupts a replay
        delay = self.due - time.monotonic()
        if delay > 0:
            stop_wait(delay)
        # A late frame does not make the next ones come faster (no burst after a stall).
        self.due = max(self.due + self.period, time.monotonic())


class OpenCVCamera(GrabberSource):
    """`cv2.VideoCapture` of a device index ("0"), a device path ("/dev/video0") or a video file.

    A device is asked for width/height/fps (it may deliver something else: the frames say what it
    did) and paced by itself. A file is replayed at `fps` (0: its own rate) and gone the moment the
    file is deleted, as a camera is when unplugged (an open handle could otherwise read on).
    """

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        source = config.source
        self.index = int(source) if source.isdigit() else None
        self.is_file = self.index is None and not source.startswith("/dev/")
        self.capture: cv2.VideoCapture | None = None
        self.pacer: Pacer | None = None

    def _open(self) -> None:
        cfg = self.config
        if self.is_file and not Path(cfg.source).is_file():
            raise CameraDisconnectedError(f"no video file at {cfg.source}")
        capture = cv2.VideoCapture(self.index if self.index is not None else cfg.source)
        if not capture.isOpened():
            capture.release()
            raise CameraDisconnectedError(f"OpenCV cannot open {cfg.source}")
        if self.is_file:
            fps = cfg.fps or capture.get(cv2.CAP_PROP_FPS)
            if not fps or fps <= 0:
                capture.release()
                raise CameraError(f"{cfg.source} has no frame rate of its own; set fps")
            self.pacer = Pacer(fps)
        else:
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, cfg.width), (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height),
                                (cv2.CAP_PROP_FPS, cfg.fps)):
                if value:
                    capture.set(prop, value)
        self.capture = capture

    def _grab(self) -> np.ndarray:
        assert self.capture is not None
        if self.is_file:
            assert self.pacer is not None
            self.pacer.wait(self._stop.wait)
            if not Path(self.config.source).is_file():
                raise CameraDisconnectedError(f"video file {self.config.source} was removed")
        ok, image = self.capture.read()
        if not ok and self.is_file:
            if not self.config.loop:
                raise EndOfStreamError(f"end of {self.config.source}")
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self.capture.read()
        if not ok or image is None:
            raise CameraDisconnectedError(f"{self.config.source} stopped delivering frames")
        return image

    def _release(self) -> None:
        capture, self.capture = self.capture, None
        if capture is not None:
            capture.release()


class ImageFolderCamera(GrabberSource):
    """The image files of a folder, in name order, replayed at `fps` (which must be set).

    The folder is listed at connect; a file that does not decode is skipped (a gap in Frame.index),
    and the folder disappearing is the camera disappearing.
    """

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        if config.fps <= 0:
            raise ValueError(f"an image folder has no frame rate of its own: set fps > 0 (got {config.fps})")
        self.folder = Path(config.source)
        self.files: list[Path] = []
        self.next = 0
        self.pacer: Pacer | None = None

    def _open(self) -> None:
        if not self.folder.is_dir():
            raise CameraDisconnectedError(f"no image folder at {self.folder}")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CameraDisconnectedError(f"{self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.next = 0
        self.pacer = Pacer(self.config.fps)

    def _grab(self) -> np.ndarray:
        assert self.pacer is not None
        self.pacer.wait(self._stop.wait)
        for _ in range(len(self.files) + 1):
            if not self.folder.is_dir():
                raise CameraDisconnectedError(f"image folder {self.folder} was removed")
            if self.next == len(self.files):
                if not self.config.loop:
                    raise EndOfStreamError(f"end of {self.folder}")
                self.next = 0
            path = self.files[self.next]
            self.next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image
            self.unreadable += 1  # unreadable or deleted file: skip it, the folder goes on
        raise CameraDisconnectedError(f"no image of {self.folder} decodes any more")

    def _release(self) -> None:
        self.files = []
