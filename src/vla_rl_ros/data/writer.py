"""The recorder's episode writer without ROS: appends finished episodes to a dataset on disk (and, with
a bag folder, each as a rosbag2 MCAP) on a thread of its own.

Writing: finished episodes go through a queue to a writer thread (an append encodes videos for
seconds; no message is missed meanwhile), which creates the dataset with the first episode's camera
sizes if the root holds none, and appends atomically. Relabels go through the same queue, so a label
for an episode still waiting is applied after it is written. On shutdown the queue is drained: a
finished episode is never lost to Ctrl-C; kill -9 loses at most the episodes still queued, never
an earlier one (appends are atomic), and a restarted recorder (the launch files respawn it) appends
to the same dataset; the episode under way at the kill is lost (it was not seen from step 0).
With bag_dir set, each episode is also written as a rosbag2 MCAP (data.bag.export_mcap: cameras,
joint_states, actions, instruction, success, reward, labels). A starting recorder removes the staging
folders (<bag_dir>/episode_*.tmp-<pid>) of exports a kill cut short and writes those bags again.
"""

from __future__ import annotations

import queue
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from vla_rl_ros.data.atomic import TMP_MARKER, DatasetError, SchemaError, writer_gone
from vla_rl_ros.data.bag import export_mcap
from vla_rl_ros.data.dataset import ACTION_KEY, STATE_KEY, EpisodeDataset
from vla_rl_ros.data.episode import Episode
from vla_rl_ros.data.video import VideoConfig

BAG_PREFIX = "episode_"  # <bag_dir>/episode_<6-digit index>: the bag of the dataset's episode <index>


