"""Episodes as a rosbag2 MCAP file, written with `rosbags` (no ROS install needed), using standard
message types only so that any ROS 2 tool (ros2 bag play, Foxglove, PlotJuggler) reads the bag
without this project's interface package.

Topics, under an optional namespace such as /arm0 (per frame t, stamped start + t / fps):
    <ns>/<camera>/image_raw   sensor_msgs/msg/Image, rgb8
    <ns>/joint_states         sensor_msgs/msg/JointState, position = observation.state, names from the dataset
    <ns>/action               std_msgs/msg/Float32MultiArray, the action taken at that frame
once per episode:
    <ns>/instruction          std_msgs/msg/String, at the first frame
    <ns>/success              std_msgs/msg/Bool, after the last frame
    <ns>/reward               std_msgs/msg/Float32, after the last frame
    <ns>/episode              std_msgs/msg/String, JSON of the episode's labels, after the last frame
Episodes follow each other with EPISODE_GAP_S between them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from vla_rl_ros.data.atomic import DatasetError, move_into_place, tmp_path_for
from vla_rl_ros.data.dataset import ACTION_KEY, STATE_KEY, EpisodeDataset

NS_PER_S = 1_000_000_000
EPISODE_GAP_S = 1.0  # idle time between episodes in the bag, so players show them apart
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and Kilted

IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT_ARRAY = "std_msgs/msg/Float32MultiArray"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"
FLOAT = "std_msgs/msg/Float32"


def export_mcap(
    ds: EpisodeDataset,
    out: str | Path,
    *,
    namespace: str = "",
    episodes: Sequence[int] | None = None,
    progress: bool = False,
) -> Path:
    """Write `episodes` (default all) of `ds` to a new rosbag2 folder `out` holding one .mcap."""
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} exists; rosbag2 writes a new folder, choose another path")
    ns = namespace.rstrip("/")
    if ns and not ns.startswith("/"):
        raise ValueError(f"namespace {namespace!r} must start with '/', e.g. '/arm0'")
    indices = range(len(ds)) if episodes is None else episodes
    # Written in a temporary folder and renamed when complete: no half bag under the final name. The
    # bag keeps its final folder name inside it, as rosbag2 names the .mcap file after the folder.
    staging = tmp_path_for(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_bag(ds, staging / out.name, ns, indices, progress)
        move_into_place(staging / out.name, out)
    finally:  # moved into place or failed: the staging folder goes either way, a failed export leaves nothing
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_bag(ds: EpisodeDataset, path: Path, ns: str, indices: Sequence[int], progress: bool) -> None:
    """The bag folder `path` with the messages of episodes `indices` (see the module docstring)."""
    ts = get_typestore(Stores.ROS2_KILTED)
    m = ts.types
    state_names = list(ds.features[STATE_KEY]["names"])
    action_dim = ds.features[ACTION_KEY]["shape"][0]
    with Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = {f"{ns}/{cam}/image_raw": IMAGE for cam in ds.cameras}
        topics |= {
            f"{ns}/joint_states": JOINT_STATE,
            f"{ns}/action": FLOAT_ARRAY,
            f"{ns}/instruction": STRING,
            f"{ns}/success": BOOL,
            f"{ns}/reward": FLOAT,
            f"{ns}/episode": STRING,
        }
        conns = {topic: writer.add_connection(topic, msgtype, typestore=ts) for topic, msgtype in topics.items()}

        def write(topic: str, stamp_ns: int, msg: object) -> None:
            writer.write(conns[topic], stamp_ns, ts.serialize_cdr(msg, topics[topic]))

        def header(stamp_ns: int, frame_id: str) -> object:
            stamp = m["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
            return m["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

        layout = m["std_msgs/msg/MultiArrayLayout"](
            dim=[m["std_msgs/msg/MultiArrayDimension"](label="action", size=action_dim, stride=action_dim)],
            data_offset=0,
        )
        start_ns = 0
        for index in tqdm(indices, desc="export", unit="episode", disable=not progress):
            episode = ds[index]
            meta = ds.episodes_meta()[index]
            stamps = start_ns + (np.arange(episode.length) * NS_PER_S) // ds.fps  # (T,)
            write(f"{ns}/instruction", int(stamps[0]), m[STRING](data=episode.instruction))
            for t, stamp in enumerate(int(s) for s in stamps):
                for cam, frames in episode.images.items():
                    H, W, _ = frames[t].shape
                    image = m[IMAGE](
                        header=header(stamp, cam),
                        height=H,
                        width=W,
                        encoding="rgb8",
                        is_bigendian=0,
                        step=W * 3,
                        data=frames[t].reshape(-1),
                    )
                    write(f"{ns}/{cam}/image_raw", stamp, image)
                joints = m[JOINT_STATE](
                    header=header(stamp, ""),
                    name=state_names,
                    position=episode.state[t].astype(np.float64),
                    velocity=np.empty(0),
                    effort=np.empty(0),
                )
                write(f"{ns}/joint_states", stamp, joints)
                write(f"{ns}/action", stamp, m[FLOAT_ARRAY](layout=layout, data=episode.actions[t]))
            end = int(stamps[-1]) + NS_PER_S // ds.fps
            write(f"{ns}/success", end, m[BOOL](data=episode.success))
            write(f"{ns}/reward", end, m[FLOAT](data=episode.reward))
            write(f"{ns}/episode", end, m[STRING](data=json.dumps(meta)))
            start_ns = end + int(EPISODE_GAP_S * NS_PER_S)
