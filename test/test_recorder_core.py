"""The recorder's plain-Python core. Frame alignment (data.recording.FrameAligner) without ROS: frames
come out the same whatever the order of the topics, a chunk may come before its request, a re-request
supersedes the request it repeats, a result may come before the last frames, an episode whose frames
do not cover its steps is written as incomplete (end reason error, never a success), skipped and
unusable episodes are not written and say why, input no episode of the dataset could hold (another image
size, another action dim) is refused, a joint_position arm's actions are named after its own joints. The
writer (data.writer.EpisodeWriter) on real files: a dataset of other actions is refused at start, a bag
export cut short by kill -9 is cleaned up and written again by the next recorder."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosgraph import wait_until
from test_data_format import ACTION_NAMES, CAMERAS, STATE_NAMES, assert_same, make_episode

from vla_rl_ros.control import ChunkIn, Lockstep
from vla_rl_ros.data import EpisodeDataset, VideoConfig
from vla_rl_ros.data.atomic import TMP_MARKER
from vla_rl_ros.data.recording import (
    LATE_MESSAGES_S,
    RESULT_WAIT_S,
    UNANNOUNCED_WAIT_S,
    Finished,
    Frame,
    FrameAligner,
    Recording,
    RequestIn,
    ResultIn,
    StartIn,
    episode_from,
    recorded_action_names,
)
from vla_rl_ros.data.writer import EpisodeWriter, SchemaError

PERIOD_NS = 100_000_000
START_NS = 50 * PERIOD_NS
STEPS = 15  # the result's control steps
ARM_JOINTS = tuple(STATE_NAMES)  # the test arm's: its state is its 7 joint positions
EE_DELTA = [recorded_action_names("ee_delta", ARM_JOINTS, dim) for dim in (4, 7)]  # what an ee_delta arm records


def writer(root: Path, logs: list[tuple[str, str]], bag_dir: Path | None = None, *,
           state_names: tuple[str, ...] = ARM_JOINTS,
           action_names: list[tuple[str, ...]] = EE_DELTA) -> EpisodeWriter:
    return EpisodeWriter(root, fps=10, cameras=list(CAMERAS), state_names=state_names, action_names=action_names,
                         robot_type="test_arm", video=VideoConfig(), bag_dir=bag_dir, namespace="/arm0",
                         log=lambda level, text: logs.append((level, text)))


def recording(frames: int, *, end_reason: str = "success") -> Recording:
    """An ended episode of STEPS steps whose recorder formed `frames` frames."""
    episode_id = f"ep-{frames}-{end_reason}"
    start = StartIn(episode_id=episode_id, task="reach", seed=7, instruction="reach the red cube", evaluation=False,
                    max_steps=40, stamp_ns=START_NS)
    rec = Recording(start, Lockstep(PERIOD_NS), from_start=True)
    rng = np.random.default_rng(0)
    for k in range(frames):
        images = {name: np.full((h, w, 3), 10 * k, np.uint8) for name, (h, w) in CAMERAS.items()}
        rec.frames.append(Frame(START_NS + k * PERIOD_NS, rng.standard_normal(len(STATE_NAMES)).astype(np.float32),
                                rng.standard_normal(len(ACTION_NAMES)).astype(np.float32), images))
    rec.end_ns = START_NS + STEPS * PERIOD_NS  # the result's stamp
    rec.result = ResultIn(episode_id=episode_id, task="reach", seed=7, instruction="", group_id="",
                          success=end_reason == "success", reward=float(end_reason == "success"), steps=STEPS,
                          policy_version=3, evaluation=False, end_reason=end_reason, stamp_ns=rec.end_ns)
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
    longer = recording(STEPS + 1, end_reason="timeout")
    assert episode_from(longer, list(CAMERAS), covered=longer.covers_steps(None)).length == STEPS



# ------------------------------------------------------------------------------ frame alignment
CHUNK = 4  # actions per chunk
WALL = 100.0  # the node's monotonic clock (s) when the messages are read
Event = tuple[str, Any]  # (topic, message): topics "start", "request", "chunk", "joint", "image:<camera>", "result"


@dataclass
class Played:
    """One lockstep episode as an arm's topics carry it, in publishing order, and the frames it must give."""

    start: StartIn
    result: ResultIn
    events: list[Event] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)  # (P,) per executed step
    actions: list[np.ndarray] = field(default_factory=list)  # (A,)
    images: dict[str, list[np.ndarray]] = field(default_factory=lambda: {c: [] for c in CAMERAS})