class EpisodeWriter:
    """Owns the dataset: appends and relabels run in order on one thread, fed by a queue.

    `submit(episode, action_names)` returns at once; `relabel(...)` returns a Future of (accepted,
    message); `close()` writes everything still queued, then joins the thread. Opening a root that
    holds another recorder's episodes raises SchemaError; one it cannot read, DatasetError or OSError.
    `action_names`: the names of the actions this recorder can record, one tuple per action dim its
    robot takes (ee_delta: 4 or 7); the dataset's must be one of them."""

    def __init__(self, root: Path, *, fps: int, cameras: list[str], state_names: tuple[str, ...],
                 action_names: list[tuple[str, ...]], robot_type: str, video: VideoConfig, bag_dir: Path | None,
                 namespace: str, log: Callable[[str, str], None]) -> None:
        self.root, self.fps, self.cameras, self.state_names = root, fps, cameras, state_names
        self.action_names = action_names
        self.robot_type, self.video, self.bag_dir, self.namespace, self.log = robot_type, video, bag_dir, namespace, log
        self.ds: EpisodeDataset | None = None
        self.last_id = ""  # the episode this writer wrote last, for a relabel with an empty id
        if (root / "meta" / "info.json").is_file():
            self.ds = EpisodeDataset.open(root)  # also removes what a killed append left
            self.check_schema(self.ds)
        else:
            root.mkdir(parents=True, exist_ok=True)
        self.jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        if bag_dir is not None:
            self.recover_bags(bag_dir)
        self.thread = threading.Thread(target=self.run, name="episode_writer", daemon=True)
        self.thread.start()

    def check_schema(self, ds: EpisodeDataset) -> None:
        """SchemaError unless this recorder's episodes fit the dataset: refused at start rather than at every
        append. Image sizes and which of the robot's action dims the policy sends show only with the first
        image and chunk: FrameAligner refuses those."""
        state, actions = tuple(ds.features[STATE_KEY]["names"]), tuple(ds.features[ACTION_KEY]["names"])
        differs = []
        if sorted(ds.cameras) != sorted(self.cameras):
            differs.append(f"cameras {sorted(ds.cameras)}, this recorder makes {sorted(self.cameras)}")
        if ds.fps != self.fps:
            differs.append(f"{ds.fps} fps, this recorder makes {self.fps}")
        if state != self.state_names:
            differs.append(f"state {list(state)}, this recorder makes {list(self.state_names)}")
        if actions not in self.action_names:
            differs.append(f"actions {list(actions)}, this recorder's robot sends "
                           f"{' or '.join(str(list(names)) for names in self.action_names)}")
        if differs:
            raise SchemaError(f"dataset {self.root} holds {'; '.join(differs)}: choose another dataset root")

    def recover_bags(self, bag_dir: Path) -> None:
        """Remove the staging folders of bags whose export a kill -9 cut short (export_mcap writes
        <bag>.tmp-<pid> and renames it when complete) and queue those episodes' bags again, so that
        every episode in the dataset keeps its bag. A live process's staging folder is left alone."""
        for tmp in sorted(bag_dir.glob(f"{BAG_PREFIX}*{TMP_MARKER}*")):
            if not writer_gone(tmp):
                continue
            try:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            except OSError as exc:
                self.log("error", f"cannot remove {tmp}, left by a killed recorder: {exc}")
                continue
            name = tmp.name.partition(TMP_MARKER)[0]
            index = name.removeprefix(BAG_PREFIX)
            again = index.isdigit() and self.ds is not None and int(index) < len(self.ds) and \
                not (bag_dir / name).exists()
            self.log("warning", f"removed {tmp}, left by a recorder killed while writing that bag"
                                f"{f'; writing the bag of episode #{int(index)} again' if again else ''}")
            if again:
                self.jobs.put(("bag", (int(index),)))

    @property
    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """camera -> (H, W) the dataset holds ({} before it exists)."""
        return self.ds.cameras if self.ds is not None else {}

    @property
    def dataset_action_names(self) -> tuple[str, ...]:
        """The names of the actions the dataset holds (() before it exists)."""
        return tuple(self.ds.features[ACTION_KEY]["names"]) if self.ds is not None else ()

    def backlog(self) -> int:
        """Jobs queued or running."""
        return self.jobs.unfinished_tasks

    def submit(self, episode: Episode, names: tuple[str, ...]) -> None:
        self.jobs.put(("append", (episode, names)))

    def relabel(self, episode_id: str, success: bool) -> Future:
        """Relabel after the appends queued before it; an empty id is the last episode written by then."""
        done: Future = Future()
        self.jobs.put(("relabel", (episode_id, success, done)))
        return done

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            kind, args = job
            try:
                if kind == "append":
                    self.append(*args)
                elif kind == "bag":
                    self.write_bag(*args)
                else:
                    self.do_relabel(*args)
            except Exception as exc:  # a bug in one job must not silently stop every later write
                self.log("error", f"writer {kind} job failed: {exc!r}")
                if kind == "relabel" and not args[-1].done():
                    args[-1].set_result((False, f"relabel failed: {exc!r}"))
            self.jobs.task_done()

    def append(self, episode: Episode, names: tuple[str, ...]) -> None:
        try:
            if self.ds is None:
                self.ds = EpisodeDataset.create(
                    self.root, fps=self.fps, cameras={c: episode.images[c].shape[1:3] for c in self.cameras},
                    state_names=self.state_names, action_names=names, robot_type=self.robot_type, video=self.video)
            if any(m["episode_id"] == episode.episode_id for m in self.ds.episodes_meta()):
                self.log("warning", f"episode {episode.episode_id} is already in {self.root}; not written again")
                return
            index = self.ds.append(episode)
            self.last_id = episode.episode_id
        except (DatasetError, OSError, ValueError) as exc:
            self.log("error", f"episode {episode.episode_id} NOT written to {self.root}: {exc}")
            return
        self.log("info", f"episode {episode.episode_id} written as #{index} ({episode.length} frames, "
                         f"{'success' if episode.success else episode.end_reason})")
        self.write_bag(index)

    def write_bag(self, index: int) -> None:
        """Episode #index as a rosbag2 MCAP in bag_dir, if there is one."""
        if self.bag_dir is None or self.ds is None:
            return
        try:
            bag = export_mcap(self.ds, self.bag_dir / f"{BAG_PREFIX}{index:06d}", namespace=self.namespace,
                              episodes=[index])
        except (DatasetError, OSError, ValueError) as exc:
            self.log("error", f"bag of episode #{index} not written: {exc}")
        else:
            self.log("info", f"episode #{index} also in {bag}")

    def do_relabel(self, episode_id: str, success: bool, done: Future) -> None:
        try:
            if self.ds is None or len(self.ds) == 0:
                raise KeyError(f"no episode is recorded in {self.root} yet")
            episode_id = episode_id or self.last_id
            index = self.ds.index_of(episode_id) if episode_id else len(self.ds) - 1
            self.ds.relabel(index, success=success)
        except (KeyError, DatasetError, OSError) as exc:
            done.set_result((False, str(exc).strip("'\"")))
            return
        self.log("info", f"episode #{index} ({episode_id or 'the last'}) relabelled success={success}")
        done.set_result((True, f"episode #{index} of {self.root} now has success={success}"))
