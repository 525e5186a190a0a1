"""The recorder's plain-Python core on real files: an episode whose frames do not cover its steps (the
last one, drained on Ctrl-C) is written as incomplete, never as a success; a bag export cut short by
kill -9 is cleaned up and written again by the next recorder."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosgraph import wait_until
from test_data_format import ACTION_NAMES, CAMERAS, STATE_NAMES, assert_same, make_episode
from vla_rl_interfaces.msg import EpisodeResult, EpisodeStart

from vla_rl_ros.control import Lockstep
from vla_rl_ros.data import EpisodeDataset, VideoConfig
from vla_rl_ros.data.atomic import TMP_MARKER
from vla_rl_ros.nodes.recorder import EpisodeWriter, Frame, Recording, episode_from

PERIOD_NS = 100_000_000
START_NS = 50 * PERIOD_NS
STEPS = 15  # the result's control steps


def writer(root: Path, logs: list[tuple[str, str]], bag_dir: Path | None = None) -> EpisodeWriter:
    return EpisodeWriter(root, fps=10, cameras=list(CAMERAS), state_names=tuple(STATE_NAMES), robot_type="test_arm",
                         video=VideoConfig(), bag_dir=bag_dir, namespace="/arm0",
                         log=lambda level, text: logs.append((level, text)))


def recording(frames: int, *, end_reason: str = EpisodeResult.END_SUCCESS) -> Recording:
    """An ended episode of STEPS steps whose recorder formed `frames` frames."""
    episode_id = f"ep-{frames}-{end_reason}"
    start = EpisodeStart(episode_id=episode_id, task="reach", seed=7, instruction="reach the red cube", max_steps=40)
    rec = Recording(start, START_NS, Lockstep(PERIOD_NS), from_start=True)
    rng = np.random.default_rng(0)
    for k in range(frames):
        images = {name: np.full((h, w, 3), 10 * k, np.uint8) for name, (h, w) in CAMERAS.items()}
        rec.frames.append(Frame(START_NS + k * PERIOD_NS, rng.standard_normal(len(STATE_NAMES)).astype(np.float32),
                                rng.standard_normal(len(ACTION_NAMES)).astype(np.float32), images))
    rec.result = EpisodeResult(episode_id=episode_id, task="reach", seed=7, success=end_reason == "success",
                               reward=float(end_reason == "success"), steps=STEPS, policy_version=3,
                               end_reason=end_reason)
    rec.end_ns = START_NS + STEPS * PERIOD_NS  # the result's stamp
    return rec


def test_an_episode_drained_before_its_last_frames_is_written_as_incomplete_not_success(tmp_path: Path) -> None:
    """Ctrl-C drained the last episode with 13 frames of its 15 steps: the dataset must not say it succeeded."""
    truncated, full = recording(13), recording(STEPS)
    last_state_ns = truncated.frames[-1].stamp_ns  # no joint state after the end was read before the stop
    assert not truncated.covers_steps(last_state_ns) and full.covers_steps(last_state_ns)
    # On a real arm the result counts periods the executor held too (no frame): a joint state stamped after
    # the end shows that no frame of the episode is still to come.
    assert recording(14).covers_steps(truncated.end_ns + 1)

    logs: list[tuple[str, str]] = []
    out = writer(tmp_path / "ds", logs)
    out.submit(episode_from(truncated, list(CAMERAS), covered=False), tuple(ACTION_NAMES))
    out.submit(episode_from(full, list(CAMERAS), covered=True), tuple(ACTION_NAMES))
    out.close()
    assert not [text for level, text in logs if level == "error"], logs
    ds = EpisodeDataset.open(tmp_path / "ds")
    labels = [(m["success"], m["reward"], m["end_reason"], m["length"]) for m in ds.episodes_meta()]
    assert labels == [(False, 0.0, "error", 13), (True, 1.0, "success", STEPS)]
    np.testing.assert_array_equal(ds[0].actions, np.stack([f.action for f in truncated.frames]))
    # A command sent while the result was on its way (a frame beyond the result's steps) is still cut.
    longer = recording(STEPS + 1, end_reason=EpisodeResult.END_TIMEOUT)
    assert episode_from(longer, list(CAMERAS), covered=longer.covers_steps(None)).length == STEPS


EXPORTER = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    from vla_rl_ros.data import EpisodeDataset
    from vla_rl_ros.data.bag import export_mcap
    ds, bag = EpisodeDataset.open({root!r}), Path({bag!r})
    while True:  # the recorder's export of episode #1, over and over until killed
        export_mcap(ds, bag, namespace="/arm0", episodes=[1])
        shutil.rmtree(bag)
    """
)


def test_a_restarted_writer_removes_a_killed_bag_export_and_writes_that_bag_again(tmp_path: Path) -> None:
    root, bags = tmp_path / "ds", tmp_path / "bags"
    logs: list[tuple[str, str]] = []
    first = writer(root, logs)
    for seed in (1, 2):
        first.submit(make_episode(seed, T=40, extras=False), tuple(ACTION_NAMES))
    first.close()
    bag = bags / "episode_000001"

    # kill -9 while the export of episode #1 is under way (its staging folder exists).
    child = subprocess.Popen([sys.executable, "-c", EXPORTER.format(root=str(root), bag=str(bag))])
    staging = bags / f"{bag.name}{TMP_MARKER}{child.pid}"
    wait_until(lambda: staging.is_dir() and any(staging.rglob("*.mcap")), 60, "an export under way")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert staging.is_dir()
    # A live process's export and a temporary that is not a recorder bag are not the recorder's to remove.
    alive = subprocess.Popen(["sleep", "60"])
    try:
        running = bags / f"episode_000000{TMP_MARKER}{alive.pid}"
        running.mkdir()
        other = bags / f"notes{TMP_MARKER}{child.pid}"
        other.write_text("not a bag")

        logs.clear()
        writer(root, logs, bag_dir=bags).close()  # a recorder starting (then stopping: its queue drained)
        assert not staging.exists() and running.is_dir() and other.is_file()
    finally:
        alive.kill()
        alive.wait()
    assert not [text for level, text in logs if level == "error"], logs
    assert any(level == "warning" and f"removed {staging}" in text and "writing the bag of episode #1 again" in text
               for level, text in logs), logs
    with AnyReader([bag]) as reader:
        topics = {c.topic: [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([c])]
                  for c in reader.connections}
    written = make_episode(2, T=40, extras=False)
    assert [m.data for m in topics["/arm0/success"]] == [written.success]
    assert len(topics["/arm0/front/image_raw"]) == written.length
    assert_same(EpisodeDataset.open(root)[1], written)  # the dataset itself untouched
