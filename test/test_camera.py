"""Camera sources and processing on real files: an H.264 video written by the project's own encoder,
a folder of PNGs, a calibration YAML in camera_calibration_parsers' format. No ROS."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vla_rl_ros.camera import (
    Calibration,
    CameraConfig,
    CameraDisconnectedError,
    CameraError,
    CameraSource,
    CameraStream,
    CameraTimeoutError,
    EndOfStreamError,
    Event,
    Frame,
    FrameError,
    FrameProcessor,
    ImageFolderCamera,
    OpenCVCamera,
    make_source,
)
from vla_rl_ros.camera.base import GrabberSource
from vla_rl_ros.data.video import VideoConfig, encode_video

H, W = 48, 64  # even sizes: yuv420p
FPS = 20.0
TIMEOUT_S = 2.0


def colours(n: int) -> np.ndarray:
    """(n, 3) RGB: frame i's flat colour, far apart so lossy decoding cannot confuse two frames."""
    i = np.arange(n)
    return np.stack([20 + 20 * i, np.full(n, 100), 220 - 20 * i], axis=1).astype(np.uint8)


def write_video(path: Path, n: int = 8) -> np.ndarray:
    """An MP4 (H.264) of n flat-coloured frames; returns their RGB colours."""
    rgb = colours(n)
    frames = np.broadcast_to(rgb[:, None, None, :], (n, H, W, 3)).copy()
    encode_video(path, frames, int(FPS), VideoConfig(crf=0, pix_fmt="yuv444p"))
    return rgb


def write_folder(folder: Path, n: int = 5) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = colours(n)
    for i, c in enumerate(rgb):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), np.full((H, W, 3), c[::-1], np.uint8))  # BGR on disk
    return rgb


def which(image_bgr: np.ndarray, rgb: np.ndarray) -> int:
    """Index of the frame colour an image (BGR, as a source returns it) shows."""
    mean = image_bgr.reshape(-1, 3).mean(axis=0)[::-1]
    return int(np.argmin(np.abs(rgb.astype(float) - mean).sum(axis=1)))


def test_video_file_replays_in_order_at_its_rate_then_ends(tmp_path: Path) -> None:
    video = tmp_path / "replay.mp4"
    rgb = write_video(video)
    with OpenCVCamera(CameraConfig(source=str(video), fps=FPS)) as cam:
        t0 = time.monotonic()
        frames = [cam.read(TIMEOUT_S) for _ in range(len(rgb))]
        elapsed = time.monotonic() - t0
        with pytest.raises(EndOfStreamError, match="end of"):
            cam.read(TIMEOUT_S)
    assert [which(f.image, rgb) for f in frames] == list(range(len(rgb)))
    assert frames[0].image.shape == (H, W, 3) and frames[0].image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(len(rgb)))
    # Real time: 8 frames at 20 Hz span 7 periods (0.35 s); decoding alone takes milliseconds.
    assert elapsed >= (len(rgb) - 1) / FPS * 0.9


def test_video_loops_and_a_removed_file_is_a_lost_camera(tmp_path: Path) -> None:
    video = tmp_path / "replay.mp4"
    rgb = write_video(video, n=4)
    with OpenCVCamera(CameraConfig(source=str(video), fps=100.0, loop=True)) as cam:
        frames = [cam.read(TIMEOUT_S) for _ in range(10)]
        # Grab k shows frame k mod 4: the file starts over after its 4 frames. A replay keeps only the newest
        # frame, so a reader late by more than a period (10 ms here, a loaded machine) skips one, in order.
        assert [which(f.image, rgb) for f in frames] == [f.index % 4 for f in frames]
        assert all(b.index > a.index for a, b in itertools.pairwise(frames))
        video.unlink()  # an open handle could read on; the source must not
        with pytest.raises(CameraDisconnectedError, match="was removed"):
            for _ in range(5):
                cam.read(TIMEOUT_S)
        with pytest.raises(CameraError, match="read before connect"):  # read closed it: connect again
            cam.read(TIMEOUT_S)
    with pytest.raises(CameraDisconnectedError, match="no video file"):
        OpenCVCamera(CameraConfig(source=str(video))).connect()