def image(t: int, camera: int) -> np.ndarray:
    """An image telling its step and camera apart from every other of the episode."""
    h, w = list(CAMERAS.values())[camera]
    return np.full((h, w, 3), 10 * t + 100 * camera, np.uint8)


def play(episode_id: str, steps: int, *, t0: int = START_NS, first_request: int = 1, evaluation: bool = False,
         success: bool = True, action_dim: int = len(ACTION_NAMES), action_mode: str = "ee_delta") -> Played:
    """`steps` commands, a request (ids from `first_request`) and its chunk every CHUNK steps, then the
    state the last command led to and the result stamped with it (as the episode manager stamps it)."""
    rng = np.random.default_rng(len(episode_id) + steps)
    end_ns = t0 + steps * PERIOD_NS
    played = Played(
        StartIn(episode_id=episode_id, task="reach", seed=7, instruction="reach the red cube", evaluation=evaluation,
                max_steps=steps + 10, stamp_ns=t0),
        ResultIn(episode_id=episode_id, task="reach", seed=7, instruction="", group_id="g1", success=success,
                 reward=float(success), steps=steps, policy_version=3, evaluation=evaluation,
                 end_reason="success" if success else "timeout", stamp_ns=end_ns))
    played.events.append(("start", played.start))
    chunk = np.zeros((0, action_dim), np.float32)
    for t in range(steps + 1):
        stamp = t0 + t * PERIOD_NS
        state = rng.standard_normal(len(STATE_NAMES)).astype(np.float32)
        played.events += [(f"image:{c}", (c, stamp, image(t, k))) for k, c in enumerate(CAMERAS)]
        played.events.append(("joint", (stamp, state)))
        if t == steps:
            break
        if t % CHUNK == 0:
            request_id = first_request + t // CHUNK
            chunk = rng.uniform(-1, 1, (CHUNK, action_dim)).astype(np.float32)
            played.events += [("request", RequestIn(episode_id, request_id, t, stamp)),
                              ("chunk", chunk_in(episode_id, request_id, chunk, stamp, action_mode))]
        played.states.append(state)
        played.actions.append(chunk[t % CHUNK])
        for k, c in enumerate(CAMERAS):
            played.images[c].append(image(t, k))
    played.events.append(("result", played.result))
    return played


def chunk_in(episode_id: str, request_id: int, actions: np.ndarray, stamp: int,
             action_mode: str = "ee_delta") -> ChunkIn:
    C, A = actions.shape
    return ChunkIn(episode_id=episode_id, request_id=request_id, policy_version=3, chunk_size=C, action_dim=A,
                   action_mode=action_mode, actions=actions.astype(np.float64).ravel(), stamp_ns=stamp)


class Core:
    """A FrameAligner for the test's arm (10 Hz, ee_delta unless told) with its drops, refusals and log kept;
    `image_sizes` and `action_names` are an existing dataset's."""

    def __init__(self, *, record_evaluation: bool = True, action_mode: str = "ee_delta",
                 action_dims: tuple[int, ...] = (4, 7), arm_joints: tuple[str, ...] = ARM_JOINTS,
                 image_sizes: dict[str, tuple[int, int]] | None = None, action_names: tuple[str, ...] = ()) -> None:
        self.drops: list[tuple[str, str]] = []
        self.refusals: list[str] = []
        self.logs: list[tuple[str, str]] = []
        self.aligner = FrameAligner(
            cameras=list(CAMERAS), period_ns=PERIOD_NS, action_mode=action_mode, action_dims=action_dims,
            arm_joints=arm_joints, image_sizes=image_sizes or {}, action_names=action_names,
            record_evaluation=record_evaluation, drop=lambda cause, detail: self.drops.append((cause, detail)),
            refuse=self.refusals.append, log=lambda level, text: self.logs.append((level, text)))

    def deliver(self, events: list[Event], now: float = WALL) -> list[Finished]:
        """Hand the events to the aligner as the node's callbacks do, then tick once; what it finished."""
        core, finished = self.aligner, []
        for topic, msg in events:
            if topic == "start":
                finished += core.start(msg, now)
            elif topic == "request":
                core.request(msg, now)
            elif topic == "chunk":
                core.chunk(msg, now)
            elif topic == "joint":
                core.joint_state(*msg)
            elif topic == "result":
                finished += core.result(msg, now)
            else:
                core.image(*msg)
        return finished + core.tick(now)


