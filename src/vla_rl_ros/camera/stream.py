"""One camera kept streaming (no ROS): reconnects after the source goes away, processes each frame,
and counts what was lost, so the node only publishes and reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vla_rl_ros.camera.base import CameraError, CameraSource, EndOfStreamError, Frame
from vla_rl_ros.camera.processing import FrameError, FrameProcessor

# A gap between frames longer than this many typical frame periods counts the frames it must have held
# as dropped (a real camera's period jitters by far less; a stall of the reader or the bus shows).
LATE_FACTOR = 1.8
RATE_SMOOTHING = 0.1  # weight of the newest interval in the measured frame rate (exponential average)


@dataclass(frozen=True)
class Event:
    """Something the node should log: kind is connected, lost, retry_failed or ended."""

    kind: str
    message: str


class CameraStream:
    """Drives a CameraSource from one thread: `step(wait)` returns the next processed image or None.

    `make_source` builds a fresh source for every (re)connection. `wait(seconds)` sleeps between
    reconnection attempts and returns True when the caller is stopping (threading.Event.wait), so
    shutdown never waits for a retry. Events (connected, lost, retry_failed, ended) go to `on_event`.
    """

    def __init__(self, make_source: Callable[[], CameraSource], processor: FrameProcessor, *,
                 read_timeout_s: float, reconnect_period_s: float, fps: float,
                 on_event: Callable[[Event], None]) -> None:
        self.make_source = make_source
        self.processor = processor
        self.read_timeout_s = read_timeout_s
        self.reconnect_period_s = reconnect_period_s
        self.on_event = on_event
        self.source: CameraSource | None = None
        self.ended = False
        self.frames = 0  # images produced
        self.dropped: Counter[str] = Counter()  # cause -> frames lost
        self.connect_attempts = 0
        self.reconnects = 0  # successful connections after a loss
        self.failures_in_row = 0
        self.last_error = ""
        self.period_s = 1.0 / fps if fps > 0 else 0.0  # measured frame period (s), seeded by the configured rate
        self.size: tuple[int, int] = (0, 0)  # captured (width, height)
        self._last: Frame | None = None
        self._unreadable = 0

    @property
    def connected(self) -> bool:
        return self.source is not None

    @property
    def reconnect_attempts(self) -> int:
        """Connection attempts after the first one: each is a try to get a lost (or absent) camera back."""
        return max(0, self.connect_attempts - 1)

    def step(self, wait: Callable[[float], bool]) -> tuple[np.ndarray, Frame] | None:
        """The next (published image, source frame); None while the camera is away or has ended.
        FrameError for a frame that cannot be processed (counted as dropped; the stream goes on)."""
        if self.ended:
            wait(self.reconnect_period_s)
            return None
        if self.source is None and not self._connect(wait):
            return None
        assert self.source is not None
        try:
            frame = self.source.read(self.read_timeout_s)
        except EndOfStreamError as exc:
            self._close()
            self.ended, self.last_error = True, str(exc)
            self.on_event(Event("ended", str(exc)))
            return None
        except CameraError as exc:
            self._close()
            self.last_error = str(exc)
            self.on_event(Event("lost", str(exc)))
            return None
        self._count_gaps(frame)
        self.size = (frame.image.shape[1], frame.image.shape[0])
        try:
            image = self.processor(frame.image)
        except FrameError:
            self.dropped["bad_frame"] += 1
            raise
        self.frames += 1
        return image, frame

    def _connect(self, wait: Callable[[float], bool]) -> bool:
        if self.connect_attempts and wait(self.reconnect_period_s):
            return False
        self.connect_attempts += 1
        source = self.make_source()
        try:
            source.connect()
        except CameraError as exc:
            source.close()
            self.failures_in_row += 1
            self.last_error = str(exc)
            self.on_event(Event("retry_failed", str(exc)))
            return False
        if self.connect_attempts > 1:
            self.reconnects += 1
        self.source, self._last, self._unreadable, self.failures_in_row = source, None, 0, 0
        self.on_event(Event("connected", f"{source.description} open"))
        return True

    def _count_gaps(self, frame: Frame) -> None:
        assert self.source is not None
        unreadable = getattr(self.source, "unreadable", 0)
        self.dropped["unreadable"] += unreadable - self._unreadable
        self._unreadable = unreadable
        last, self._last = self._last, frame
        if last is None:
            return
        # Frames the source produced that nobody read in time (it keeps only the newest).
        self.dropped["overwritten"] += max(0, frame.index - last.index - 1)
        interval = frame.captured_at - last.captured_at
        if self.period_s > 0 and interval > LATE_FACTOR * self.period_s:
            self.dropped["late"] += max(0, round(interval / self.period_s) - 1)  # frames a stall swallowed
        else:
            self.period_s = interval if self.period_s == 0 else \
                (1 - RATE_SMOOTHING) * self.period_s + RATE_SMOOTHING * interval

    def status(self) -> dict[str, str]:
        """Key values for /diagnostics."""
        return {
            "connected": str(self.connected).lower(),
            "ended": str(self.ended).lower(),
            "frames": str(self.frames),
            "frames_dropped": str(sum(self.dropped.values())),
            **{f"dropped/{k}": str(v) for k, v in sorted(self.dropped.items()) if v},
            "reconnect_attempts": str(self.reconnect_attempts),
            "reconnects": str(self.reconnects),
            "measured_fps": f"{1 / self.period_s:.1f}" if self.period_s > 0 else "0",
            "capture_size": f"{self.size[0]}x{self.size[1]}",
            "last_error": self.last_error,
        }

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.close()
