"""LeRobot itself reads what we write: its LeRobotDataset loads our dataset from a local root; and we
read what LeRobot writes.

lerobot is not a dependency of the package: scripts/setup.sh installs its dataset code for this test
with --no-deps (requirements/lerobot.txt says why: its pins exclude torch 2.13 and transformers 5).
Its video decoding (torchcodec, with FFmpeg's shared libraries) is not installed, so that test skips."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_data_format import ACTION_NAMES, CAMERAS, EXTRAS, STATE_NAMES, make_episode, render

from vla_rl_ros.data import DatasetError, Episode, EpisodeDataset, VideoConfig
from vla_rl_ros.data.tools import export_npz, merge, verify
from vla_rl_ros.data.video import psnr

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lerobot") is None,
    reason="lerobot is not installed (bash scripts/setup.sh installs it: requirements/lerobot.txt)",
)

REPO_ID = "local/vla_rl_ros_test"
LENGTHS = [6, 7, 8]


@functools.cache
def _torchvision_loads() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):  # RuntimeError: a CUDA torchvision on the CPU torch
        for name in [n for n in sys.modules if n.partition(".")[0] == "torchvision"]:
            del sys.modules[name]
        return False
    return True


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, "An empty stand-in for torchvision (test_data_lerobot.py).")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def missing(attribute: str) -> None:
        raise AttributeError(f"{name}.{attribute}: torchvision does not load here; test_data_lerobot.py "
                             "put an empty stand-in in its place, and LeRobot used it")

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


@pytest.fixture(autouse=True)
def torchvision_or_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """lerobot/datasets/utils.py and video_utils.py import torchvision at the top, and no torchvision
    from PyPI loads on the pinned CPU torch (requirements/lerobot.txt says why). Reading and writing
    a dataset whose images are videos calls none of it, so where torchvision does not load an empty
    module stands in for it during these tests: any use of it raises AttributeError."""
    if _torchvision_loads():
        return
    torchvision = _stand_in("torchvision")
    torchvision.transforms = _stand_in("torchvision.transforms")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", torchvision.transforms)  # type: ignore[attr-defined]


@pytest.fixture(params=["yuv420p", "yuv444p"])
def ours(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, EpisodeDataset, list[Episode]]]:
    """Three episodes of ours (6, 7 and 8 frames, two cameras, extras) in a dataset of ours."""
    root = tmp_path / "ds"
    ds = EpisodeDataset.create(
        root,
        fps=10,
        cameras=CAMERAS,
        state_names=STATE_NAMES,
        action_names=ACTION_NAMES,
        extras=EXTRAS,
        video=VideoConfig(pix_fmt=request.param),
    )
    episodes = [make_episode(seed, T=T) for seed, T in enumerate(LENGTHS)]
    for ep in episodes:
        ds.append(ep)
    yield root, ds, episodes


def test_lerobot_loads_our_dataset(ours: tuple[Path, EpisodeDataset, list[Episode]]) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    root, _, episodes = ours
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    assert (meta.total_episodes, meta.total_frames, meta.fps) == (3, 21, 10)
    assert meta.video_keys == ["observation.images.front", "observation.images.wrist"]
    assert tuple(meta.features["observation.images.wrist"]["shape"]) == (64, 96, 3)
    assert meta.names["observation.state"] == STATE_NAMES
    assert meta.names["action"] == ACTION_NAMES
    assert meta.shapes["ee_pose"] == (3,)
    assert meta.get_task_index("push the red cube (1)") == 1
    assert meta.episodes["success"] == [False, True, True]
    assert meta.episodes["length"] == LENGTHS

    lr = LeRobotDataset(REPO_ID, root=root, download_videos=False)
    assert (lr.num_episodes, lr.num_frames) == (3, 21)
    frames = lr.hf_dataset.with_format("numpy")[:]
    np.testing.assert_array_equal(frames["observation.state"], np.concatenate([e.state for e in episodes]))
    np.testing.assert_array_equal(frames["action"], np.concatenate([e.actions for e in episodes]))
    np.testing.assert_array_equal(frames["ee_pose"], np.concatenate([e.extras["ee_pose"] for e in episodes]))
    np.testing.assert_array_equal(frames["episode_index"], np.repeat([0, 1, 2], LENGTHS))
    np.testing.assert_array_equal(frames["task_index"], np.repeat([0, 1, 2], LENGTHS))
    np.testing.assert_array_equal(frames["frame_index"], np.concatenate([np.arange(T) for T in LENGTHS]))

    # One episode, as a user selects it.
    one = LeRobotDataset(REPO_ID, root=root, episodes=[1], download_videos=False)
    assert (one.num_episodes, one.num_frames) == (1, 7)
    frames = one.hf_dataset.with_format("numpy")[:]
    np.testing.assert_array_equal(frames["observation.state"], episodes[1].state)
    np.testing.assert_array_equal(frames["action"], episodes[1].actions)
    np.testing.assert_allclose(frames["timestamp"], np.arange(7) / 10, atol=1e-6)


@pytest.mark.skipif(
    importlib.util.find_spec("torchcodec") is None,
    reason="LeRobot decodes video with torchcodec, not installed: it needs FFmpeg's shared libraries "
    "(a system install), and PyPI's builds after 0.13.0 are CUDA ones",
)
def test_lerobot_decodes_our_videos(ours: tuple[Path, EpisodeDataset, list[Episode]]) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, ds, episodes = ours
    lr = LeRobotDataset(REPO_ID, root=root, download_videos=False)
    item = lr[6 + 2]  # episode 1, frame 2
    assert item["task"] == "push the red cube (1)"
    np.testing.assert_array_equal(item["action"].numpy(), episodes[1].actions[2])
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
    # Exported flat, its episodes' missing digests are "" (an object array of None needs pickle to load)
    with np.load(export_npz(ds, tmp_path / "flat.npz")) as flat:
        assert flat["episode/digest"].tolist() == ["", "", ""]
        assert flat["episode/instruction"].tolist() == ["task 0", "task 1", "task 0"]