def check_frames(finished: list[Finished], played: Played, *, end_reason: str = "success") -> None:
    """One episode, holding exactly the played frames and labels."""
    assert len(finished) == 1, finished
    episode = finished[0].episode
    assert finished[0].action_names == tuple(ACTION_NAMES)
    assert (episode.episode_id, episode.end_reason, episode.evaluation, episode.instruction, episode.length) == (
        played.start.episode_id, end_reason, played.start.evaluation, played.start.instruction, len(played.actions))
    np.testing.assert_array_equal(episode.state, np.stack(played.states))
    np.testing.assert_array_equal(episode.actions, np.stack(played.actions))
    for camera in CAMERAS:
        np.testing.assert_array_equal(episode.images[camera], np.stack(played.images[camera]))


def interleave(events: list[Event], seed: int) -> list[Event]:
    """The events in a random order that keeps each topic's own order (as DDS delivers them)."""
    rng = np.random.default_rng(seed)
    topics: dict[str, list[Event]] = {}
    for event in events:
        topics.setdefault(event[0], []).append(event)
    mixed = []
    while topics:
        topic = list(topics)[rng.integers(len(topics))]
        mixed.append(topics[topic].pop(0))
        if not topics[topic]:
            del topics[topic]
    return mixed


@pytest.mark.parametrize("seed", [None, *range(40)])
def test_frames_are_the_same_whatever_order_the_topics_arrive_in(seed: int | None) -> None:
    """Steps 10 and 11 of the last chunk were never executed (the result says 10): no frame of theirs."""
    played = play("ep", 10)
    events = played.events if seed is None else interleave(played.events, seed)
    core = Core()
    check_frames(core.deliver(events), played)
    assert core.drops == [] and core.aligner.episodes == []
    assert ("info", "episode ep complete; queued for writing") in core.logs


def test_a_chunk_read_before_its_request_waits_for_it() -> None:
    played = play("ep", 8)
    events = list(played.events)
    for i in [i for i, (topic, _) in enumerate(events) if topic == "request"]:
        events[i], events[i + 1] = events[i + 1], events[i]  # each chunk before its request
    core = Core()
    first_chunk = next(i for i, (topic, _) in enumerate(events) if topic == "chunk")
    core.deliver(events[: first_chunk + 1])
    rec = core.aligner.episode("ep")
    assert rec is not None and rec.frames == [] and len(rec.early_chunks) == 1
    check_frames(core.deliver(events[first_chunk + 1:]), played)
    assert core.drops == []


def test_what_overtook_its_start_is_taken_in_order_with_the_result_last() -> None:
    """Everything of the episode read before its start, the arm's next joint state too (stamped after the
    result: nothing of the episode is still to come): the result must not close it before its chunks."""
    played = play("ep", 8)
    after_end = ("joint", (played.result.stamp_ns + PERIOD_NS, np.zeros(len(STATE_NAMES), np.float32)))
    observations = [e for e in played.events if e[0] == "joint" or e[0].startswith("image:")]
    announced = [e for e in played.events if e[0] in ("request", "chunk")]
    core = Core()
    check_frames(core.deliver([*observations, after_end, played.events[-1], *announced, played.events[0]]), played)
    assert core.drops == []


@pytest.mark.parametrize("order", [("request", "late", "chunk"), ("request", "chunk", "late"),
                                   ("chunk", "request", "late")])
def test_a_re_request_after_a_chunk_timeout_supersedes_the_old_request(order: tuple[str, ...]) -> None:
    """Request 1 for step 0 timed out: the executor asked again (request 2, step 0) and runs the chunk
    answering that; request 1's chunk, read in any order after or among them, is not executed."""
    played = play("ep", 8, first_request=2)
    late = chunk_in("ep", 1, np.full((CHUNK, len(ACTION_NAMES)), 0.5, np.float32), START_NS)
    events = list(played.events)
    i = next(i for i, (topic, _) in enumerate(events) if topic == "request")
    by_name = {"request": events[i], "chunk": events[i + 1], "late": ("chunk", late)}
    events[i: i + 2] = [("request", RequestIn("ep", 1, 0, START_NS)), *(by_name[name] for name in order)]
    core = Core()
    check_frames(core.deliver(events), played)
    assert [cause for cause, _ in core.drops] == ["action_chunk not executed (unrequested)"]


