"""Nothing lost: kill -9 mid-append, read-only roots, a full disk and corrupt files leave every
committed episode readable, and problems are reported by file name; nothing of a lost episode stays
(its files, its new instruction)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_data_format import assert_same, create, make_episode

from vla_rl_ros.data import DatasetError, EpisodeDataset
from vla_rl_ros.data import dataset as dataset_module
from vla_rl_ros.data.dataset import TASKS_PATH, _read_tasks
from vla_rl_ros.data.tools import summary, verify

TEST_DIR = Path(__file__).parent
# When to SIGKILL, as fractions of the time one append took in the same child: spread over the
# append so the kills land in different phases (stats, data file, videos, the row commit).
KILL_FRACTIONS = (0.3, 0.5, 0.7, 0.85, 0.95)

WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {test_dir!r})
    from test_data_format import make_episode
    from vla_rl_ros.data import EpisodeDataset
    ds = EpisodeDataset.open({root!r})
    seed = len(ds)
    while True:
        episode = make_episode(seed, T=40)
        print("appending", seed, flush=True)
        start = time.perf_counter()
        ds.append(episode)
        print("took", time.perf_counter() - start, flush=True)
        seed += 1
    """
)


def test_kill_9_mid_append_keeps_every_committed_episode(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    create(root)
    interrupted = 0  # rounds where the kill left a partial episode behind
    for fraction in KILL_FRACTIONS:
        before = len(EpisodeDataset.open(root))
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER.format(test_dir=str(TEST_DIR), root=str(root))],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = [child.stdout.readline() for _ in range(3)]  # appending, took <s>, appending
        assert lines[1].startswith("took") and lines[2].startswith("appending"), lines
        time.sleep(fraction * float(lines[1].split()[1]))
        child.send_signal(signal.SIGKILL)
        child.wait()
        interrupted += bool(leftovers(root))
        ds = EpisodeDataset.open(root)  # recovers
        assert len(ds) >= before + 1  # the first append of this round completed
        assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
        n = len(ds)
        for kind in ("data", "videos/observation.images.front", "meta/episodes"):
            numbered = sorted(p.name for p in (root / kind).rglob("file-*"))
            assert numbered == [f"file-{i:03d}.{numbered[0].split('.')[-1]}" for i in range(n)], kind
        assert verify(ds) == []
    assert interrupted > 0, "no kill landed mid-append; the test did not exercise recovery"
    ds = EpisodeDataset.open(root)
    for i in range(len(ds)):
        assert_same(ds[i], make_episode(i, T=40))
    assert ds.append(make_episode(len(ds), T=40)) == len(ds) - 1  # restarting appends
    info = (root / "meta/info.json").read_text()
    assert f'"total_episodes": {len(ds)}' in info


NEW_INSTRUCTION = textwrap.dedent(
    """
    import dataclasses, sys
    sys.path.insert(0, {test_dir!r})
    from test_data_format import make_episode
    from vla_rl_ros.data import EpisodeDataset
    episode = dataclasses.replace(make_episode(7, T=300), instruction="a brand new instruction")
    EpisodeDataset.open({root!r}).append(episode)
    """
)


def test_kill_9_mid_append_leaves_no_instruction_of_the_lost_episode(tmp_path: Path) -> None:
    """An append writes a new instruction to tasks.parquet before its commit (a committed episode's task must
    be there); killed in between, the instruction of the lost episode must go with its files: `info` counted
    5 instructions for 4 episodes, and the next new instruction would have got index 5."""
    root = tmp_path / "ds"
    ds = create(root)
    for seed in range(4):
        ds.append(make_episode(seed))
    child = subprocess.Popen([sys.executable, "-c", NEW_INSTRUCTION.format(test_dir=str(TEST_DIR), root=str(root))])
    data = root / "data/chunk-000/file-004.parquet"  # written after tasks.parquet, long before the row's commit
    deadline = time.monotonic() + 120
    while not data.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the append ended before it was killed"
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (root / "meta/episodes/chunk-000/file-004.parquet").exists()  # killed before the commit
    assert "a brand new instruction" in _read_tasks(root / TASKS_PATH)  # what the kill left
    reopened = EpisodeDataset.open(root)
    assert len(reopened) == 4 and summary(reopened)["instructions"] == 4
    assert reopened.tasks == {make_episode(seed).instruction: seed for seed in range(4)}
    assert reopened.append(make_episode(4)) == 4
    assert EpisodeDataset.open(root).tasks[make_episode(4).instruction] == 4
    assert verify(EpisodeDataset.open(root)) == []


