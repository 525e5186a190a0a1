"""Reward-labelled episodes on disk in the LeRobotDataset v3.0 layout (no rclpy here).

    ds = EpisodeDataset.create(root, fps=10, cameras={"front": (64, 64)},
                               state_names=STATE_NAMES, action_names=action_names("ee_delta"))
    index = ds.append(Episode(task=..., instruction=..., seed=..., success=..., reward=...,
                              end_reason="success", images={"front": frames}, state=..., actions=...))
    ds = EpisodeDataset.open(root)              # another process, later
    episode = ds[index]                          # or ds.read(index, cameras=()) without videos
    ds.relabel(index, success=False)             # an operator's correction, persistent

`Episode` is one episode in memory, `EpisodeBuilder` collects one frame by frame; `EpisodeDataset`
creates, opens, appends (atomically: a crash or kill -9 never damages committed episodes), reads and
relabels; `DatasetError` names the file when something on disk is missing, corrupt or unwritable.
`vla-rl dataset info|stats|merge|relabel|export|verify` is the command line (vla_rl_ros.data.cli)."""

import importlib
from typing import Any

# Name -> submodule, imported on first use (PEP 562): rl/ writes through data.atomic and checks end
# reasons against data.episode, and importing the learner must not import pyarrow and av for that.
_EXPORTS = {
    "DatasetError": "atomic",
    "EpisodeDataset": "dataset",
    "END_REASONS": "episode", "Episode": "episode", "EpisodeBuilder": "episode",
    "VideoConfig": "video",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = ["END_REASONS", "DatasetError", "Episode", "EpisodeBuilder", "EpisodeDataset", "VideoConfig"]