def test_a_result_read_before_the_last_frames_waits_for_them() -> None:
    played = play("ep", 8, success=False)
    core = Core()
    cut = next(i for i, (topic, msg) in enumerate(played.events)
               if topic == "joint" and msg[0] == START_NS + 5 * PERIOD_NS)  # step 5's joint state
    assert core.deliver([*played.events[:cut], played.events[-1]]) == []
    assert len(core.aligner.episode("ep").frames) == 5
    check_frames(core.deliver(played.events[cut:-1]), played, end_reason="timeout")
    assert core.drops == []


def test_an_episode_whose_last_frames_never_come_is_written_as_incomplete() -> None:
    """Its result said success; without its last two frames (their joint states never came) the dataset must
    say error, failed, reward 0."""
    played = play("ep", 8)
    events = [e for e in played.events if not (e[0] == "joint" and e[1][0] >= START_NS + 6 * PERIOD_NS)]
    core = Core()
    assert core.deliver(events) == []  # still waiting for late messages
    assert core.aligner.tick(WALL + LATE_MESSAGES_S - 0.1) == []
    finished = core.aligner.tick(WALL + LATE_MESSAGES_S + 0.1)
    played.states, played.actions = played.states[:6], played.actions[:6]
    played.images = {c: images[:6] for c, images in played.images.items()}
    check_frames(finished, played, end_reason="error")
    assert (finished[0].episode.success, finished[0].episode.reward) == (False, 0.0)
    assert any(level == "warning" and "ep incomplete: 6 frames of its 8 steps" in text and
               "instead of success" in text for level, text in core.logs), core.logs
    # Drained (the recorder stops) right after its result: the same, at once; a running episode is lost.
    core = Core()
    running = [e for e in play("next", 3, t0=START_NS + 20 * PERIOD_NS).events if e[0] in ("start", "request")]
    assert core.deliver([*events, *running]) == []
    check_frames(core.aligner.drain(), played, end_reason="error")
    assert core.aligner.episodes == [] and core.drops == []


@pytest.mark.parametrize("record_evaluation", [False, True])
def test_evaluation_episodes_are_skipped_unless_recorded(record_evaluation: bool) -> None:
    core = Core(record_evaluation=record_evaluation)
    evaluation = play("eval", 5, evaluation=True)
    after = play("after", 6, t0=START_NS + 20 * PERIOD_NS, first_request=10)
    finished = core.deliver(evaluation.events)
    if record_evaluation:
        check_frames(finished, evaluation)
    else:
        assert finished == []
    check_frames(core.deliver(after.events), after)
    # Nothing of the skipped episode counts as dropped input, however long its messages wait.
    assert core.aligner.tick(WALL + UNANNOUNCED_WAIT_S + RESULT_WAIT_S + 1) == [] and core.drops == []


@pytest.mark.parametrize(("lose", "why"), [
    (lambda e: e[0] == "image:wrist" and e[1][1] < START_NS + 2 * PERIOD_NS,
     "frames [0, 1] lack a camera image stamped at or before them"),
    (lambda e: e[0] in ("request", "chunk") and e[1].request_id == 1,
     "episode joined after its start (no chunk_request for step 0 seen)"),
    (lambda e: e[0] == "joint", "episode without frames (no joint_states or chunks received)"),
], ids=["images missing", "joined late", "no joint states"])
def test_an_episode_that_cannot_be_written_is_dropped_with_its_reason(lose: Any, why: str) -> None:
    played = play("ep", 8)
    core = Core()
    assert core.deliver([e for e in played.events if not lose(e)]) == []
    assert core.aligner.tick(WALL + LATE_MESSAGES_S + 1) == []
    assert core.drops == [("episode not recorded", f"ep: {why}")]
    assert core.aligner.episodes == []


def test_messages_without_their_start_and_an_episode_without_its_result_are_dropped_in_time() -> None:
    core = Core()
    stray = play("stray", 4)
    core.deliver([e for e in stray.events if e[0] in ("request", "chunk", "result")])
    assert core.aligner.tick(WALL + UNANNOUNCED_WAIT_S - 0.1) == [] and core.drops == []
    core.aligner.tick(WALL + UNANNOUNCED_WAIT_S + 0.1)
    assert [cause for cause, _ in core.drops] == [f"{kind} of an episode not being recorded"
                                                  for kind in ("chunk_request", "action_chunk", "result")]
    # An episode ended by the next one's start waits RESULT_WAIT_S for its result, then is dropped.
    core = Core()
    core.deliver([*play("first", 4).events[:-1], play("second", 4, t0=START_NS + 20 * PERIOD_NS).events[0]])
    assert core.aligner.tick(WALL + RESULT_WAIT_S - 0.1) == [] and core.drops == []
    core.aligner.tick(WALL + RESULT_WAIT_S + 0.1)
    assert [cause for cause, _ in core.drops] == ["episode without a result"]
    assert [rec.episode_id for rec in core.aligner.episodes] == ["second"]

