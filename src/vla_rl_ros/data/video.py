"""Camera streams as MP4 files through PyAV: one video per camera per episode, H.264 (yuv420p default),
frame i stamped at i / fps so that LeRobot's timestamp-based decoder finds every frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vla_rl_ros.data.atomic import DatasetError

# yuv420p is what every H.264 decoder reads (browsers, torchcodec, LeRobot); it stores colour at half
# resolution, which at 64 px caps MuJoCo renders at ~32.6 dB PSNR before any compression. yuv444p
# keeps full colour (~52.9 dB) and is read by FFmpeg-based decoders (PyAV, torchcodec), not browsers.
PIX_FMTS = ("yuv420p", "yuv444p")
# Largest 8-bit pixel value, for PSNR.
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class VideoConfig:
    """How camera frames are compressed. Defaults measured in benchmarks/bench_recording.py."""

    codec: str = field(default="libx264", metadata={"help": "encoder name in PyAV (libx264, libsvtav1, mpeg4)"})
    crf: int = field(
        default=18,
        metadata={"help": "constant rate factor: lower is closer to lossless and bigger (x264: 0..51)"},
    )
    preset: str = field(default="veryfast", metadata={"help": "x264 speed/size trade-off"})
    pix_fmt: str = field(
        default="yuv420p",
        metadata={"help": "yuv420p (LeRobot's default, plays everywhere) or yuv444p (full colour, for small images)"},
    )
    gop: int = field(
        default=10,
        metadata={"help": "frames between key frames: small makes random access cheap (LeRobot uses 2)"},
    )

    def __post_init__(self) -> None:
        if self.codec not in av.codecs_available:
            raise ValueError(f"video codec {self.codec!r} is not in this PyAV build; use 'libx264' or 'mpeg4'")
        if not 0 <= self.crf <= 63:
            raise ValueError(f"crf={self.crf} out of range; use 0 (best) .. 51 (worst) for libx264")
        if self.pix_fmt not in PIX_FMTS:
            raise ValueError(f"pix_fmt={self.pix_fmt!r} is not one of {PIX_FMTS}")
        if self.gop < 1:
            raise ValueError(f"gop={self.gop} must be at least 1 (1 = every frame a key frame)")

    def options(self) -> dict[str, str]:
        opts = {"crf": str(self.crf), "g": str(self.gop)}
        if self.codec == "libx264":
            opts["preset"] = self.preset
        return opts


def encode_video(path: Path, frames: np.ndarray, fps: int, config: VideoConfig) -> None:
    """Write frames (T, H, W, 3) uint8 RGB to `path` (an .mp4 the caller later moves into place)."""
    T, H, W, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(config.codec, rate=fps, options=config.options())
        stream.width, stream.height, stream.pix_fmt = W, H, config.pix_fmt
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(T):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def decode_video(path: Path, start_s: float = 0.0, num_frames: int | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 RGB of `path` from time `start_s` on (`num_frames` of them, or all).

    A file that cannot be decoded, or holds fewer frames than asked, raises DatasetError naming it."""
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tolerance = 0.5 / float(stream.average_rate or 1)
            if start_s > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is not None and frame.time < start_s - tolerance:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if num_frames is not None and len(frames) == num_frames:
                    break
    except FileNotFoundError as exc:
        raise DatasetError(f"missing video file {path}") from exc
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise DatasetError(f"corrupt video file {path}: {exc}") from exc
    if not frames or (num_frames is not None and len(frames) < num_frames):
        expected = "at least one" if num_frames is None else num_frames
        raise DatasetError(f"corrupt video file {path}: {len(frames)} frames, expected {expected}")
    return np.stack(frames)


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels (inf when identical)."""
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(PIXEL_MAX**2 / mse))


def video_info(path: Path, fps: int, config: VideoConfig) -> dict[str, object]:
    """The `info` block LeRobot keeps for a video feature in meta/info.json."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "video.crf": config.crf,
            "video.g": config.gop,
            "has_audio": False,
        }
