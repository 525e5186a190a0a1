"""Reward-labelled episodes on disk in the LeRobotDataset v3.0 layout (no rclpy here).

`Episode` is one episode in memory; `EpisodeDataset` creates, opens, appends (atomically) and reads
datasets; `DatasetError` names the file when something on disk is missing, corrupt or unwritable."""

from vla_rl_ros.data.atomic import DatasetError
from vla_rl_ros.data.dataset import EpisodeDataset
from vla_rl_ros.data.episode import END_REASONS, Episode, EpisodeBuilder
from vla_rl_ros.data.video import VideoConfig

__all__ = ["END_REASONS", "DatasetError", "Episode", "EpisodeBuilder", "EpisodeDataset", "VideoConfig"]