def leftovers(root: Path) -> list[Path]:
    """Temporary files, and data/video files beyond the committed episode rows."""
    committed = len(list((root / "meta/episodes").rglob("file-*.parquet")))
    files = [p for p in root.rglob("*") if p.is_file()]
    return [
        p
        for p in files
        if ".tmp-" in p.name
        or (p.name.startswith("file-") and int(p.parent.name[6:]) * 1000 + int(p.name[5:8]) >= committed)
    ]


@contextlib.contextmanager
def read_only(root: Path, recursive: bool = True) -> Iterator[None]:
    """Make `root` (and, if recursive, everything in it) unwritable, also for root, which ignores
    mode bits: then with chattr +i."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [root, *(root.rglob("*") if recursive else ())]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    flags = ["-R"] if recursive else []
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a directory read-only")
    if subprocess.run(["chattr", *flags, "+i", str(root)], check=False, capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", *flags, "-i", str(root)], check=True)


def test_read_only_root_gives_a_clear_error_and_stays_readable(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    create(root).append(make_episode(0))
    with read_only(root):
        ds = EpisodeDataset.open(root)  # reading needs no write permission
        assert_same(ds[0], make_episode(0))
        with pytest.raises(DatasetError, match=f"cannot write {root}.*(permission|not permitted)"):
            ds.append(make_episode(1))
        with pytest.raises(DatasetError, match="cannot write"):
            ds.relabel(0, success=True)
    ds = EpisodeDataset.open(root)
    assert len(ds) == 1 and ds.episodes_meta()[0]["success"] is False
    assert ds.append(make_episode(1)) == 1


@contextlib.contextmanager
def tiny_disk(where: Path, size: str) -> Iterator[Path]:
    """A real small file system (tmpfs) mounted at `where`; skips when mounting is not allowed."""
    where.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False, capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root and mount to make a small file system")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_full_disk_gives_a_clear_error_without_damage(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk", "400k") as disk:
        ds = create(disk / "ds")
        written = []
        with pytest.raises(DatasetError, match=f"cannot write {disk}.*disk is full"):
            for seed in range(100):
                ds.append(make_episode(seed, T=30))
                written.append(seed)
        assert written, "the disk should hold at least one episode"
        reopened = EpisodeDataset.open(disk / "ds")
        assert len(reopened) == len(written)
        for i in written:
            assert_same(reopened[i], make_episode(i, T=30))
        assert not [p for p in (disk / "ds").rglob("*") if ".tmp-" in p.name]


def test_corrupt_files_are_reported_by_name(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = create(root)
    for seed in range(3):
        ds.append(make_episode(seed))
    data = root / "data/chunk-000/file-001.parquet"
    data.write_bytes(b"not a parquet file" * 10)
    video = root / "videos/observation.images.wrist/chunk-000/file-002.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    ds = EpisodeDataset.open(root)
    assert_same(ds[0], make_episode(0))  # the others stay readable
    with pytest.raises(DatasetError, match=f"corrupt dataset file {data}"):
        ds[1]
    with pytest.raises(DatasetError, match=f"corrupt video file {video}"):
        ds[2]
    problems = verify(ds)
    assert len(problems) == 2 and str(data) in problems[0] and str(video) in problems[1]
    row = root / "meta/episodes/chunk-000/file-000.parquet"
    row.write_bytes(b"\0" * 64)
    with pytest.raises(DatasetError, match=f"corrupt dataset file {row}"):
        EpisodeDataset.open(root)


def test_relabel_is_persistent(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = create(root)
    for seed in range(3):
        ds.append(make_episode(seed))
    assert ds.episodes_meta()[0]["success"] is False
    ds.relabel(0, success=True)
    ds.relabel(1, success=False, reward=0.25)
    reopened = EpisodeDataset.open(root)
    assert (reopened[0].success, reopened[0].reward) == (True, 1.0)
    assert (reopened[1].success, reopened[1].reward) == (False, 0.25)
    assert reopened.episodes_meta()[2] == ds.episodes_meta()[2]
    assert reopened.episodes_meta()[0]["digest"] == make_episode(0).digest()  # same content
    np.testing.assert_array_equal(reopened[0].actions, make_episode(0).actions)
    with pytest.raises(IndexError, match="out of range: the dataset has 3 episodes"):
        reopened.relabel(3, success=True)


def test_a_reader_opening_while_a_writer_commits_never_deletes_the_new_episode(tmp_path: Path) -> None:
    """open() reads the rows, then takes the writer lock to clean up after crashed writers; an episode
    committed in between (the recorder appending while a test or tool opens the dataset) must count as
    committed then, not as a leftover. The interleaving, made deterministic: the reader's rows are read,
    a writer commits, then the reader runs open()'s clean-up under the lock."""
    root = tmp_path / "ds"
    create(root).append(make_episode(0))
    reader = EpisodeDataset.open(root)
    EpisodeDataset.open(root).append(make_episode(1))  # the recorder's commit
    with reader._writer_lock():
        reader._recover()
    again = EpisodeDataset.open(root)
    assert len(again) == 2 and again.info["total_episodes"] == 2
    assert_same(again[1], make_episode(1))


