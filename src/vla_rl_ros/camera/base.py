"""The camera interface every source implements (no ROS): open, read frames with a timeout, close.

Small on purpose, like LeRobot's cameras: a robot's camera, a video file replayed at a fixed rate
and a folder of images all look the same to the node that publishes them, so the real-arm path
can be exercised on a machine without a camera.
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np


class CameraError(RuntimeError):
    """Base of every camera failure; also raised for misuse (reading before `connect`)."""


class CameraDisconnectedError(CameraError):
    """The device, file or folder cannot be opened or has gone away (unplugged, deleted); reconnect later."""


class CameraTimeoutError(CameraError):
    """No frame arrived within the read's timeout although the source is still open."""


class EndOfStreamError(CameraError):
    """A replayed file or folder has no more frames (and `loop` is off)."""


@dataclass(frozen=True)
class Frame:
    """One captured frame as the source delivered it (BGR or mono, OpenCV's convention)."""

    image: np.ndarray  # (H, W, 3) uint8 BGR, or (H, W) uint8 mono
    index: int  # 0-based count of frames the source has produced since connect (gaps are dropped frames)
    captured_at: float  # time.monotonic() when the source produced it


@dataclass(frozen=True)
class CameraConfig:
    """What a source needs; the node's parameters map onto it one to one."""

    source: str = field(default="0", metadata={
        "help": "device index (0), device path (/dev/video0), video file, or image folder"})
    width: int = field(default=0, metadata={"help": "capture width requested from a device (px); 0: its default"})
    height: int = field(default=0, metadata={"help": "capture height requested from a device (px); 0: its default"})
    fps: float = field(default=30.0, metadata={
        "help": "frame rate requested from a device and the replay rate of a file or folder (Hz); "
                "0: a video file's own rate, a device's default"})
    loop: bool = field(default=False, metadata={"help": "replay a file or folder from its start when it ends"})

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("camera source is empty: give a device index, a device path, a video file or a folder")
        if self.width < 0 or self.height < 0 or self.fps < 0:
            raise ValueError(f"width={self.width}, height={self.height}, fps={self.fps} must be >= 0")


class CameraSource(ABC):
    """A camera: `connect()`, then `read(timeout_s)` frame by frame, then `close()` (or `with source:`).

    Blocking: `read` waits for the next frame the source has not returned yet, at most `timeout_s`
    seconds, and never returns the same frame twice. A device delivers at its own rate; a file or
    folder delivers at the configured `fps` (replayed in real time), so consumers see the same pace.
    Frames produced while nobody reads are overwritten by newer ones (the gap shows in `Frame.index`).

    Raises: `connect` raises CameraDisconnectedError when the source cannot be opened. `read` raises
    CameraTimeoutError when no new frame came in time, CameraDisconnectedError when the source went away (the
    source is then closed: connect again to recover), EndOfStreamError at the end of a replay without
    loop, and CameraError when called before `connect`. `close` never raises and may be called twice.

    `released` is False while a closed source still holds its device (a read blocked in the driver that
    has not returned yet); opening the same device again before then could fail or race with it.
    """

    def __init__(self, config: CameraConfig) -> None:
        self.config = config

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def read(self, timeout_s: float) -> Frame: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    def description(self) -> str:
        return f"{type(self).__name__}({self.config.source})"

    @property
    def released(self) -> bool:
        """Whether the device is free once `close` returned; a source whose `close` releases at once says True."""
        return True

    def __enter__(self) -> CameraSource:
        self.connect()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class GrabberSource(CameraSource):
    """A source whose frames come from a background thread calling `_grab()` (blocking, paced).

    Reading through a one-frame slot gives `read` its timeout even when the underlying call (a V4L2
    read, a decode) blocks for longer, and keeps the newest frame rather than a growing backlog.
    Subclasses implement `_open()`, `_grab()` (returns an image or raises a CameraError) and `_release()`.

    The capture thread owns the handle: it alone calls `_grab()` and, when it returns, `_release()`, so a
    handle is never released under a read still blocked in the driver (OpenCV's read and release running
    at once on one handle can crash the process). `close` asks the thread to stop and waits a little; a
    thread stuck in the driver releases whenever its read returns (`released` says when), and until
    then `connect` refuses to open the device again.
    """

    CLOSE_WAIT_S = 1.0  # how long `close` waits for the capture thread (a healthy grab returns within a period)

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._error: CameraError | None = None
        self._returned = -1  # index of the last frame `read` returned
        self.unreadable = 0  # frames the source skipped because they did not decode
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # the open connection's capture thread; None once closed
        self._worker: threading.Thread | None = None  # the latest capture thread, closed or not, until it returns

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _grab(self) -> np.ndarray: ...

    @abstractmethod
    def _release(self) -> None: ...

    @property
    def released(self) -> bool:
        return self._worker is None or not self._worker.is_alive()

    def connect(self) -> None:
        self.close()
        if not self.released:  # its handle is still in use: opening another could race with its release
            raise CameraDisconnectedError(f"{self.description}: the previous capture is still blocked in a read; "
                                          "reopening once it returns")
        self._open()
        self._frame, self._error, self._returned = None, None, -1
        self._stop = threading.Event()
        self._thread = self._worker = threading.Thread(target=self._run, args=(self._stop,),
                                                       name=f"camera {self.config.source}", daemon=True)
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        try:
            self._capture(stop)
        finally:
            with contextlib.suppress(Exception):  # closing must not fail; the handle is dropped either way
                self._release()

    def _capture(self, stop: threading.Event) -> None:
        index = 0
        while not stop.is_set():
            try:
                image = self._grab()
            except CameraError as exc:
                error: CameraError | None = exc
            except Exception as exc:  # a decoder's own error: the source is unusable, reconnect
                error = CameraDisconnectedError(f"{self.description}: {exc}")
            else:
                error = None
            with self._cond:
                if error is not None:
                    self._error = error
                    self._cond.notify_all()
                    return
                self._frame = Frame(image, index, time.monotonic())
                self._cond.notify_all()
            index += 1

    def read(self, timeout_s: float) -> Frame:
        if self._thread is None:
            raise CameraError(f"{self.description}: read before connect")
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame is None or self._frame.index <= self._returned:
                if self._error is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CameraTimeoutError(f"{self.description}: no frame within {timeout_s:g} s")
                self._cond.wait(left)
            else:
                self._returned = self._frame.index
                return self._frame
            error = self._error
        self.close()
        raise error

    def close(self) -> None:
        """Stops the capture thread, which releases the handle; a thread stuck in a read does so when it returns."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.CLOSE_WAIT_S)
