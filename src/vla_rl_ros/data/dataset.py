"""`EpisodeDataset`: reward-labelled episodes on disk in the LeRobotDataset v3.0 layout.

    <root>/meta/info.json                                 schema (features), fps, totals, path templates
    <root>/meta/stats.json                                per-feature min/max/mean/std/count/quantiles
    <root>/meta/tasks.parquet                             instruction text -> task_index
    <root>/meta/episodes/chunk-CCC/file-FFF.parquet       one row per episode: length, file pointers, labels
    <root>/data/chunk-CCC/file-FFF.parquet                per-frame state, action, extras, indices
    <root>/videos/<camera key>/chunk-CCC/file-FFF.mp4     one H.264 video per camera

Layout learned from LeRobot's lerobot/datasets/utils.py and lerobot_dataset.py (v3.0), written here
with pyarrow and PyAV. v3.0 lets one file hold several episodes; we write each episode to its own
files, named by its index (episode e -> chunk e // 1000, file e % 1000), because that makes an append
atomic without rewriting anything that exists:

1. data and video files are written under temporary names, fsynced, and renamed into place;
2. the episode's metadata row, in its own file, is renamed into place last: that is the commit;
3. info.json and stats.json are then rewritten; both are derived from the rows and repaired on open.

A crash (even kill -9) at any point leaves the committed episodes untouched; files of the half-written
episode are not referenced by any row, so readers never see them, and the next writer removes them.
Writers hold an exclusive flock on <root>/.writer.lock, so several processes may append to one dataset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vla_rl_ros.data.atomic import DatasetError, is_tmp, write_json, writing
from vla_rl_ros.data.episode import Episode
from vla_rl_ros.data.files import read_file, read_json, read_parquet, write_parquet
from vla_rl_ros.data.stats import STAT_KEYS, Stats, feature_stats, image_stats, pool
from vla_rl_ros.data.video import VideoConfig, decode_video, encode_video, video_info

CODEBASE_VERSION = "v3.0"
# LeRobot's DEFAULT_CHUNK_SIZE: files per chunk folder.
CHUNKS_SIZE = 1000
# LeRobot's DEFAULT_DATA_FILE_SIZE_IN_MB / DEFAULT_VIDEO_FILE_SIZE_IN_MB, recorded in info.json for
# LeRobot's own writer; ours starts a new file per episode anyway.
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
LOCK_PATH = ".writer.lock"
# Opening reads one small row file per episode (a few ms each); when at least this many had to be
# read, the rows are cached in one file (outside LeRobot's meta/episodes/), each cached row checked
# against its row file's mtime and size, so a relabel or a rewrite is never hidden by the cache.
INDEX_CACHE_PATH = "meta/.episodes_index.parquet"
INDEX_CACHE_MIN_READS = 50
CACHE_COLUMNS = ("_file", "_mtime_ns", "_size")  # row file (relative to root) and its stamp

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
# Per-frame bookkeeping columns every LeRobot dataset has (LeRobot's DEFAULT_FEATURES).
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
# Episode labels stored as columns of the episode row, with their Arrow types. "task_name" is our task
# registry name; the instruction is LeRobot's "tasks" column (its natural-language task).
LABEL_COLUMNS: dict[str, pa.DataType] = {
    "task_name": pa.string(),
    "seed": pa.int64(),
    "success": pa.bool_(),
    "reward": pa.float64(),
    "end_reason": pa.string(),
    "policy_version": pa.int64(),
    "group_id": pa.string(),
    "episode_id": pa.string(),
    "evaluation": pa.bool_(),
}
# info.json key with what only this project writes (LeRobot ignores unknown keys).
PROJECT_KEY = "vla_rl_ros"
# Labels of episodes recorded without them (by LeRobot's own tools): read as the successful
# demonstrations such datasets hold. Relabel them after merging into a dataset of ours.
LABEL_DEFAULTS = {
    "seed": -1,
    "success": True,
    "reward": 1.0,
    "end_reason": "success",
    "policy_version": 0,
    "group_id": "",
    "episode_id": "",
    "evaluation": False,
}
# Per-frame feature dtypes read as float32 extras (others, e.g. strings, are left out).
NUMERIC_DTYPES = ("float32", "float64", "int32", "int64", "bool")


def chunk_file(episode_index: int) -> dict[str, int]:
    """Chunk and file index of an episode's own files (LeRobot's update_chunk_file_indices order)."""
    return {"chunk_index": episode_index // CHUNKS_SIZE, "file_index": episode_index % CHUNKS_SIZE}


def file_episode_index(path: Path) -> int:
    """Inverse of chunk_file for a path .../chunk-CCC/file-FFF.ext."""
    chunk = int(path.parent.name.removeprefix("chunk-"))
    return chunk * CHUNKS_SIZE + int(path.stem.removeprefix("file-"))


class EpisodeDataset:
    """Episodes on disk. Create with `create`, open with `open`; `append` adds one atomically,
    `ds[i]` reads one back, `relabel` corrects a label. Not thread-safe within one process."""

    def __init__(self, root: Path, info: dict) -> None:
        self.root = root
        self.info = info
        self._rows: list[dict] = []  # episode rows without their stats/ columns
        # row files read, in order: (path relative to root, (mtime_ns, size), number of rows)
        self._files: list[tuple[str, tuple[int, int], int]] = []
        self._rows_read = 0  # row files this object has read (not found in the index cache)
        self._stats: dict[str, Stats] = {}  # pooled over the committed episodes (stats.json)
        self._stats_damaged = False  # stats.json unreadable: pooled from the rows, rewritten on recovery
        self._tasks: dict[str, int] = {}
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ creation and opening
    @classmethod
    def create(
        cls,
        root: str | Path,
        *,
        fps: int,
        cameras: Mapping[str, tuple[int, int]],
        state_names: Sequence[str],
        action_names: Sequence[str],
        robot_type: str = "",
        extras: Mapping[str, Sequence[str]] | None = None,
        video: VideoConfig | None = None,
    ) -> EpisodeDataset:
        """A new empty dataset at `root` (which must not exist or be empty).

        cameras: name -> (H, W), both even for yuv420p (it halves the colour resolution).
        video: how frames are compressed (VideoConfig; yuv444p keeps full colour for small images).
        extras: per-frame float features beyond state and action, key -> names of their K
        dimensions; one name means a scalar per frame, passed as a (T,) array."""
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise DatasetError(f"{root} exists and is not empty; use EpisodeDataset.open({str(root)!r})")
        if not isinstance(fps, int) or fps <= 0:
            raise ValueError(f"fps={fps!r} must be a positive integer (frames per second of control)")
        if not cameras:
            raise ValueError("cameras is empty; give at least one camera name -> (H, W)")
        video = video or VideoConfig()
        for name, (h, w) in cameras.items():
            if not name or "/" in name:
                raise ValueError(f"camera name {name!r} must be non-empty without '/'")
            if h <= 0 or w <= 0 or (video.pix_fmt == "yuv420p" and (h % 2 or w % 2)):
                raise ValueError(f"camera {name!r} size {(h, w)} must be positive and even (yuv420p halves colour)")
        for what, names in (("state_names", state_names), ("action_names", action_names)):
            if not names or len(set(names)) != len(names):
                raise ValueError(f"{what}={list(names)} must be non-empty and unique")
        features: dict[str, dict] = {
            f"{IMAGE_PREFIX}{name}": {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
            }
            for name, (h, w) in cameras.items()
        }
        features[STATE_KEY] = {"dtype": "float32", "shape": [len(state_names)], "names": list(state_names)}
        features[ACTION_KEY] = {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names)}
        for key, names in (extras or {}).items():
            if key in features or key in INDEX_FEATURES or not names:
                raise ValueError(f"extra feature {key!r} clashes with a built-in key or has no names")
            features[key] = {"dtype": "float32", "shape": [len(names)], "names": list(names)}
        features |= {key: {"dtype": dtype, "shape": [1], "names": None} for key, dtype in INDEX_FEATURES.items()}
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_SIZE_MB,
            "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
            "fps": fps,
            "splits": {},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
            PROJECT_KEY: {"video": asdict(video)},
        }
        return cls._initialise(root, info)

    @classmethod
    def create_like(cls, root: str | Path, template: EpisodeDataset) -> EpisodeDataset:
        """A new empty dataset at `root` with the features, fps and video settings of `template`."""
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise DatasetError(f"{root} exists and is not empty; use EpisodeDataset.open({str(root)!r})")
        info = json.loads(json.dumps(template.info))  # deep copy
        for ft in info["features"].values():
            ft.pop("info", None)  # video info is filled from this dataset's first episode
        info |= {"total_episodes": 0, "total_frames": 0, "total_tasks": 0, "splits": {}}
        info.setdefault(PROJECT_KEY, {"video": asdict(template.video_config)})
        return cls._initialise(root, info)

    @classmethod
    def _initialise(cls, root: Path, info: dict) -> EpisodeDataset:
        ds = cls(root, info)
        with ds._writer_lock():
            ds._write_tasks()
            write_json(root / STATS_PATH, {})
            write_json(root / INFO_PATH, info)  # last: a root without info.json is not a dataset yet
        return ds

    @classmethod
    def open(cls, root: str | Path) -> EpisodeDataset:
        """Open an existing dataset. If no other process is writing, leftovers of an interrupted
        append are removed and derived metadata is repaired (needs write permission; skipped if not)."""
        root = Path(root)
        if not (root / INFO_PATH).is_file():
            raise DatasetError(f"{root} is not a dataset: {root / INFO_PATH} is missing (create one first)")
        info = read_json(root / INFO_PATH)
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise DatasetError(
                f"{root / INFO_PATH}: codebase_version {info.get('codebase_version')!r} is not "
                f"{CODEBASE_VERSION!r}; convert it with LeRobot's convert_dataset_v21_to_v30"
            )
        ds = cls(root, info)
        ds.refresh()
        with contextlib.suppress(BlockingIOError, DatasetError), ds._writer_lock(blocking=False):
            ds._recover()
            if ds._rows_read >= INDEX_CACHE_MIN_READS:
                ds._write_index_cache()
        return ds

    # ------------------------------------------------------------------ reading
    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def features(self) -> dict[str, dict]:
        return self.info["features"]

    @property
    def cameras(self) -> dict[str, tuple[int, int]]:
        """camera name -> (H, W)."""
        return {
            key.removeprefix(IMAGE_PREFIX): tuple(ft["shape"][:2])
            for key, ft in self.features.items()
            if ft["dtype"] == "video"
        }

    @property
    def extra_keys(self) -> list[str]:
        """Per-frame numeric features beyond state and action, read as float32 extras."""
        skip = {STATE_KEY, ACTION_KEY, *INDEX_FEATURES}
        return [k for k, ft in self.features.items() if ft["dtype"] in NUMERIC_DTYPES and k not in skip]

    @property
    def video_config(self) -> VideoConfig:
        return VideoConfig(**self.info.get(PROJECT_KEY, {}).get("video", {}))

    @property
    def num_frames(self) -> int:
        return sum(row["length"] for row in self._rows)

    @property
    def tasks(self) -> dict[str, int]:
        """instruction -> task_index."""
        return dict(self._tasks)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))

    def refresh(self) -> None:
        """Pick up episodes that writers committed since this object last looked."""
        self.info = read_json(self.root / INFO_PATH)
        try:
            stats: dict[str, Stats] | None = _stats_from_json(read_json(self.root / STATS_PATH), self.features)
        except DatasetError:  # derived from the episode rows: pooled from them below (_recover rewrites it)
            stats = None
        self._tasks = _read_tasks(self.root / TASKS_PATH)
        paths = sorted(
            (p for p in (self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet") if not is_tmp(p)),
            key=file_episode_index,
        )
        cache = self._read_index_cache() if not self._rows else {}
        for path in paths[len(self._files) :]:
            st = path.stat()
            name, stamp = str(path.relative_to(self.root)), (st.st_mtime_ns, st.st_size)
            cached = cache.get(name)
            if cached is not None and cached[0] == stamp:
                rows = cached[1]
            else:
                rows = _read_rows(path, with_stats=False)
                self._rows_read += 1
            for row in rows:
                if row["episode_index"] != len(self._rows):
                    raise DatasetError(
                        f"corrupt dataset file {path}: holds episode {row['episode_index']}, "
                        f"expected {len(self._rows)} (episode rows must be contiguous)"
                    )
                self._rows.append(row)
            self._files.append((name, stamp, len(rows)))
        self._stats_damaged = stats is None
        self._stats = self._pooled_stats() if stats is None else stats

    def _pooled_stats(self) -> dict[str, Stats]:
        """Every feature's statistics pooled over the episodes' own (the rows' stats/ columns)."""
        episodes = [self.episode_stats(i) for i in range(len(self))]
        return {key: pool([st[key] for st in episodes]) for key in episodes[0]} if episodes else {}

    def index_of(self, episode_id: str) -> int:
        """Index of the episode recorded with EpisodeResult.episode_id `episode_id` (for LabelEpisode)."""
        for row in self._rows:
            if episode_id and row["episode_id"] == episode_id:
                return row["episode_index"]
        raise KeyError(f"no episode with episode_id {episode_id!r} in {self.root}")

    def episodes_meta(self) -> list[dict]:
        """One dict per episode: episode_index, task, instruction, length, the labels and digest."""
        return [self._meta(row) for row in self._rows]

    def meta(self, index: int) -> dict:
        """Episode `index`'s dict of episodes_meta; IndexError naming the number of episodes."""
        return self._meta(self._rows[self._check_index(index)])

    def __getitem__(self, index: int) -> Episode:
        return self.read(index)

    def read(self, index: int, *, cameras: Sequence[str] | None = None) -> Episode:
        """Episode `index` with the videos of `cameras` only (default all; () for none, which skips
        video decoding: the fast way to get state, actions and labels)."""
        row = self._rows[self._check_index(index)]
        cameras = list(self.cameras) if cameras is None else list(cameras)
        unknown = set(cameras) - set(self.cameras)
        if unknown:
            raise ValueError(f"cameras {sorted(unknown)} are not in this dataset; it has {sorted(self.cameras)}")
        arrays = self._read_arrays(row)
        images = {
            camera: decode_video(
                self._video_path(row, camera), row[f"videos/{IMAGE_PREFIX}{camera}/from_timestamp"], row["length"]
            )
            for camera in cameras
        }
        meta = self._meta(row)
        return Episode(
            task=meta["task"],
            instruction=meta["instruction"],
            seed=meta["seed"],
            success=meta["success"],
            reward=meta["reward"],
            end_reason=meta["end_reason"],
            images=images,
            state=arrays.pop(STATE_KEY),
            actions=arrays.pop(ACTION_KEY),
            policy_version=meta["policy_version"],
            group_id=meta["group_id"],
            episode_id=meta["episode_id"],
            evaluation=meta["evaluation"],
            extras=arrays,
        )

    def stats(self) -> dict[str, Stats]:
        """Per-feature statistics pooled over all episodes (what stats.json holds)."""
        return {key: dict(value) for key, value in self._stats.items()}

    def episode_stats(self, index: int) -> dict[str, Stats]:
        """Per-feature statistics of one episode (stored in its row when it was written)."""
        row = self._full_row(self._check_index(index))
        keys = [k for k in self.features if k not in INDEX_FEATURES and f"stats/{k}/mean" in row]
        return {
            key: {stat: np.asarray(row[f"stats/{key}/{stat}"], np.float64).reshape(-1) for stat in STAT_KEYS}
            for key in keys
        }

    # ------------------------------------------------------------------ writing
    def append(self, episode: Episode) -> int:
        """Write `episode` atomically (all of it or none of it); return its episode index."""
        return self._append(episode, episode.digest())

    def _append(self, episode: Episode, digest: str) -> int:
        """append, storing `digest` as the episode's identity (merge keeps its source's)."""
        self._check_ours()
        self._check_compatible(episode)
        arrays = {STATE_KEY: episode.state, ACTION_KEY: episode.actions, **episode.extras}
        stats = {key: feature_stats(value) for key, value in arrays.items()}
        stats |= {f"{IMAGE_PREFIX}{cam}": image_stats(frames) for cam, frames in episode.images.items()}
        video = self.video_config

        def write_video(camera: str, tmp: Path) -> None:
            encode_video(tmp, episode.images[camera], self.fps, video)

        labels = {
            "task_name": episode.task,
            "seed": int(episode.seed),
            "success": bool(episode.success),
            "reward": float(episode.reward),
            "end_reason": episode.end_reason,
            "policy_version": int(episode.policy_version),
            "group_id": episode.group_id,
            "episode_id": episode.episode_id,
            "evaluation": bool(episode.evaluation),
        }
        return self._commit(arrays, episode.instruction, labels, stats, digest, write_video)

    def relabel(self, index: int, *, success: bool, reward: float | None = None) -> None:
        """Persistently change an episode's success label (an operator's correction); `reward`
        defaults to the binary reward of the new label (1.0 / 0.0) and must be finite: NaN or inf would
        poison every mean the learner and the tools take over rewards."""
        if reward is not None and not math.isfinite(reward):
            raise ValueError(f"reward {reward} is not a finite number; give the episode's reward, e.g. 1.0 or 0.0")
        with self._writer_lock():
            self.refresh()
            index = self._check_index(index)
            if "success" not in self._rows[index]:
                raise DatasetError(
                    f"episode {index} of {self.root} was recorded without labels (not by vla_rl_ros); "
                    "merge the dataset into one of ours with `vla-rl dataset merge`, then relabel there"
                )
            path = self._row_path(index)
            (row,) = _read_rows(path, with_stats=True)
            row["success"] = bool(success)
            row["reward"] = float(success) if reward is None else float(reward)
            write_parquet(path, self._row_table(row))
            self._rows[index] = _without_stats(row)

    def append_from(self, source: EpisodeDataset, index: int) -> int:
        """Copy episode `index` of `source` (same schema) without re-encoding its videos, when both
        use the same video settings; return the new index here. Used by merge, so merged episodes
        stay bit-identical to the originals. The copy keeps the source's digest, re-encoded or not, so
        that a later merge of the same source recognises it (re-encoded frames digest differently)."""
        self._check_ours()
        self.check_same_schema(source)
        row = source._rows[source._check_index(index)]
        if not _owns_files(source, row) or source.video_config != self.video_config:
            episode = source[index]  # decoded, then encoded with this dataset's settings
            return self._append(episode, row.get("digest") or episode.digest())
        arrays = source._read_arrays(row)
        stats = source.episode_stats(index)
        labels = {key: row[key] for key in LABEL_COLUMNS}

        def copy_video(camera: str, tmp: Path) -> None:
            shutil.copyfile(source._video_path(row, camera), tmp)

        return self._commit(arrays, row["tasks"][0], labels, stats, row["digest"], copy_video)

    # ------------------------------------------------------------------ internals
    def _commit(
        self,
        arrays: dict[str, np.ndarray],
        instruction: str,
        labels: dict,
        stats: dict[str, Stats],
        digest: str,
        write_video: Callable[[str, Path], None],
    ) -> int:
        """The one write path: data, videos, task, then the episode row (the commit), then derived."""
        T = len(arrays[STATE_KEY])
        with self._writer_lock():
            self._recover(everywhere=False)  # leftovers of a crashed writer, stale derived files
            index = len(self._rows)
            where = chunk_file(index)
            start = self._rows[-1]["dataset_to_index"] if self._rows else 0
            row: dict = {
                "episode_index": index,
                "tasks": [instruction],
                "length": T,
                "data/chunk_index": where["chunk_index"],
                "data/file_index": where["file_index"],
                "dataset_from_index": start,
                "dataset_to_index": start + T,
            }
            try:
                if instruction not in self._tasks:
                    self._tasks[instruction] = len(self._tasks)
                    self._write_tasks()
                table = self._data_table(arrays, index, start, self._tasks[instruction])
                write_parquet(self.root / DATA_PATH.format(**where), table)
                for camera in self.cameras:
                    key = f"{IMAGE_PREFIX}{camera}"
                    with writing(self.root / VIDEO_PATH.format(video_key=key, **where)) as tmp:
                        write_video(camera, tmp)
                    row |= {
                        f"videos/{key}/chunk_index": where["chunk_index"],
                        f"videos/{key}/file_index": where["file_index"],
                        f"videos/{key}/from_timestamp": 0.0,
                        f"videos/{key}/to_timestamp": T / self.fps,
                    }
                row |= {
                    "meta/episodes/chunk_index": where["chunk_index"],
                    "meta/episodes/file_index": where["file_index"],
                }
                row |= labels | {"digest": digest}
                row |= {f"stats/{key}/{stat}": stats[key][stat].tolist() for key in stats for stat in STAT_KEYS}
                row_path = self.root / EPISODES_PATH.format(**where)
                write_parquet(row_path, self._row_table(row))  # the commit
            except BaseException:
                with contextlib.suppress(OSError):
                    self._remove_uncommitted(everywhere=False)  # all or nothing; give the space back now
                raise
            self._rows.append(_without_stats(row))
            st = row_path.stat()
            self._files.append((str(row_path.relative_to(self.root)), (st.st_mtime_ns, st.st_size), 1))
            self._stats = {key: pool([self._stats[key], st]) if key in self._stats else st for key, st in stats.items()}
            try:
                self._write_derived()
            except DatasetError as exc:  # the episode is saved: do not invite a retry that duplicates it
                warnings.warn(
                    f"episode {index} is saved, but {exc}; info.json and stats.json are repaired when the "
                    "dataset is next opened or appended to",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return index

    def _row_table(self, row: dict) -> pa.Table:
        """One episode row with a fixed schema, so LeRobot can concatenate all row files."""
        fields = []
        for key in row:
            if key == "tasks":
                typ = pa.list_(pa.string())
            elif key in LABEL_COLUMNS:
                typ = LABEL_COLUMNS[key]
            elif key == "digest":
                typ = pa.string()
            elif key.startswith("stats/"):
                typ = pa.list_(pa.float64())
            elif key.endswith("_timestamp"):
                typ = pa.float64()
            else:
                typ = pa.int64()
            fields.append(pa.field(key, typ))
        return pa.Table.from_pylist([row], schema=pa.schema(fields))

    def _data_table(self, arrays: dict[str, np.ndarray], index: int, start: int, task_index: int) -> pa.Table:
        T = len(arrays[STATE_KEY])
        frame_index = np.arange(T, dtype=np.int64)
        columns: dict[str, pa.Array] = {}
        for key, value in arrays.items():
            K = self.features[key]["shape"][0]
            flat = pa.array(value.reshape(-1), type=pa.float32())
            columns[key] = flat if K == 1 else pa.FixedSizeListArray.from_arrays(flat, K)
        columns["timestamp"] = pa.array((frame_index / self.fps).astype(np.float32))
        columns["frame_index"] = pa.array(frame_index)
        columns["episode_index"] = pa.array(np.full(T, index, dtype=np.int64))
        columns["index"] = pa.array(start + frame_index)
        columns["task_index"] = pa.array(np.full(T, task_index, dtype=np.int64))
        return pa.table(columns)

    def _read_arrays(self, row: dict) -> dict[str, np.ndarray]:
        """Per-frame float arrays of an episode: state (T, P), action (T, A), extras, bit-exact."""
        path = self.root / DATA_PATH.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        keys = [STATE_KEY, ACTION_KEY, *self.extra_keys]
        table = read_parquet(path, columns=[*keys, "episode_index"])
        table = table.filter(pc.equal(table["episode_index"], row["episode_index"]))
        if table.num_rows != row["length"]:
            raise DatasetError(
                f"corrupt dataset file {path}: {table.num_rows} frames of episode {row['episode_index']}, "
                f"expected {row['length']}"
            )
        arrays = {}
        for key in keys:
            column = table[key].combine_chunks()
            K = self.features[key]["shape"][0]
            values = column.to_numpy(zero_copy_only=False) if K == 1 else column.flatten().to_numpy()
            arrays[key] = values.astype(np.float32, copy=False).reshape(-1, K) if K > 1 else values
        return arrays

    def _row_path(self, index: int) -> Path:
        row = self._rows[index]
        where = {"chunk_index": row["meta/episodes/chunk_index"], "file_index": row["meta/episodes/file_index"]}
        return self.root / EPISODES_PATH.format(**where)

    def _full_row(self, index: int) -> dict:
        """Episode `index`'s row with its stats/ columns (from a file that may hold several rows)."""
        rows = [row for row in _read_rows(self._row_path(index), with_stats=True) if row["episode_index"] == index]
        if len(rows) != 1:
            raise DatasetError(f"corrupt dataset file {self._row_path(index)}: {len(rows)} rows for episode {index}")
        return rows[0]

    def _video_path(self, row: dict, camera: str) -> Path:
        key = f"{IMAGE_PREFIX}{camera}"
        return self.root / VIDEO_PATH.format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]
        )

    def _meta(self, row: dict) -> dict:
        """The row's labels; rows recorded without them get LABEL_DEFAULTS and digest None."""
        return {
            "episode_index": row["episode_index"],
            "task": row.get("task_name", row["tasks"][0]),
            "instruction": row["tasks"][0],
            "length": row["length"],
            **{key: row.get(key, default) for key, default in LABEL_DEFAULTS.items()},
            "digest": row.get("digest"),
        }

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"episode {index} out of range: the dataset has {len(self)} episodes")
        return index % len(self)

    def _check_compatible(self, episode: Episode) -> None:
        """The episode must match the schema fixed at create; say which part does not."""
        cams = {name: frames.shape[1:3] for name, frames in episode.images.items()}
        if cams != self.cameras:
            raise ValueError(f"episode cameras {cams} do not match the dataset's {self.cameras} (name -> (H, W))")
        for key, value in ((STATE_KEY, episode.state), (ACTION_KEY, episode.actions)):
            if value.shape[1] != self.features[key]["shape"][0]:
                raise ValueError(f"{key} has {value.shape[1]} dims, the dataset has {self.features[key]['names']}")
        if set(episode.extras) != set(self.extra_keys):
            raise ValueError(f"episode extras {sorted(episode.extras)} != dataset extras {self.extra_keys}")
        for key, value in episode.extras.items():
            K = self.features[key]["shape"][0]
            if value.shape[1:] != (() if K == 1 else (K,)):
                raise ValueError(
                    f"extras[{key!r}] shape {value.shape} does not fit names {self.features[key]['names']}"
                )

    def _check_ours(self) -> None:
        """Only datasets of ours take appends: extra label columns in a LeRobot-written dataset's
        episode files would stop LeRobot from reading it."""
        if PROJECT_KEY not in self.info:
            raise DatasetError(
                f"{self.root} was written by another tool (LeRobot?); append to a dataset of ours instead: "
                f"`vla-rl dataset merge NEW {self.root}` makes one with all its episodes"
            )

    def check_same_schema(self, other: EpisodeDataset) -> None:
        """DatasetError unless `other` has this dataset's features and fps (what append_from needs)."""
        mine = {k: (v["dtype"], v["shape"], v["names"]) for k, v in self.features.items()}
        theirs = {k: (v["dtype"], v["shape"], v["names"]) for k, v in other.features.items()}
        if mine != theirs or self.fps != other.fps:
            raise DatasetError(f"{other.root} has other features or fps than {self.root}; they cannot be merged")

    def _write_tasks(self) -> None:
        write_parquet(self.root / TASKS_PATH, _tasks_table(self._tasks))

    def _write_derived(self) -> None:
        """info.json totals and stats.json, both computed from the committed rows."""
        for camera in self.cameras if self._rows else ():
            ft = self.features[f"{IMAGE_PREFIX}{camera}"]
            if "info" not in ft:
                ft["info"] = video_info(self._video_path(self._rows[0], camera), self.fps, self.video_config)
        self.info |= {
            "total_episodes": len(self._rows),
            "total_frames": self.num_frames,
            "total_tasks": len(self._tasks),
            "splits": {"train": f"0:{len(self._rows)}"} if self._rows else {},
        }
        write_json(self.root / STATS_PATH, _stats_json(self._stats, self.features))
        write_json(self.root / INFO_PATH, self.info)

    def _remove_uncommitted(self, everywhere: bool = True) -> None:
        """Delete temporary files, and numbered files that no committed row references. An append
        (everywhere=False) looks only where its own leftovers can be: meta/ and the chunks from the
        next episode's on, so its cost does not grow with the dataset."""
        n = len(self._rows)
        first_chunk = 0 if everywhere else chunk_file(n)["chunk_index"]
        folders = [self.root / "meta", self.root / "data", *(self.root / "videos").glob("*")]
        for folder in folders:
            for chunk in folder.glob("**/chunk-*") if folder.name == "meta" else folder.glob("chunk-*"):
                if int(chunk.name.removeprefix("chunk-")) < first_chunk:
                    continue
                for path in chunk.iterdir():
                    numbered = path.name.startswith("file-") and path.suffix in (".parquet", ".mp4")
                    if is_tmp(path) or (numbered and file_episode_index(path) >= n):
                        path.unlink()
        for path in (self.root / "meta").iterdir():
            if is_tmp(path):
                path.unlink()

    def _remove_uncommitted_tasks(self) -> None:
        """Drop the instructions that appends killed before their commit added to tasks.parquet (written
        before the commit, so that no committed episode's task is ever missing from it): the last task
        indices, used by no committed row. An unused one below a used index stays: task indices are rows
        of LeRobot's task table, not renumbered without rewriting every data file."""
        used = {task for row in self._rows for task in row["tasks"]}
        tasks = dict(self._tasks)
        while tasks and (last := max(tasks, key=tasks.__getitem__)) not in used:
            del tasks[last]
        if len(tasks) < len(self._tasks):
            self._tasks = tasks
            self._write_tasks()

    def _read_index_cache(self) -> dict[str, tuple[tuple[int, int], list[dict]]]:
        """row file -> ((mtime_ns, size) when cached, its rows); {} if there is none or it is
        unreadable (the cache is derived: a bad one is ignored and rewritten)."""
        path = self.root / INDEX_CACHE_PATH
        if not path.is_file():
            return {}
        try:
            rows = read_parquet(path).to_pylist()
        except DatasetError:
            return {}
        cache: dict[str, tuple[tuple[int, int], list[dict]]] = {}
        for row in rows:
            name, mtime_ns, size = (row.pop(c) for c in CACHE_COLUMNS)
            cache.setdefault(name, ((mtime_ns, size), []))[1].append(row)
        return cache

    def _write_index_cache(self) -> None:
        rows = []
        start = 0
        for name, (mtime_ns, size), count in self._files:
            stamp = dict(zip(CACHE_COLUMNS, (name, mtime_ns, size), strict=True))
            rows += [row | stamp for row in self._rows[start : start + count]]
            start += count
        write_parquet(self.root / INDEX_CACHE_PATH, pa.Table.from_pylist(rows))

    def _recover(self, everywhere: bool = True) -> None:
        """Remove what a crashed writer left; rewrite info.json/stats.json if they are stale. Under the
        writer lock, and from rows read under it: rows read before it was taken may miss an episode a
        writer committed meanwhile, whose files would then be deleted as uncommitted."""
        self.refresh()
        self._remove_uncommitted(everywhere)
        self._remove_uncommitted_tasks()
        on_disk = (self.info.get("total_episodes"), self.info.get("total_frames"), self.info.get("total_tasks"))
        if on_disk != (len(self._rows), self.num_frames, len(self._tasks)) or self._stats_damaged:
            self._stats = self._pooled_stats()
            self._write_derived()
            self._stats_damaged = False

    @contextlib.contextmanager
    def _writer_lock(self, blocking: bool = True) -> Iterator[None]:
        """Exclusive across processes (flock on <root>/.writer.lock); re-entrant within this object."""
        if self._lock_fd is not None:
            yield
            return
        path = self.root / LOCK_PATH
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DatasetError(f"cannot write {path}: {exc.strerror}; the dataset root must be writable") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)  # closing releases the flock


