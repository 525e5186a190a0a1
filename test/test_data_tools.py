"""`vla-rl dataset` tools: merge keeps every episode once (bit-identical videos, or re-encoded with the
destination's settings) and checks every source before it writes, info/stats/relabel/export/verify
through the real command line entry point; bad input gets one line naming the problem and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from test_data_format import ACTION_NAMES, CAMERAS, EXTRAS, STATE_NAMES, assert_same, create, make_episode

from vla_rl_ros.cli import main as vla_rl
from vla_rl_ros.data import DatasetError, EpisodeDataset, VideoConfig
from vla_rl_ros.data.tools import MergeResult, merge


def build(root: Path, seeds: list[int]) -> EpisodeDataset:
    ds = create(root)
    for seed in seeds:
        ds.append(make_episode(seed))
    return ds


def test_merge_keeps_every_episode_once(tmp_path: Path) -> None:
    a = build(tmp_path / "a", [0, 1, 2])
    build(tmp_path / "b", [2, 3])  # episode of seed 2 is in both
    result = merge(tmp_path / "out", [tmp_path / "a", tmp_path / "b", tmp_path / "a"])
    assert (result.added, result.duplicates) == (4, 4)
    out = EpisodeDataset.open(tmp_path / "out")
    assert [m["seed"] for m in out.episodes_meta()] == [0, 1, 2, 3]
    assert [m["episode_index"] for m in out.episodes_meta()] == [0, 1, 2, 3]
    for i, seed in enumerate([0, 1, 2, 3]):
        assert_same(out[i], make_episode(seed))
    # videos are copied, not re-encoded: decoded frames equal the source's exactly
    np.testing.assert_array_equal(out[1].images["front"], a[1].images["front"])
    assert out.num_frames == 4 * 12
    assert out.tasks == {
        "reach the red cube (0)": 0,
        "push the red cube (1)": 1,
        "reach the red cube (2)": 2,
        "push the red cube (0)": 3,
    }
    again = merge(tmp_path / "out", [tmp_path / "b"])  # merging into an existing dataset appends
    assert (again.added, again.duplicates) == (0, 2)


def test_merge_refuses_a_different_schema(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build(tmp_path / "a", [0])
    other = EpisodeDataset.create(
        tmp_path / "b", fps=20, cameras=CAMERAS, state_names=STATE_NAMES, action_names=ACTION_NAMES, extras=EXTRAS
    )
    other.append(make_episode(1))
    assert vla_rl(["dataset", "merge", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "cannot be merged" in capsys.readouterr().err
    assert len(EpisodeDataset.open(tmp_path / "a")) == 1


def test_info_stats_relabel_export_verify_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ds"
    build(root, [0, 1, 2, 3, 4])  # reach: seeds 0, 2, 4 (success 2, 4); push: 1, 3 (success 1)
    assert vla_rl(["dataset", "info", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["episodes"], info["frames"]) == (5, 60)
    # evaluation episodes: seeds 0 (failure) and 4 (success), both reach
    assert info["tasks"]["reach"] == {
        "episodes": 3,
        "successes": 2,
        "success_rate": 2 / 3,
        "eval_episodes": 2,
        "eval_success_rate": 0.5,
        "instructions": 3,
    }
    assert info["tasks"]["push"]["eval_success_rate"] is None
    assert info["tasks"]["push"]["success_rate"] == 0.5

    assert vla_rl(["dataset", "info", str(root)]) == 0
    assert "66.7%  eval  50.0% of 2" in capsys.readouterr().out

    assert vla_rl(["dataset", "stats", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    actions = np.concatenate([make_episode(s).actions for s in range(5)]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0))
    assert stats["action"]["count"] == [60]

    assert vla_rl(["dataset", "relabel", str(root), "3", "--success", "true"]) == 0
    assert "success False -> True" in capsys.readouterr().out
    assert EpisodeDataset.open(root).episodes_meta()[3]["success"] is True
    assert vla_rl(["dataset", "relabel", str(root), "9", "--success", "true"]) == 1
    assert capsys.readouterr().err == "vla-rl dataset relabel: episode 9 out of range: the dataset has 5 episodes\n"
    for reward in ("nan", "inf", "-inf"):
        assert vla_rl(["dataset", "relabel", str(root), "2", "--success", "true", f"--reward={reward}"]) == 1
        assert "is not a finite number" in capsys.readouterr().err
    assert EpisodeDataset.open(root).episodes_meta()[2]["reward"] == 1.0
    assert vla_rl(["dataset", "relabel", str(root), "ep-4", "--success", "false", "--reward", "0.5"]) == 0
    assert "episode 4: success True -> False, reward 1.0 -> 0.5" in capsys.readouterr().out
    assert vla_rl(["dataset", "relabel", str(root), "ep-77", "--success", "false"]) == 1
    assert "no episode with episode_id 'ep-77'" in capsys.readouterr().err

    out = tmp_path / "flat.npz"
    assert vla_rl(["dataset", "export", str(root), str(out)]) == 0
    with np.load(out) as flat:
        assert flat["action"].shape == (60, 4)
        assert flat["observation.images.front"].shape == (60, 64, 64, 3)
        np.testing.assert_array_equal(flat["episode_index"], np.repeat(np.arange(5), 12))
        np.testing.assert_array_equal(flat["action"][12:24], make_episode(1).actions)
        assert flat["episode/success"].tolist() == [False, True, True, True, False]
        assert flat["episode/instruction"][1] == "push the red cube (1)"

    assert vla_rl(["dataset", "verify", str(root)]) == 0
    broken = root / "data/chunk-000/file-004.parquet"
    broken.write_bytes(b"garbage")
    assert vla_rl(["dataset", "verify", str(root)]) == 1
    assert str(broken) in capsys.readouterr().out


def test_export_to_rosbag2_mcap(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    root = tmp_path / "ds"
    ds = build(root, [0, 1])
    bag = tmp_path / "episodes_bag"
    assert vla_rl(["dataset", "export", str(root), str(bag), "--namespace", "/arm0"]) == 0
    assert sorted(p.name for p in bag.iterdir()) == ["episodes_bag.mcap", "metadata.yaml"]
    assert not list(tmp_path.glob("*.tmp-*"))
    ts = get_typestore(Stores.ROS2_KILTED)
    got: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, stamp, raw in reader.messages():
            got.setdefault(conn.topic, []).append((stamp, ts.deserialize_cdr(raw, conn.msgtype)))
    assert {topic: len(msgs) for topic, msgs in got.items()} == {
        "/arm0/front/image_raw": 24,
        "/arm0/wrist/image_raw": 24,
        "/arm0/joint_states": 24,
        "/arm0/action": 24,
        "/arm0/instruction": 2,
        "/arm0/success": 2,
        "/arm0/reward": 2,
        "/arm0/episode": 2,
    }
    second = ds[1]
    stamp, image = got["/arm0/front/image_raw"][12 + 3]  # episode 1, frame 3
    assert (image.height, image.width, image.encoding) == (64, 64, "rgb8")
    np.testing.assert_array_equal(image.data.reshape(64, 64, 3), second.images["front"][3])
    assert stamp == got["/arm0/instruction"][1][0] + 3 * 100_000_000  # 10 fps
    np.testing.assert_array_equal(got["/arm0/action"][12 + 3][1].data, second.actions[3])
    np.testing.assert_array_equal(got["/arm0/joint_states"][12][1].position, second.state[0].astype(np.float64))
    assert [m.data for _, m in got["/arm0/success"]] == [False, True]
    assert json.loads(got["/arm0/episode"][1][1].data)["episode_id"] == "ep-1"


def test_merge_checks_every_source_before_writing_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bad source after a good one: nothing of the good one is merged either (it was), into an existing
    destination or a new one; a file as the destination is not overwritten, nor a traceback printed."""
    build(tmp_path / "a", [0])
    build(tmp_path / "good", [5, 6])
    other = EpisodeDataset.create(
        tmp_path / "b", fps=20, cameras=CAMERAS, state_names=STATE_NAMES, action_names=ACTION_NAMES, extras=EXTRAS
    )
    other.append(make_episode(1))
    assert vla_rl(["dataset", "merge", str(tmp_path / "a"), str(tmp_path / "good"), str(tmp_path / "b")]) == 1
    assert f"{tmp_path / 'b'} has other features or fps" in capsys.readouterr().err
    assert len(EpisodeDataset.open(tmp_path / "a")) == 1
    with pytest.raises(DatasetError, match="cannot be merged"):
        merge(tmp_path / "new", [tmp_path / "good", tmp_path / "b"])
    assert not (tmp_path / "new").exists()
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"an export worth keeping")
    assert vla_rl(["dataset", "merge", str(victim), str(tmp_path / "good")]) == 1
    assert f"{victim} is a file, not a dataset folder" in capsys.readouterr().err
    assert victim.read_bytes() == b"an export worth keeping"