def test_open_repairs_metadata_left_stale_by_a_crash_after_the_commit(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = create(root)
    ds.append(make_episode(0))
    stale = {name: (root / "meta" / name).read_bytes() for name in ("info.json", "stats.json")}
    ds.append(make_episode(1))
    fresh = ds.stats()
    for name, content in stale.items():  # as if killed between the row commit and the derived files
        (root / "meta" / name).write_bytes(content)
    repaired = EpisodeDataset.open(root)
    assert (repaired.info["total_episodes"], repaired.info["total_frames"]) == (2, 24)
    for key, stats in fresh.items():
        for stat, value in stats.items():
            np.testing.assert_allclose(repaired.stats()[key][stat], value, rtol=1e-12, err_msg=f"{key} {stat}")
    assert '"total_episodes": 2' in (root / "meta/info.json").read_text()


@pytest.mark.parametrize("damage", [b"{ torn", None], ids=["corrupt", "missing"])
def test_open_rebuilds_a_damaged_stats_json_from_the_episodes(tmp_path: Path, damage: bytes | None) -> None:
    """stats.json is derived from the episode rows (each holds its episode's statistics): a torn or lost
    copy made the whole dataset unopenable."""
    root = tmp_path / "ds"
    ds = create(root)
    for i in range(3):
        ds.append(make_episode(i))
    fresh, path = ds.stats(), root / "meta/stats.json"
    path.unlink() if damage is None else path.write_bytes(damage)
    with read_only(root / "meta", recursive=False):  # a reader that cannot rewrite it still gets the stats
        unwritable = EpisodeDataset.open(root).stats()
    repaired = EpisodeDataset.open(root)
    for stats in (unwritable, repaired.stats(), json.loads(path.read_text())):  # rewritten by the second open
        for key, values in fresh.items():
            for stat, value in values.items():
                np.testing.assert_allclose(np.ravel(stats[key][stat]), value, rtol=1e-12, err_msg=f"{key} {stat}")


def test_episode_saved_when_only_the_derived_metadata_cannot_be_written(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = create(root)
    ds.append(make_episode(0))
    same_instruction = make_episode(6)  # "reach the red cube (0)" again: tasks.parquet stays as it is
    with read_only(root / "meta", recursive=False), pytest.warns(RuntimeWarning, match="episode 1 is saved, but"):
        assert ds.append(same_instruction) == 1
    assert '"total_episodes": 1' in (root / "meta/info.json").read_text()  # stale until repaired
    reopened = EpisodeDataset.open(root)
    assert len(reopened) == 2 and reopened.info["total_episodes"] == 2
    assert '"total_episodes": 2' in (root / "meta/info.json").read_text()
    assert_same(reopened[1], same_instruction)


def test_index_cache_speeds_opening_but_never_hides_a_relabel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "INDEX_CACHE_MIN_READS", 2)  # cache even this small dataset
    root = tmp_path / "ds"
    ds = create(root)
    for seed in range(3):
        ds.append(make_episode(seed))
    first = EpisodeDataset.open(root)
    cache = root / dataset_module.INDEX_CACHE_PATH
    assert cache.is_file() and first._rows_read == 3
    second = EpisodeDataset.open(root)
    assert second._rows_read == 0 and second.episodes_meta() == first.episodes_meta()
    first.relabel(1, success=False, reward=0.0)  # row file rewritten: its cached copy is stale
    third = EpisodeDataset.open(root)
    assert third._rows_read == 1
    assert third.episodes_meta()[1]["success"] is False
    assert third.episodes_meta()[0] == first.episodes_meta()[0]
    cache.write_bytes(b"broken")  # a bad cache is ignored and rebuilt
    assert EpisodeDataset.open(root).episodes_meta() == third.episodes_meta()
    assert EpisodeDataset.open(root)._rows_read == 0


def test_open_removes_leftovers_of_an_interrupted_relabel_or_append(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    create(root).append(make_episode(0))
    leftovers_ = [
        root / "meta/episodes/chunk-000/file-000.parquet.tmp-999",  # relabel killed mid-write
        root / "meta/info.json.tmp-999",
        root / "data/chunk-000/file-001.parquet",  # append killed before its row commit
        root / "videos/observation.images.front/chunk-000/file-001.mp4.tmp-999",
    ]
    for path in leftovers_:
        path.write_bytes(b"partial")
    ds = EpisodeDataset.open(root)
    assert [p for p in leftovers_ if p.exists()] == []
    assert len(ds) == 1
    assert_same(ds[0], make_episode(0))
