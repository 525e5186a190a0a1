"""LeRobot itself reads what we write: its LeRobotDataset loads our dataset from a local root.

lerobot is not a dependency of this project (it pins torch < 2.11 and pulls a large stack), so this
test is skipped unless lerobot is importable; the developer report says how it was run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_data_format import ACTION_NAMES, CAMERAS, EXTRAS, STATE_NAMES, make_episode

from vla_rl_ros.data import EpisodeDataset, VideoConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lerobot") is None,
    reason="lerobot is not installed (optional: pip install --no-deps lerobot, plus datasets, huggingface-hub<0.36, "
    "draccus, torchvision, and torchcodec for its video decoding)",
)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_lerobot_loads_our_dataset(tmp_path: Path, pix_fmt: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    root = tmp_path / "ds"
    ds = EpisodeDataset.create(
        root,
        fps=10,
        cameras=CAMERAS,
        state_names=STATE_NAMES,
        action_names=ACTION_NAMES,
        extras=EXTRAS,
        video=VideoConfig(pix_fmt=pix_fmt),
    )
    episodes = [make_episode(seed, T=6 + seed) for seed in range(3)]
    for ep in episodes:
        ds.append(ep)

    meta = LeRobotDatasetMetadata("local/vla_rl_ros_test", root=root)
    assert (meta.total_episodes, meta.total_frames, meta.fps) == (3, 21, 10)
    assert meta.video_keys == ["observation.images.front", "observation.images.wrist"]
    assert meta.get_task_index("push the red cube (1)") == 1
    assert meta.episodes["success"] == [False, True, True]

    lr = LeRobotDataset("local/vla_rl_ros_test", root=root, download_videos=False)
    assert (lr.num_episodes, lr.num_frames) == (3, 21)
    frames = lr.hf_dataset.with_format("numpy")[:]
    np.testing.assert_array_equal(frames["observation.state"], np.concatenate([e.state for e in episodes]))
    np.testing.assert_array_equal(frames["action"], np.concatenate([e.actions for e in episodes]))
    np.testing.assert_array_equal(frames["episode_index"], np.repeat([0, 1, 2], [6, 7, 8]))
    np.testing.assert_array_equal(frames["task_index"], np.repeat([0, 1, 2], [6, 7, 8]))
    if importlib.util.find_spec("torchcodec") is None:
        pytest.skip("metadata and frames load in LeRobot; its video decoding needs torchcodec (not installed)")
    item = lr[6 + 2]  # episode 1, frame 2
    assert item["task"] == "push the red cube (1)"
    image = (item["observation.images.front"].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(image - ds[1].images["front"][2]).mean() < 2.0
