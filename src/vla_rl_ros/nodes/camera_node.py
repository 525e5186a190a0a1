"""camera_node: one camera (a device, or a video file or image folder replayed) as the image topic the
policy node and the recorder read; the real arm's counterpart of the sim bridge's front camera.

ROS surface (names relative to the arm's namespace; remap camera/* for a second camera)
  publishes   camera/image_raw    sensor_msgs/Image (encoding)      sensor data QoS; stamped at capture (ROS
                                                                    time); with use_sim_time, the sim time when read
              camera/camera_info  sensor_msgs/CameraInfo            sensor data QoS, same header; only with
                                                                    calibration_file, adjusted to crop and resize
              /diagnostics        diagnostic_msgs/DiagnosticArray   reliable; frames, drops by cause, reconnect
                                                                    attempts, measured and configured rate; on
                                                                    every connect, loss or end, and every
                                                                    diagnostics_period_s (drops and losses are
                                                                    also logged; a device delivering another
                                                                    rate than fps is logged once a connection)
  parameters  see Params below (config/camera_node.yaml)

Frames are read by a thread of their own (blocking reads, `vla_rl_ros.camera.CameraStream`) and
published from it, so a slow device never delays the diagnostics timer. A camera that disappears
(unplugged, read failing, a replayed file or folder deleted) is closed and reopened every
reconnect_period_s until it is back; the node never exits for it. A device whose read is stuck in its
driver is reopened only once that read has returned and released it (each attempt until then fails,
is reported on /diagnostics and retried). Meanwhile no image is published,
which is what the executor's image watchdog (image_timeout_s) holds the arm on. A frame that cannot be
used (smaller than the crop, not 8-bit) is dropped with one log line per cause, counted, and the next
one is read.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from cv_bridge import CvBridge
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from vla_rl_ros.camera import (
    ENCODINGS,
    SOURCES,
    Calibration,
    CameraConfig,
    CameraStream,
    Event,
    Frame,
    FrameError,
    FrameProcessor,
    make_source,
)
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.names import CAMERA_INFO_TOPIC, CAMERA_TOPICS, DIAGNOSTICS_TOPIC
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import RELIABLE

RETRY_LOG_INTERVAL_S = 10.0  # while the camera stays away, a failed reconnection is logged at most this often
DROP_LOG_INTERVAL_S = 10.0  # frame drops are logged (with their count since the last line) at most this often
_SOURCE = {f.name: f for f in fields(CameraConfig)}


def source_param(name: str, **limits: Any) -> Any:
    """A parameter that is a CameraConfig field: same default and help, ROS range added here."""
    field = _SOURCE[name]
    return param(field.default, field.metadata["help"], **limits)


@dataclass
class Params:
    type: str = param("opencv", "camera source: opencv (a device index, a device path or a video file) or "
                      "image_folder (image files in name order)", choices=tuple(SOURCES))
    source: str = source_param("source")
    width: int = source_param("width", unit="px", low=0, high=16384)
    height: int = source_param("height", unit="px", low=0, high=16384)
    fps: float = source_param("fps", unit="Hz", low=0.0, high=1000.0)
    loop: bool = source_param("loop")
    encoding: str = param("rgb8", "published image encoding (the policy node reads rgb8 or bgr8)",
                          choices=ENCODINGS)
    crop: list[int] = param([0, 0, 0, 0], "crop [x, y, width, height] of the captured frame, before resizing; "
                            "[0, 0, 0, 0]: none", unit="px")
    resize: list[int] = param([0, 0], "published [width, height] after the crop; [0, 0]: the crop's size", unit="px")
    frame_id: str = param("camera", "header frame_id: the camera's optical frame")
    calibration_file: str = param("", "camera calibration YAML (camera_calibration_parsers format) of the captured "
                                  "frame; set: camera/camera_info is published")
    read_timeout_s: float = param(2.0, "a read waiting this long for a frame counts the camera as gone (reconnect)",
                                  unit="s", low=0.05, high=60.0)
    reconnect_period_s: float = param(1.0, "wait between attempts to reopen a camera that is gone", unit="s",
                                      low=0.05, high=60.0)
    diagnostics_period_s: float = param(1.0, "period of /diagnostics between connects and losses", unit="s",
                                        low=0.05, high=60.0)

    def __post_init__(self) -> None:
        self.processor = FrameProcessor(crop=tuple(self.crop), resize=tuple(self.resize), encoding=self.encoding)
        self.camera = CameraConfig(**{name: getattr(self, name) for name in _SOURCE})
        make_source(self.type, self.camera)  # a source's own rules (an image folder needs fps)


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_node")
        try:
            self.params = p = declare(self, Params)
        except InvalidParameterTypeException as exc:  # `-p source:=0` arrives as an integer
            raise ParameterError(f"{exc}; quote a device index to make it a string: -p source:=\"'0'\"") from exc
        self.calibration: Calibration | None = None
        if p.calibration_file:
            try:
                self.calibration = Calibration.load(p.calibration_file)
                self.calibration.for_output(p.processor)
            except (ValueError, FrameError) as exc:
                raise ParameterError(f"calibration_file: {exc}") from exc
        self.drops = DropLog(self.get_logger())
        self.bridge = CvBridge()
        self.image_pub = self.create_publisher(Image, CAMERA_TOPICS["front"], qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, qos_profile_sensor_data) \
            if self.calibration else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
        self.stream = CameraStream(lambda: make_source(p.type, p.camera), p.processor, read_timeout_s=p.read_timeout_s,
                                   reconnect_period_s=p.reconnect_period_s, fps=p.fps, on_event=self.on_event)
        self.info: CameraInfo | None = None  # for the current connection's capture size
        self.info_size: tuple[int, int] = (0, 0)
        self.reported_drops = 0  # frames dropped as of the last /diagnostics
        self.logged_drops = 0  # and as of the last log line about them
        self.last_drop_log = -DROP_LOG_INTERVAL_S
        self.last_retry_log = -RETRY_LOG_INTERVAL_S
        self.published = 0
        self.report_lock = threading.Lock()
        self.create_timer(p.diagnostics_period_s, self.report, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.capture, name="camera capture", daemon=True)
        self.thread.start()
        self.get_logger().info(f"camera {p.type} {p.source!r}: {p.encoding} on "
                               f"{self.resolve_topic_name(CAMERA_TOPICS['front'])}"
                               f"{' with camera_info' if self.calibration else ''}")

    # -- capture thread --------------------------------------------------------------------------
    def capture(self) -> None:
        while not self.stop.is_set():
            try:
                out = self.stream.step(self.stop.wait)
                if out is not None and not self.stop.is_set():
                    self.publish(*out)
            except FrameError as exc:
                self.drops.drop("unusable frame", str(exc))
            except Exception:
                if not self.context.ok():  # Ctrl-C shut the context down under a publish: stop quietly
                    return
                raise

    def publish(self, image: np.ndarray, frame: Frame) -> None:
        msg = self.bridge.cv2_to_imgmsg(image, encoding=self.params.encoding)
        clock = self.get_clock()
        stamp = clock.now()
        if not clock.ros_time_is_active:  # wall time: date the frame when it was captured, not published
            stamp -= Duration(nanoseconds=max(0, round((time.monotonic() - frame.captured_at) * 1e9)))
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = self.params.frame_id
        self.image_pub.publish(msg)
        self.published += 1
        info = self.camera_info()
        if info is not None:
            info.header = msg.header
            self.info_pub.publish(info)

    def camera_info(self) -> CameraInfo | None:
        """The calibration as CameraInfo for the published image, if it was made for this capture size."""
        if self.calibration is None:
            return None
        size = self.stream.size
        if size != self.info_size:
            self.info_size, self.info = size, None
            cal = self.calibration
            if size == (cal.width, cal.height):
                self.info = camera_info_msg(cal.for_output(self.params.processor))
        if self.info is None:
            self.drops.drop("calibration of another image size", f"calibration {self.calibration.width}x"
                            f"{self.calibration.height}, camera delivers {size[0]}x{size[1]}: no camera_info")
        return self.info

    def on_event(self, event: Event) -> None:
        log = self.get_logger()
        if event.kind == "connected":
            log.info(f"{event.message} (connection {self.stream.connect_attempts}, "
                     f"{self.stream.reconnect_attempts} reconnect attempts so far)")
        elif event.kind == "lost":
            log.warning(f"camera lost: {event.message}; reconnecting every {self.params.reconnect_period_s:g} s")
        elif event.kind == "retry_failed":
            now = time.monotonic()
            if now - self.last_retry_log >= RETRY_LOG_INTERVAL_S:
                self.last_retry_log = now
                log.warning(f"camera not available (attempt {self.stream.connect_attempts}): {event.message}")
        elif event.kind == "rate":  # once a connection: a slower device is no fault, its frames are not drops
            log.warning(f"{event.message}; measured_fps on /diagnostics follows the device")
        else:
            log.error(f"{event.message}: no more frames (set loop:=true to replay)")
        self.report()

    # -- diagnostics -----------------------------------------------------------------------------
    def report(self) -> None:
        with self.report_lock:  # called by the timer and by the capture thread's events
            self._report()

    def _report(self) -> None:
        stream = self.stream
        status = stream.status()
        dropped = sum(stream.dropped.values())
        if not stream.connected and not stream.ended:
            level, message = DiagnosticStatus.ERROR, f"no camera: {stream.last_error or 'connecting'}"
        elif stream.ended:
            level, message = DiagnosticStatus.WARN, f"replay ended: {stream.last_error}"
        elif dropped > self.reported_drops:
            level, message = DiagnosticStatus.WARN, f"streaming; {dropped - self.reported_drops} frames dropped"
        else:
            mismatch = stream.rate_mismatch
            level, message = DiagnosticStatus.OK, f"streaming; {mismatch}" if mismatch else "streaming"
        self.reported_drops = dropped
        now = time.monotonic()
        if dropped > self.logged_drops and now - self.last_drop_log >= DROP_LOG_INTERVAL_S:
            causes = ", ".join(f"{k} {v}" for k, v in sorted(stream.dropped.items()) if v)
            self.get_logger().warning(f"{dropped - self.logged_drops} frames dropped since the last report "
                                      f"(all so far: {causes})")
            self.logged_drops, self.last_drop_log = dropped, now
        values = {"type": self.params.type, "source": self.params.source, "published": str(self.published), **status}
        diag = DiagnosticStatus(level=level, name=self.get_fully_qualified_name(), message=message,
                                hardware_id=self.params.source,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[diag])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10.0)
        self.stream.close()
        # Not a ROS logger: after Ctrl-C the context is gone (as in node_main).
        print(f"[INFO] [{self.get_name()}]: capture thread joined after {self.published} frames", file=sys.stderr)


def camera_info_msg(cal: Calibration) -> CameraInfo:
    return CameraInfo(width=cal.width, height=cal.height, distortion_model=cal.distortion_model, d=list(cal.d),
                      k=list(cal.k), r=list(cal.r), p=list(cal.p))


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, args)
