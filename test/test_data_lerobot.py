"""LeRobot itself reads what we write: its LeRobotDataset loads our dataset from a local root.

lerobot is not a dependency of this project (it pins torch < 2.11 and pulls a large stack), so this
test is skipped unless lerobot is importable; the developer report says how it was run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_data_format import ACTION_NAMES, CAMERAS, EXTRAS, STATE_NAMES, make_episode, render

from vla_rl_ros.data import DatasetError, EpisodeDataset, VideoConfig
from vla_rl_ros.data.tools import merge, verify
from vla_rl_ros.data.video import psnr

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


def test_we_read_and_merge_a_dataset_lerobot_wrote(tmp_path: Path) -> None:
    """LeRobot's own writer packs several episodes per file (and AV1 video): our reader follows the
    rows' file pointers and timestamps, gives unlabelled episodes LABEL_DEFAULTS, and merge turns
    them into episodes of ours."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.front": {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["a", "b", "c"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    root = tmp_path / "lerobot"
    lr = LeRobotDataset.create("local/written_by_lerobot", fps=10, features=features, root=root, use_videos=True)
    lengths = [5, 6, 7]
    frames = render(sum(lengths), 64, 64, seed=0)
    rng = np.random.default_rng(0)
    states = rng.standard_normal((sum(lengths), 3)).astype(np.float32)
    actions = rng.standard_normal((sum(lengths), 2)).astype(np.float32)
    t = 0
    for e, T in enumerate(lengths):
        for _ in range(T):
            lr.add_frame(
                {
                    "observation.images.front": frames[t],
                    "observation.state": states[t],
                    "action": actions[t],
                    "task": f"task {e % 2}",
                }
            )
            t += 1
        lr.save_episode()
    lr.finalize()
    assert len(list((root / "data").rglob("*.parquet"))) == 1  # all episodes in one file

    ds = EpisodeDataset.open(root)
    assert len(ds) == 3 and ds.num_frames == 18
    meta = ds.episodes_meta()[1]
    assert (meta["task"], meta["instruction"], meta["success"], meta["digest"]) == ("task 1", "task 1", True, None)
    second = ds[1]
    np.testing.assert_array_equal(second.state, states[5:11])
    np.testing.assert_array_equal(second.actions, actions[5:11])
    assert second.images["front"].shape == (6, 64, 64, 3)
    assert psnr(frames[5:11], second.images["front"]) > 25.0  # LeRobot's AV1 at crf 30 is lossier
    assert verify(ds) == []
    with pytest.raises(DatasetError, match="recorded without labels"):
        ds.relabel(1, success=False)
    with pytest.raises(DatasetError, match="written by another tool"):
        ds.append(second)

    assert merge(tmp_path / "ours", [root]).added == 3
    ours = EpisodeDataset.open(tmp_path / "ours")
    np.testing.assert_array_equal(ours[2].actions, actions[11:])
    ours.relabel(2, success=False)
    assert EpisodeDataset.open(tmp_path / "ours").episodes_meta()[2]["success"] is False
    assert merge(tmp_path / "ours", [root]).duplicates == 3  # same decoded content, same digest
