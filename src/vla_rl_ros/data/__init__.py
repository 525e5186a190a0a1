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

from vla_rl_ros.data.atomic import DatasetError
from vla_rl_ros.data.dataset import EpisodeDataset
from vla_rl_ros.data.episode import END_REASONS, Episode, EpisodeBuilder
from vla_rl_ros.data.video import VideoConfig

__all__ = ["END_REASONS", "DatasetError", "Episode", "EpisodeBuilder", "EpisodeDataset", "VideoConfig"]
