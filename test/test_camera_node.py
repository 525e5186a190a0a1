"""camera_node as a real process: replayed video and image folder on camera/image_raw with CameraInfo,
a deleted replay file (an unplugged camera) reported on /diagnostics and recovered from, bad parameters."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from cv_bridge import CvBridge
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from rosgraph import RosGraph, wait_until
from sensor_msgs.msg import CameraInfo, Image
from test_camera import CALIBRATION, H, W, which, write_folder, write_video

from vla_rl_ros.ros.names import CAMERA_INFO_TOPIC, CAMERA_TOPICS, DIAGNOSTICS_TOPIC
from vla_rl_ros.ros.qos import RELIABLE

pytestmark = pytest.mark.graph
NS = "/arm0"
BRIDGE = CvBridge()


def camera_status(diagnostics: list[DiagnosticArray]) -> DiagnosticStatus | None:
    statuses = [s for d in diagnostics for s in d.status if s.name == f"{NS}/camera_node"]
    return statuses[-1] if statuses else None


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_video_replay_publishes_images_and_camera_info_and_survives_an_unplug(ros_graph: RosGraph,
                                                                              tmp_path: Path) -> None:
    video, calibration = tmp_path / "replay.mp4", tmp_path / "front.yaml"
    rgb = write_video(video, n=8)
    calibration.write_text(CALIBRATION.replace("640", str(W)).replace("480", str(H)))
    probe = ros_graph.probe
    images = probe.collect(Image, f"{NS}/{CAMERA_TOPICS['front']}", qos_profile_sensor_data)
    infos = probe.collect(CameraInfo, f"{NS}/{CAMERA_INFO_TOPIC}", qos_profile_sensor_data)
    diagnostics = probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
    ros_graph.node("camera_node", "-r", f"__ns:={NS}", "-p", f"source:={video}", "-p", "fps:=20.0",
                   "-p", "loop:=true", "-p", "crop:=[16, 8, 32, 32]", "-p", "resize:=[16, 16]",
                   "-p", f"calibration_file:={calibration}", "-p", "reconnect_period_s:=0.2",
                   "-p", "diagnostics_period_s:=0.2")
    wait_until(lambda: len(images) >= 12 and infos, 60, "replayed frames")
    msg = images[-1]
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == ("rgb8", 16, 16, "camera")
    # Consecutive frames of the looped replay in the file's order (best effort may lose one now and then).
    steps = [(b - a) % len(rgb) for a, b in itertools.pairwise(
        which(BRIDGE.imgmsg_to_cv2(m, desired_encoding="bgr8"), rgb) for m in images[-9:])]
    assert set(steps) <= {1, 2} and steps.count(1) >= 6, steps
    info = infos[-1]
    assert (info.width, info.height) == (16, 16)
    # 64x48 calibration with cx=320: crop x 16 then half size -> cx = (320 - 16) / 2.
    assert info.k[2] == pytest.approx((320 - 16) / 2) and info.k[0] == pytest.approx(250.0)
    assert info.header.stamp == next(m.header.stamp for m in images if m.header.stamp == info.header.stamp)
    wait_until(lambda: (s := camera_status(diagnostics)) and s.level == DiagnosticStatus.OK, 30, "OK diagnostics")

    # Unplugged: the replay file disappears. No images, an ERROR on /diagnostics, reconnection attempts.
    moved = tmp_path / "away.mp4"
    shutil.move(video, moved)
    wait_until(lambda: (s := camera_status(diagnostics)) and s.level == DiagnosticStatus.ERROR, 30, "ERROR")
    lost_at = len(images)
    wait_until(lambda: int(values(camera_status(diagnostics))["reconnect_attempts"]) >= 3, 30, "retries")
    assert len(images) <= lost_at + 1 and "no camera" in camera_status(diagnostics).message
    log = ros_graph.log("camera_node")
    assert "camera lost" in log and "was removed" in log and "camera not available" in log

    # Plugged back in: frames resume, the node never restarted.
    shutil.move(moved, video)
    wait_until(lambda: len(images) >= lost_at + 5, 30, "frames after the camera came back")
    wait_until(lambda: values(camera_status(diagnostics))["reconnects"] == "1", 30, "one reconnect")
    assert ros_graph.procs[0][1].poll() is None


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_image_folder_frames_arrive_exactly_in_the_asked_encoding(ros_graph: RosGraph, tmp_path: Path,
                                                                   encoding: str) -> None:
    rgb = write_folder(tmp_path / "frames", n=3)
    (tmp_path / "frames" / "frame_001.png").write_bytes(b"garbage")  # skipped, counted and logged as dropped
    images = ros_graph.probe.collect(Image, f"{NS}/{CAMERA_TOPICS['front']}", qos_profile_sensor_data)
    diagnostics = ros_graph.probe.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
    ros_graph.node("camera_node", "-p", "type:=image_folder", "-p", f"source:={tmp_path / 'frames'}",
                   "-p", "fps:=30.0", "-p", "loop:=true", "-p", f"encoding:={encoding}", "-r", f"__ns:={NS}")
    wait_until(lambda: len(images) >= 4, 60, "frames")
    msg = images[-1]
    pixels = BRIDGE.imgmsg_to_cv2(msg)
    assert msg.encoding == encoding and (msg.height, msg.width) == (H, W)
    # PNG is lossless: each frame is exactly one of the folder's colours (BGR or its grey level).
    bgr = rgb[:, ::-1].astype(int)
    expected = [tuple(c) for c in bgr] if encoding == "bgr8" else \
        [round(0.114 * b + 0.587 * g + 0.299 * r) for b, g, r in bgr]
    got = tuple(int(v) for v in pixels[0, 0]) if encoding == "bgr8" else int(pixels[0, 0])
    assert got in expected and len(np.unique(pixels.reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1),
                                             axis=0)) == 1
    assert got != expected[1]  # the garbage file's frame is never published
    wait_until(lambda: int(values(camera_status(diagnostics) or DiagnosticStatus()).get("dropped/unreadable", 0)) >= 2,
               30, "the unreadable frames counted")
    wait_until(lambda: "frames dropped since the last report" in ros_graph.log("camera_node"), 30, "a drop log line")


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "type:=webcam"], "type='webcam' is not one of ['opencv', 'image_folder']"),
    (["-p", "type:=image_folder", "-p", "fps:=0.0"], "set fps > 0"),
    (["-p", "crop:=[0, 0, 10]"], "must be [x, y, width, height]"),
    (["-p", "source:=0"], "quote a device index"),
    (["-p", "calibration_file:=/no/such/calibration.yaml"], "cannot read camera calibration /no/such"),
])
def test_bad_parameters_stop_the_node_with_the_reason(ros_graph: RosGraph, args: list[str], message: str) -> None:
    proc = ros_graph.node("camera_node", *args)
    assert proc.wait(timeout=60) == 2
    assert message in ros_graph.log("camera_node")