def _owns_files(ds: EpisodeDataset, row: dict) -> bool:
    """True when the episode's data and videos are files of its own (how this module writes)."""
    own = chunk_file(row["episode_index"])
    keys = ["data", *(f"videos/{IMAGE_PREFIX}{cam}" for cam in ds.cameras)]
    return PROJECT_KEY in ds.info and all(
        row[f"{k}/chunk_index"] == own["chunk_index"] and row[f"{k}/file_index"] == own["file_index"] for k in keys
    )


def _read_rows(path: Path, *, with_stats: bool) -> list[dict]:
    """Episode rows of a meta/episodes file, with or without the (bulky) stats/ columns."""

    def reader(p: Path) -> list[dict]:
        parquet = pq.ParquetFile(p)  # faster than pq.read_table for many small files
        names = [n for n in parquet.schema_arrow.names if with_stats or not n.startswith("stats/")]
        return parquet.read(columns=names).to_pylist()

    return read_file(path, reader)


def _without_stats(row: dict) -> dict:
    return {key: value for key, value in row.items() if not key.startswith("stats/")}


def _stats_from_json(data: dict, features: dict[str, dict]) -> dict[str, Stats]:
    """Inverse of _stats_json: every stat a flat float64 array."""
    return {
        key: {stat: np.asarray(value, np.float64).reshape(-1) for stat, value in stats.items()}
        for key, stats in data.items()
        if key in features
    }


def _stats_json(stats: dict[str, Stats], features: dict[str, dict]) -> dict:
    """stats.json form: images as (3, 1, 1) per-channel lists, as LeRobot's loader expects."""
    out = {}
    for key, feature_stats_ in stats.items():
        video = features[key]["dtype"] == "video"
        out[key] = {
            stat: (value.reshape(3, 1, 1) if video and stat != "count" else value).tolist()
            for stat, value in feature_stats_.items()
        }
        out[key]["count"] = [int(c) for c in feature_stats_["count"]]
    return out


def _tasks_table(tasks: dict[str, int]) -> pa.Table:
    """tasks.parquet as LeRobot writes it with pandas: task_index column, the task text as the index.
    The pandas metadata is what makes pandas.read_parquet restore the task text as the index."""
    names = list(tasks)
    table = pa.table(
        {"task_index": pa.array([tasks[t] for t in names], pa.int64()), "task": pa.array(names, pa.string())}
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _read_tasks(path: Path) -> dict[str, int]:
    table = read_parquet(path)
    text = "task" if "task" in table.column_names else "__index_level_0__"  # ours | LeRobot's
    return dict(zip(table[text].to_pylist(), table["task_index"].to_pylist(), strict=True))
