"""One camera kept streaming (no ROS): reconnects after the source goes away, processes each frame,
and counts what was lost, so the node only publishes and reports."""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vla_rl_ros.camera.base import CameraError, CameraSource, EndOfStreamError, Frame
from vla_rl_ros.camera.processing import FrameError, FrameProcessor

# A gap between frames longer than this many typical frame periods counts the frames it must have held
# as dropped (a real camera's period jitters by far less; a stall of the reader or the bus shows). Typical
# is what the device delivers (the median of its recent periods), not what was asked of it: a camera
# that runs at 15 fps when asked for 30 (many USB cameras, in low light) drops nothing.
LATE_FACTOR = 1.8
RATE_WINDOW = 15  # recent frame periods the measured rate is the median of (robust to an occasional gap)
RATE_MIN_PERIODS = 5  # a connection's first periods set the pace: none of them is judged late
RATE_TOLERANCE = 0.1  # a measured rate further than this fraction from the configured one is reported once


@dataclass(frozen=True)
class Event:
    """Something the node should log: kind is connected, lost, retry_failed, ended or rate (the device
    delivers another frame rate than configured; once a connection)."""

    kind: str
    message: str


class CameraStream:
    """Drives a CameraSource from one thread: `step(wait)` returns the next processed image or None.

    `make_source` builds a fresh source for every (re)connection. `wait(seconds)` sleeps between
    reconnection attempts and returns True when the caller is stopping (threading.Event.wait), so
    shutdown never waits for a retry. Events (connected, lost, retry_failed, ended, rate) go to `on_event`.
    A lost source whose read is still blocked in the driver keeps the device: no new one is opened until
    it has released it (each attempt meanwhile is a failed one, so the node reports and retries).
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
        self.fps = fps  # configured rate (Hz); 0: the device's own
        self.period_s = 0.0  # measured frame period (s): median of the recent ones; 0 until two frames came
        self.size: tuple[int, int] = (0, 0)  # captured (width, height)
        self._last: Frame | None = None
        self._unreadable = 0
        self._periods: deque[float] = deque(maxlen=RATE_WINDOW)  # this connection's recent frame periods (s)
        self._rate_reported = False  # this connection's rate mismatch was reported
        self._releasing: CameraSource | None = None  # a lost source still blocked in a read, holding the device

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
        if self._releasing is not None and not self._releasing.released:
            self.failures_in_row += 1
            self.last_error = (f"{self._releasing.description} is still blocked in a read and holds the device; "
                               "reopening once that read returns (replug the camera if it never does)")
            self.on_event(Event("retry_failed", self.last_error))
            return False
        self._releasing = None
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
        self._periods.clear()
        self._rate_reported = False
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
        produced = max(1, frame.index - last.index)
        self.dropped["overwritten"] += produced - 1
        interval = frame.captured_at - last.captured_at
        if len(self._periods) >= RATE_MIN_PERIODS and self.period_s > 0 \
                and interval / produced > LATE_FACTOR * self.period_s:
            # Frames a stall of the device or the bus swallowed: the gap held more periods than frames.
            self.dropped["late"] += max(0, round(interval / self.period_s) - produced)
        # Every period counts, a gap's too: the median ignores an occasional one and follows a lasting change.
        self._periods.append(interval / produced)
        self.period_s = statistics.median(self._periods)
        mismatch = self.rate_mismatch
        if mismatch and not self._rate_reported:
            self._rate_reported = True
            self.on_event(Event("rate", mismatch))

    @property
    def rate_mismatch(self) -> str:
        """How the measured rate differs from the configured one ("" when it does not, or is not known yet)."""
        if self.fps <= 0 or self.period_s <= 0 or len(self._periods) < RATE_WINDOW:
            return ""
        measured = 1 / self.period_s
        if abs(measured - self.fps) <= RATE_TOLERANCE * self.fps:
            return ""
        source = self.source  # read by the node's diagnostics too, while a reconnect may clear it
        return f"{source.description if source else 'the camera'} delivers {measured:.1f} fps, configured {self.fps:g}"

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
            "configured_fps": f"{self.fps:g}",
            "capture_size": f"{self.size[0]}x{self.size[1]}",
            "last_error": self.last_error,
        }

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.close()
            if not source.released:
                self._releasing = source