def test_image_folder_in_name_order_skips_unreadable_files_and_times_out(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    rgb = write_folder(folder)
    (folder / "frame_002.png").write_bytes(b"not a png")  # replaced by garbage: skipped, counted
    (folder / "notes.txt").write_text("ignored")
    with ImageFolderCamera(CameraConfig(source=str(folder), fps=100.0)) as cam:
        seen = [which(cam.read(TIMEOUT_S).image, rgb) for _ in range(4)]
        with pytest.raises(EndOfStreamError):
            cam.read(TIMEOUT_S)
    assert seen == [0, 1, 3, 4] and cam.unreadable == 1
    with ImageFolderCamera(CameraConfig(source=str(folder), fps=1.0)) as slow:
        slow.read(TIMEOUT_S)  # the first frame is due at once, the next in 1 s
        t0 = time.monotonic()
        with pytest.raises(CameraTimeoutError, match=r"no frame within 0\.2 s"):
            slow.read(0.2)
        assert 0.15 < time.monotonic() - t0 < 0.9
    with pytest.raises(ValueError, match="set fps > 0"):
        ImageFolderCamera(CameraConfig(source=str(folder), fps=0.0))
    with pytest.raises(CameraDisconnectedError, match="holds no images"):
        ImageFolderCamera(CameraConfig(source=str(tmp_path), fps=10.0)).connect()


def test_stream_reconnects_when_the_folder_comes_back_and_counts_attempts(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    rgb = write_folder(folder, n=3)
    events: list[Event] = []
    stream = CameraStream(lambda: make_source("image_folder", CameraConfig(source=str(folder), fps=50.0, loop=True)),
                          FrameProcessor(encoding="rgb8"), read_timeout_s=TIMEOUT_S, reconnect_period_s=0.01,
                          fps=50.0, on_event=events.append)

    def no_stop(seconds: float) -> bool:
        time.sleep(seconds)
        return False

    image, frame = stream.step(no_stop)
    assert np.array_equal(image[0, 0], rgb[0]) and frame.index == 0  # processed: RGB out
    shutil.rmtree(folder)
    # The frame already grabbed may still come; then the loss, then failed reconnection attempts.
    outcomes = [stream.step(no_stop) for _ in range(5)]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["connected", "lost"] and set(kinds[2:]) == {"retry_failed"} and len(kinds) >= 5, kinds
    assert outcomes[-1] is None and not stream.connected and "was removed" in events[1].message
    assert stream.reconnect_attempts == len(kinds) - 2 >= 3
    write_folder(folder, n=3)
    back = next(out for out in (stream.step(no_stop) for _ in range(5)) if out is not None)
    assert stream.connected and stream.reconnects == 1 and events[-1].kind == "connected"
    assert np.array_equal(back[0][0, 0], rgb[0])  # a fresh connection replays from the start
    status = stream.status()
    assert status["connected"] == "true" and int(status["reconnect_attempts"]) == stream.reconnect_attempts
    stream.close()


def test_stream_counts_frames_lost_to_a_slow_reader(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    write_folder(folder, n=5)
    stream = CameraStream(lambda: make_source("image_folder", CameraConfig(source=str(folder), fps=50.0, loop=True)),
                          FrameProcessor(), read_timeout_s=TIMEOUT_S, reconnect_period_s=0.01, fps=50.0,
                          on_event=lambda e: None)
    _, first = stream.step(time.sleep)
    time.sleep(0.25)  # about 12 frames are produced meanwhile; only the newest is kept
    _, second = stream.step(time.sleep)
    stream.close()
    produced = round((second.captured_at - first.captured_at) * 50.0)  # at 50 Hz, whatever the machine's load
    assert stream.dropped["overwritten"] == second.index - first.index - 1 and produced >= 6
    assert produced - 3 <= stream.dropped["overwritten"] <= produced, (stream.dropped, produced)
    assert stream.status()["frames_dropped"] == str(sum(stream.dropped.values()))


class ScriptedCamera(CameraSource):
    """A device double at the hardware boundary: frames with the index and capture time the device gave them."""

    def __init__(self, frames: list[tuple[int, float]]) -> None:
        super().__init__(CameraConfig(source="scripted"))
        self.frames = iter(frames)

    def connect(self) -> None:
        pass

    def read(self, timeout_s: float) -> Frame:
        index, captured_at = next(self.frames, (-1, 0.0))
        if index < 0:
            raise EndOfStreamError("end of the script")
        return Frame(np.zeros((H, W, 3), np.uint8), index, captured_at)

    def close(self) -> None:
        pass


def test_stream_measures_the_rate_a_slower_device_delivers_and_counts_only_real_gaps() -> None:
    """Asked for 30 fps, the device delivers 15 (jittered by 4 %): a stall of 3 frames and 1 frame the
    reader missed are the only drops; the rate is measured as delivered and the mismatch said once."""
    period = 1 / 15
    frames, t, index = [], 100.0, 0
    for i in range(90):
        frames.append((index, t))
        gap = 4 if i == 30 else 2 if i == 50 else 1  # after frame 30 the device stalls for 3 periods
        index += 2 if i == 50 else 1  # after frame 50 one frame is produced but overwritten unread
        t += sum(period * (1 + 0.04 * ((k % 3) - 1)) for k in range(i, i + gap))
    for configured, said in ((30.0, ["ScriptedCamera(scripted) delivers 15.0 fps, configured 30"]), (15.0, [])):
        events: list[Event] = []
        stream = CameraStream(lambda: ScriptedCamera(frames), FrameProcessor(), read_timeout_s=TIMEOUT_S,
                              reconnect_period_s=0.01, fps=configured, on_event=events.append)
        while not stream.ended:
            stream.step(lambda s: False)
        assert stream.frames == 90 and +stream.dropped == {"late": 3, "overwritten": 1}, stream.dropped
        assert stream.status()["measured_fps"] == "15.0" and stream.status()["frames_dropped"] == "4"
        assert [e.message for e in events if e.kind == "rate"] == said
        assert stream.status()["configured_fps"] == f"{configured:g}"


class WedgedCamera(GrabberSource):
    """A device double at the hardware boundary: its second grab blocks in the "driver" until `unwedge` is
    set, as the read of a wedged USB camera does; it logs the order of its calls into the device."""

    def __init__(self, name: str, log: list[str], unwedge: threading.Event) -> None:
        super().__init__(CameraConfig(source=name))
        self.log, self.unwedge, self.grabs = log, unwedge, 0

    def _open(self) -> None:
        self.log.append(f"{self.config.source} open")

    def _grab(self) -> np.ndarray:
        self.grabs += 1
        if self.grabs == 2 and not self.unwedge.is_set():
            self.log.append(f"{self.config.source} read blocks")
            self.unwedge.wait()
            self.log.append(f"{self.config.source} read returns")
        else:
            time.sleep(0.005)  # a device paces itself
        return np.zeros((H, W, 3), np.uint8)

    def _release(self) -> None:
        self.log.append(f"{self.config.source} release")


def test_a_read_stuck_in_the_driver_is_never_released_under_it_nor_the_device_reopened() -> None:
    log: list[str] = []
    unwedge = threading.Event()
    sources: list[WedgedCamera] = []
    events: list[Event] = []

    def make() -> WedgedCamera:
        sources.append(WedgedCamera(f"cam{len(sources)}", log, unwedge))
        return sources[-1]

    stream = CameraStream(make, FrameProcessor(), read_timeout_s=0.3, reconnect_period_s=0.01, fps=30.0,
                          on_event=events.append)
    assert stream.step(lambda s: False) is not None  # the first frame
    assert stream.step(lambda s: False) is None  # the second read times out: the camera is lost
    assert log == ["cam0 open", "cam0 read blocks"] and not sources[0].released  # not released under the read
    for _ in range(3):  # reconnection attempts while the old read is still blocked: none opens the device
        assert stream.step(lambda s: False) is None
    assert log == ["cam0 open", "cam0 read blocks"] and len(sources) == 1
    assert [e.kind for e in events] == ["connected", "lost", "retry_failed", "retry_failed", "retry_failed"]
    assert "still blocked in a read" in stream.status()["last_error"] and stream.status()["reconnect_attempts"] == "3"
    with pytest.raises(CameraDisconnectedError, match="still blocked in a read"):
        sources[0].connect()  # the source itself will not reopen either
    unwedge.set()  # the driver's read returns (the camera was replugged): the capture thread releases
    deadline = time.monotonic() + 30
    while not sources[0].released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log == ["cam0 open", "cam0 read blocks", "cam0 read returns", "cam0 release"]
    assert stream.step(lambda s: False) is not None  # reconnected to a fresh handle
    assert log[4:] == ["cam1 open"] and stream.reconnects == 1 and events[-1].kind == "connected"
    stream.close()
    deadline = time.monotonic() + 30
    while not sources[1].released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log[4:] == ["cam1 open", "cam1 release"]


def test_crop_resize_and_encodings_exactly() -> None:
    bgr = np.zeros((40, 60, 3), np.uint8)
    bgr[10:30, 20:40] = (255, 0, 0)  # a blue square, BGR
    cropped = FrameProcessor(crop=(20, 10, 20, 20), encoding="rgb8")(bgr)
    assert cropped.shape == (20, 20, 3) and np.all(cropped == (0, 0, 255))
    small = FrameProcessor(crop=(10, 10, 40, 20), resize=(4, 2), encoding="bgr8")(bgr)
    assert small.shape == (2, 4, 3)
    assert np.array_equal(small[:, 1:3, 0], np.full((2, 2), 255)) and np.all(small[:, [0, 3]] == 0)
    mono = FrameProcessor(encoding="mono8")(bgr)
    assert mono.shape == (40, 60) and mono[20, 30] == round(0.114 * 255) and mono[0, 0] == 0
    assert FrameProcessor(encoding="rgb8")(np.full((4, 4), 7, np.uint8)).shape == (4, 4, 3)  # mono camera
    with pytest.raises(FrameError, match=r"crop \[50, 0, 20, 20\] does not fit the 60x40 frame"):
        FrameProcessor(crop=(50, 0, 20, 20))(bgr)
    with pytest.raises(FrameError, match="not 8-bit"):
        FrameProcessor()(bgr.astype(np.float32))
    for bad in ({"crop": (0, 0, 10, 0)}, {"resize": (10, 0)}, {"encoding": "yuv422"}):
        with pytest.raises(ValueError):
            FrameProcessor(**bad)
    with pytest.raises(ValueError, match="unknown camera type 'kinect'; known: opencv, image_folder"):
        make_source("kinect", CameraConfig())


CALIBRATION = """\
image_width: 640
image_height: 480
camera_name: front
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1, -0.2, 0.001, 0.002, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [500.0, 0.0, 320.0, -25.0, 0.0, 510.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_calibration_loads_and_follows_crop_and_resize(tmp_path: Path) -> None:
    path = tmp_path / "front.yaml"
    path.write_text(CALIBRATION)
    cal = Calibration.load(path)
    assert (cal.width, cal.height, cal.camera_name, cal.distortion_model) == (640, 480, "front", "plumb_bob")
    assert cal.d == (0.1, -0.2, 0.001, 0.002, 0.0)
    # Crop the central 320x240 and halve it: cx = (320 - 160) / 2, fx = 500 / 2; Tx scales with fx.
    out = cal.for_output(FrameProcessor(crop=(160, 120, 320, 240), resize=(160, 120)))
    assert (out.width, out.height) == (160, 120)
    assert out.k == pytest.approx((250.0, 0.0, 80.0, 0.0, 255.0, 60.0, 0.0, 0.0, 1.0))
    assert out.p == pytest.approx((250.0, 0.0, 80.0, -12.5, 0.0, 255.0, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    assert out.d == cal.d and out.r == cal.r
    path.write_text(CALIBRATION.replace("rows: 3\n  cols: 4", "rows: 3\n  cols: 3"))
    with pytest.raises(ValueError, match="`projection_matrix` is 3x3 with 12 finite values; expected 3x4"):
        Calibration.load(path)
    path.write_text("camera_name: front\n")
    with pytest.raises(ValueError, match="image_width and image_height are required"):
        Calibration.load(path)
    with pytest.raises(ValueError, match="cannot read camera calibration"):
        Calibration.load(tmp_path / "none.yaml")


@pytest.mark.parametrize("device", ["/dev/video99", "99"])
def test_a_missing_device_is_a_disconnected_camera_not_a_crash(device: str) -> None:
    """A device path or index with no camera behind it (unplugged) is the error the stream reconnects on."""
    cam = OpenCVCamera(CameraConfig(source=device))
    assert not cam.is_file
    with pytest.raises(CameraDisconnectedError, match=f"OpenCV cannot open {device}"):
        cam.connect()
    cam.close()  # idempotent, never raises