def test_a_six_joint_arm_in_joint_position_mode_records_actions_named_after_its_joints(tmp_path: Path) -> None:
    """7-dim actions (6 joints + gripper): named after the robot config's joints, not the sim arm's 7 + gripper
    (every append failed on the 8 names)."""
    joints = tuple(f"arm6_joint{i}" for i in range(1, 7))
    names = (*joints, "gripper")
    core = Core(action_mode="joint_position", action_dims=(7,), arm_joints=joints)
    played = play("six", 6, action_dim=7, action_mode="joint_position")
    finished = core.deliver(played.events)
    assert [f.action_names for f in finished] == [names] and core.drops == [] and core.refusals == []
    logs: list[tuple[str, str]] = []
    out = writer(tmp_path / "ds", logs, state_names=tuple(STATE_NAMES), action_names=[names])
    out.submit(finished[0].episode, finished[0].action_names)
    out.close()
    assert not [text for level, text in logs if level == "error"], logs
    ds = EpisodeDataset.open(tmp_path / "ds")
    assert len(ds) == 1 and ds.features["action"]["names"] == list(names)
    np.testing.assert_array_equal(ds[0].actions, np.stack(played.actions))


def test_a_writer_refuses_at_start_a_dataset_whose_actions_its_robot_does_not_send(tmp_path: Path) -> None:
    root, logs = tmp_path / "ds", []
    first = writer(root, logs)
    first.submit(make_episode(1, extras=False), tuple(ACTION_NAMES))
    first.close()
    joint_position = [(*ARM_JOINTS, "gripper")]
    with pytest.raises(SchemaError, match=rf"dataset {root} holds actions \['dx', 'dy', 'dz', 'gripper'\], this "
                                          r"recorder's robot sends \['q0', .*'q6', 'gripper'\]: choose another"):
        writer(root, logs, action_names=joint_position)
    with pytest.raises(SchemaError, match=r"holds state .*; actions"):  # every difference named, in one line
        writer(root, logs, state_names=("j0",), action_names=joint_position)
    again = writer(root, logs)  # ee_delta: 4 or 7; the dataset's 4 fits
    assert again.dataset_action_names == tuple(ACTION_NAMES) and again.image_sizes == CAMERAS
    again.close()
    assert len(EpisodeDataset.open(root)) == 1


def test_input_no_episode_of_the_dataset_could_hold_is_refused_not_dropped_episode_by_episode() -> None:
    """A dataset of 4-dim actions and 64x64 front images: a policy sending 7-dim actions, or a camera whose
    first image is another size, would lose every episode; the core refuses (the node then stops with the
    reason). One odd image after right-sized ones stays a drop."""
    core = Core(image_sizes=dict(CAMERAS), action_names=tuple(ACTION_NAMES))
    assert core.deliver(play("seven", 4, action_dim=7).events) == []
    assert core.refusals == ["the policy sends 7-dim ee_delta actions ['dx', 'dy', 'dz', 'droll', 'dpitch', "
                             "'dyaw', 'gripper']; the dataset holds 4-dim actions ['dx', 'dy', 'dz', 'gripper']"]
    core = Core(image_sizes={"front": (32, 32), "wrist": CAMERAS["wrist"]}, action_names=tuple(ACTION_NAMES))
    core.deliver(play("big", 4).events[:3])
    assert core.refusals == ["camera front publishes 64x64 images, the dataset holds 32x32 (W x H)"]
    core = Core(image_sizes=dict(CAMERAS), action_names=tuple(ACTION_NAMES))
    played = play("ok", 4)
    core.aligner.image("front", START_NS - 1, np.zeros((64, 64, 3), np.uint8))
    core.aligner.image("front", START_NS - 1, np.zeros((128, 64, 3), np.uint8))
    check_frames(core.deliver(played.events), played)
    assert core.refusals == [] and [cause for cause, _ in core.drops] == ["front image size"]


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