def test_export_errors_name_the_problem_and_leave_nothing_behind(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ds"
    build(root, [0, 1, 2])
    assert vla_rl(["dataset", "export", str(root), str(tmp_path / "bag"), "--namespace", "arm0"]) == 1
    assert "namespace 'arm0' must start with '/', e.g. '/arm0'" in capsys.readouterr().err
    broken = root / "videos/observation.images.front/chunk-000/file-002.mp4"
    broken.write_bytes(b"garbage")  # the export fails at the third episode, its bag half written
    assert vla_rl(["dataset", "export", str(root), str(tmp_path / "bag")]) == 1
    assert f"corrupt video file {broken}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no bag, no staging folder <bag>.tmp-<pid>


def test_merge_reencodes_when_video_settings_differ(tmp_path: Path) -> None:
    build(tmp_path / "a", [0])
    full = EpisodeDataset.create(
        tmp_path / "b",
        fps=10,
        cameras=CAMERAS,
        state_names=STATE_NAMES,
        action_names=ACTION_NAMES,
        extras=EXTRAS,
        video=VideoConfig(pix_fmt="yuv444p"),
    )
    full.append(make_episode(1))
    assert merge(tmp_path / "a", [tmp_path / "b"]).added == 1
    merged = EpisodeDataset.open(tmp_path / "a")
    video = tmp_path / "a/videos/observation.images.front/chunk-000/file-001.mp4"
    with av.open(str(video)) as container:
        assert container.streams.video[0].pix_fmt == "yuv420p"  # the destination's setting
    assert_same(merged[1], make_episode(1))
    # The copy keeps the source's digest (its re-encoded frames digest differently): merged again, it is
    # recognised, not added once more per merge.
    assert merged.episodes_meta()[1]["digest"] == full.episodes_meta()[0]["digest"] == make_episode(1).digest()
    for _ in range(2):
        assert merge(tmp_path / "a", [tmp_path / "b"]) == MergeResult(added=0, duplicates=1)
    assert len(EpisodeDataset.open(tmp_path / "a")) == 2
