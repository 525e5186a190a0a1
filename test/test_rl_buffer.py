"""EpisodeBuffer: joining in either order, groups, filters, staleness, accounting, the disk journal."""

import json
from dataclasses import replace

import numpy as np
import pytest

from vla_rl_ros.rl import EpisodeBuffer, GRPOConfig, ResultRecord, TrajectoryRecord
from vla_rl_ros.rl.buffer import BUCKETS

CFG = GRPOConfig(groups_per_update=2, minibatch_size=4, max_policy_lag=1)
G = 4  # the group size the (imagined) episode manager schedules, carried by every result


def traj(eid, version=0, n=2, temperature=1.0):
    rng = np.random.default_rng(abs(hash(eid)) % 2**32)
    return TrajectoryRecord(
        episode_id=eid, arm="/arm0", instruction="reach the red disc", policy_version=version,
        temperature=temperature, images=rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8),
        state=rng.normal(size=(n, 3)),
        token_ids=rng.integers(0, 256, (n, 8)), log_probs=rng.normal(size=n), steps=np.arange(n) * 2)


def result(eid, gid, success, *, version=0, evaluation=False, reason=None, task="reach", size=G, seed=7):
    return ResultRecord(episode_id=eid, arm="/arm0", group_id=gid, task=task, seed=seed,
                        success=success, reward=float(success), steps=10, policy_version=version,
                        evaluation=evaluation, end_reason=reason or ("success" if success else "timeout"),
                        group_size=0 if evaluation else size)


def add_group(buf, gid, successes, *, traj_first=True, version=0, size=G):
    for i, s in enumerate(successes):
        eid = f"{gid}/{i}"
        parts = [lambda e=eid: buf.add_trajectory(traj(e, version)),
                 lambda e=eid, s=s: buf.add_result(result(e, gid, s, version=version, size=size))]
        for part in parts if traj_first ^ (i % 2 == 1) else parts[::-1]:
            part()


def balanced(acc):
    return acc["results"] == sum(acc[b] for b in BUCKETS) + acc["pending"] and acc["trajectories"] == (
        acc["joined"] + acc["trajectories_dropped"] + acc["trajectories_waiting"])


def test_joins_in_either_order_and_batches_kept_groups():
    buf = EpisodeBuffer(CFG)
    add_group(buf, "g1", [1, 0, 0, 0], traj_first=True)
    assert buf.ready_groups() == 1 and buf.pop_batch(1) is None  # needs groups_per_update = 2
    add_group(buf, "g2", [1, 1, 0, 1], traj_first=False)
    batch = buf.pop_batch(1)
    assert [g.group_id for g in batch] == ["g1", "g2"]
    assert batch[1].rewards.tolist() == [1, 1, 0, 1]
    assert all(e.trajectory.episode_id == e.result.episode_id for g in batch for e in g.episodes)
    acc = buf.accounting()
    assert (acc["results"], acc["used"], acc["joined"], acc["in_flight"]) == (8, 8, 8, 8)
    assert balanced(acc)


def test_a_group_waits_for_every_member():
    buf = EpisodeBuffer(CFG)
    for i, s in enumerate([1, 0, 0]):
        buf.add_trajectory(traj(f"g/{i}"))
        buf.add_result(result(f"g/{i}", "g", s))
    buf.add_result(result("g/3", "g", 0))  # all results in, one trajectory missing
    assert buf.ready_groups() == 0
    buf.add_trajectory(traj("g/3"))
    assert buf.ready_groups() == 1


def test_dynamic_sampling_drops_all_same_groups():
    buf = EpisodeBuffer(CFG)
    add_group(buf, "all_fail", [0, 0, 0, 0])
    add_group(buf, "all_win", [1, 1, 1, 1])
    acc = buf.accounting()
    assert buf.ready_groups() == 0
    assert acc["filtered_all_same"] == 8 and acc["groups/filtered_all_same"] == 2 and balanced(acc)


def test_evaluation_and_aborted_episodes_never_reach_learning():
    buf = EpisodeBuffer(CFG)
    buf.add_trajectory(traj("eval/0"))
    buf.add_result(result("eval/0", "e", True, evaluation=True, seed=1_000_000))
    buf.add_result(result("eval/1", "e", False, evaluation=True, seed=1_000_001))
    buf.add_trajectory(traj("eval/1"))  # late half of a settled episode
    # a training group where one member hit the e-stop and one lost its node: 2 valid members remain
    add_group(buf, "g", [1, 0])
    for i, reason in [(2, "estop"), (3, "lost_node")]:
        buf.add_result(result(f"g/{i}", "g", False, reason=reason))
        buf.add_trajectory(traj(f"g/{i}"))
    acc = buf.accounting()
    assert (acc["evaluation"], acc["aborted"], acc["aborted/estop"], acc["aborted/lost_node"]) == (2, 2, 1, 1)
    assert buf.ready_groups() == 1 and len(buf.pop_batch(1) or []) == 0  # one group, batch needs two
    assert acc["trajectories_dropped"] == 4 and balanced(acc)
    outcomes = buf.drain_outcomes()
    assert outcomes["eval/success_rate"] == 0.5 and outcomes["eval/success_rate/reach"] == 0.5
    assert outcomes["rollout/episodes"] == 2 and outcomes["rollout/success_rate/reach"] == 0.5  # [1, 0]
    assert buf.drain_outcomes() == {}


def test_a_seed_evaluated_again_at_the_same_version_counts_once_in_the_success_rate(tmp_path):
    """An episode manager respawned mid-round starts its evaluation round again: the seeds it had run
    come back at the same policy version, and must not weigh double (also across a learner restart)."""
    buf = EpisodeBuffer(CFG, tmp_path)
    buf.add_result(result("eval/a", "", True, evaluation=True, seed=1_000_000))
    buf.add_result(result("eval/b", "", True, evaluation=True, seed=1_000_001))
    del buf
    buf = EpisodeBuffer(CFG, tmp_path)  # the learner respawned too
    for i, seed in enumerate((1_000_000, 1_000_001, 1_000_002)):  # the manager's round from its start
        buf.add_result(result(f"eval/again{i}", "", False, evaluation=True, seed=seed))
    buf.add_result(result("eval/other-task", "", False, evaluation=True, seed=1_000_000, task="lift"))
    buf.add_result(result("eval/next-version", "", False, evaluation=True, seed=1_000_000, version=1))
    outcomes = buf.drain_outcomes()
    assert outcomes["eval/episodes"] == 5 and outcomes["eval/success_rate"] == 2 / 5
    assert outcomes["eval/success_rate/reach"] == 2 / 4 and outcomes["eval/success_rate/lift"] == 0.0
    acc = buf.accounting()
    assert acc["evaluation"] == 7 and acc["evaluation_repeats"] == 2 and balanced(acc)


def test_a_group_with_one_valid_member_is_incomplete():
    buf = EpisodeBuffer(CFG)
    add_group(buf, "g", [1])
    for i in (1, 2, 3):
        buf.add_result(result(f"g/{i}", "g", False, reason="abort"))
    acc = buf.accounting()
    assert acc["incomplete"] == 1 and acc["aborted/abort"] == 3 and balanced(acc)


def test_stale_trajectories_are_dropped_at_join_and_when_the_policy_moves():
    buf = EpisodeBuffer(CFG)  # max_policy_lag 1
    buf.set_policy_version(3)
    add_group(buf, "old", [1, 0, 0, 0], version=1)  # 2 behind: stale on arrival, group incomplete
    assert buf.accounting()["stale"] == 4
    add_group(buf, "ok", [1, 0, 1, 0], version=2)
    assert buf.ready_groups() == 1
    buf.set_policy_version(4)  # now 2 behind
    acc = buf.accounting()
    assert buf.ready_groups() == 0 and acc["stale"] == 8 and acc["incomplete"] == 0 and balanced(acc)


def test_duplicate_results_are_ignored():
    buf = EpisodeBuffer(CFG)
    buf.add_result(result("a", "g", True))
    buf.add_result(result("a", "g", True))
    acc = buf.accounting()
    assert acc["results"] == 1 and acc["duplicate_results"] == 1 and acc["pending"] == 1


def test_random_arrival_orders_account_for_every_episode():
    rng = np.random.default_rng(0)
    buf = EpisodeBuffer(CFG)
    events = []
    for g in range(30):
        for i in range(G):
            eid, kind = f"{g}/{i}", rng.choice(["train", "train", "train", "eval", "abort"])
            r = result(eid, f"g{g}", bool(rng.random() < 0.4), evaluation=kind == "eval",
                       reason="abort" if kind == "abort" else None)
            events += [("t", traj(eid)), ("r", r)] if rng.random() < 0.9 else [("r", r)]
    rng.shuffle(events)
    update = 0
    for kind, record in events:
        (buf.add_trajectory if kind == "t" else buf.add_result)(record)
        if buf.pop_batch(update + 1):
            update += 1
            buf.commit(update)
        assert balanced(buf.accounting())
    assert update > 0 and buf.accounting()["results"] == 30 * G


def test_journal_survives_a_restart_without_losing_episodes(tmp_path):
    buf = EpisodeBuffer(CFG, tmp_path)
    add_group(buf, "g1", [1, 0, 0, 0])
    add_group(buf, "g2", [0, 1, 0, 0])
    assert buf.pop_batch(1) is not None  # handed to update 1, which never reaches a checkpoint
    add_group(buf, "g3", [1, 1, 0, 0])
    buf.add_trajectory(traj("g4/0"))  # half an episode
    before = buf.accounting()
    del buf

    again = EpisodeBuffer(CFG, tmp_path)
    assert again.accounting() == before
    assert again.rollback(after_update=0) == 2  # update 1 was lost: its groups come back first
    batch = again.pop_batch(1)
    assert [g.group_id for g in batch] == ["g1", "g2"]
    assert batch[0].episodes[1].trajectory.token_ids.dtype == np.int64
    assert again.ready_groups() == 1
    again.add_result(result("g4/0", "g4", True))
    assert again.accounting()["pending"] == 4 + 1
    again.commit(1)
    files = {p.name for p in (tmp_path / "episodes").iterdir()}
    assert not any(name.startswith("g1%2F") or name.startswith("g2%2F") for name in files)
    assert "g3%2F0.traj.npz" in files and "g4%2F0.result.json" in files
    assert balanced(again.accounting())


def test_a_kill_while_a_commit_writes_its_state_leaves_a_loadable_journal(tmp_path, monkeypatch):
    buf = EpisodeBuffer(CFG, tmp_path)
    add_group(buf, "g1", [1, 0, 0, 0])
    add_group(buf, "g2", [0, 1, 0, 0])
    assert buf.pop_batch(1) is not None
    add_group(buf, "g3", [1, 1, 0, 0])
    before = buf.accounting()

    def die(*_args, **_kwargs):
        raise KeyboardInterrupt("killed while writing state.json")

    monkeypatch.setattr("vla_rl_ros.rl.buffer.write_json", die)
    with pytest.raises(KeyboardInterrupt):
        buf.commit(1)
    monkeypatch.undo()
    again = EpisodeBuffer(CFG, tmp_path)  # the old state still lists g1 and g2: their files must be there
    assert again.accounting() == before
    assert again.rollback(after_update=0) == 2 and again.ready_groups() == 3


def test_a_half_written_after_the_last_state_save_is_taken_in(tmp_path):
    buf = EpisodeBuffer(CFG, tmp_path)
    buf.add_result(result("x/0", "x", True))
    state = (tmp_path / "state.json").read_text()
    buf.add_trajectory(traj("x/0"))
    (tmp_path / "state.json").write_text(state)  # crash between the trajectory file and state.json
    again = EpisodeBuffer(CFG, tmp_path)
    acc = again.accounting()
    assert acc["joined"] == 1 and acc["trajectories"] == 1 and acc["pending"] == 1


def test_records_reject_inconsistent_arrays():
    with pytest.raises(ValueError, match="token_ids"):
        TrajectoryRecord(episode_id="e", arm="", instruction="", policy_version=0, temperature=1.0,
                         images=np.zeros((2, 4, 4, 3), np.uint8), state=np.zeros((2, 3)),
                         token_ids=np.zeros((3, 8)), log_probs=np.zeros(2), steps=np.zeros(2))
    with pytest.raises(ValueError, match="end_reason='crashed'"):
        result("e", "g", False, reason="crashed")


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_a_trajectory_without_its_sampling_temperature_is_refused(temperature):
    """0 is what a sender that never set Trajectory.temperature sends: no default is guessed for it."""
    with pytest.raises(ValueError, match="temperature"):
        traj("e", temperature=temperature)


def test_a_training_result_without_its_group_size_is_refused():
    with pytest.raises(ValueError, match="group_size=0"):
        result("e", "g", True, size=0)
    assert result("e", "", True, evaluation=True).group_size == 0  # evaluation episodes have no group


def test_groups_close_at_the_size_their_manager_scheduled(tmp_path):
    """The learner has no group size: a pair and a triple close at their own sizes, also after a restart."""
    buf = EpisodeBuffer(CFG, tmp_path)
    add_group(buf, "pair", [1, 0], size=2)
    assert buf.ready_groups() == 1
    add_group(buf, "triple", [1, 0], size=3)
    buf = EpisodeBuffer(CFG, tmp_path)  # reopened from the journal: the open group keeps its size
    assert buf.ready_groups() == 1
    buf.add_trajectory(traj("triple/2"))
    buf.add_result(result("triple/2", "triple", True, size=3))
    batch = buf.pop_batch(1)
    assert batch is not None and [len(g.episodes) for g in batch] == [2, 3] and balanced(buf.accounting())


def test_a_result_disagreeing_with_its_groups_size_is_refused_untaken():
    buf = EpisodeBuffer(CFG)
    buf.add_result(result("g/0", "g", True))
    before = buf.accounting()
    with pytest.raises(ValueError, match="group_size=2, but earlier results of group 'g' said 4"):
        buf.add_result(result("g/1", "g", False, size=2))
    assert buf.accounting() == before


def test_a_group_sampled_at_two_temperatures_is_refused_whole():
    """Advantages compare rollouts of one distribution; each trajectory would be scored at its own
    temperature, but a group mixing them has no common baseline: counted, reported once, never trained on."""
    buf = EpisodeBuffer(CFG)
    for i, (s, temperature) in enumerate([(1, 1.0), (0, 1.0), (1, 1.6), (0, 1.6)]):
        buf.add_trajectory(traj(f"g/{i}", temperature=temperature))
        buf.add_result(result(f"g/{i}", "g", s))
    acc = buf.accounting()
    assert buf.ready_groups() == 0 and acc["mixed_temperature"] == 4 and acc["groups/mixed_temperature"] == 1
    assert balanced(acc)
    refusals = buf.take_refusals()
    assert len(refusals) == 1 and "'g'" in refusals[0] and "[1.0, 1.6]" in refusals[0]
    assert buf.take_refusals() == []


def test_crashes_at_random_points_lose_no_episode(tmp_path):
    """Random arrival order, a 'crash' (reopen from disk, roll back uncommitted updates) every 23
    events, checkpoints every other update: at the end every result is in exactly one bucket."""
    rng = np.random.default_rng(1)
    events = []
    for g in range(12):
        for i in range(G):
            eid = f"{g}/{i}"
            r = result(eid, f"g{g}", bool(rng.random() < 0.5), evaluation=rng.random() < 0.1)
            events += [("t", traj(eid)), ("r", r)]
    rng.shuffle(events)
    buf, update, checkpointed, trained = EpisodeBuffer(CFG, tmp_path), 0, 0, set()
    for k, (kind, record) in enumerate(events, 1):
        (buf.add_trajectory if kind == "t" else buf.add_result)(record)
        batch = buf.pop_batch(update + 1)
        if batch:
            update += 1
            trained |= {e.result.episode_id for g in batch for e in g.episodes}
            if update % 2 == 0:
                buf.commit(update)
                checkpointed = update
        if k % 23 == 0:
            buf = EpisodeBuffer(CFG, tmp_path)
            buf.rollback(checkpointed)
            update = checkpointed
        assert balanced(buf.accounting())
    acc = buf.accounting()
    assert acc["results"] == len(events) // 2
    assert acc["used"] + acc["pending"] + acc["filtered_all_same"] + acc["evaluation"] + acc["incomplete"] == (
        acc["results"])  # one temperature: no group is refused as mixed
    assert trained  # some updates happened on the way


def test_halves_written_before_the_first_state_save_are_taken_in(tmp_path):
    buf = EpisodeBuffer(CFG, tmp_path)
    buf.add_trajectory(traj("y/0"))
    buf.add_result(result("y/0", "y", False))
    (tmp_path / "state.json").unlink()  # crash before state.json ever existed
    (tmp_path / "episodes" / "y%2F0.traj.npz.tmp-1").write_bytes(b"torn")  # an interrupted write
    acc = EpisodeBuffer(CFG, tmp_path).accounting()
    assert (acc["results"], acc["joined"], acc["pending"]) == (1, 1, 1)
    assert not list((tmp_path / "episodes").glob("*.tmp-*"))



def test_without_dynamic_sampling_all_equal_groups_are_trained_on():
    """SimpleVLA-RL's group filter can be switched off; all-equal groups then count as used."""
    buf = EpisodeBuffer(replace(CFG, dynamic_sampling=False))
    add_group(buf, "all_fail", [0, 0, 0, 0])
    add_group(buf, "all_win", [1, 1, 1, 1])
    batch = buf.pop_batch(1)
    assert batch is not None and sorted(g.group_id for g in batch) == ["all_fail", "all_win"]
    assert buf.accounting()["filtered_all_same"] == 0 and balanced(buf.accounting())


def test_a_half_of_an_episode_in_an_update_that_comes_again_is_a_duplicate(tmp_path):
    """Transient-local history re-sent (a reconnect) brings back halves of episodes handed to an update and
    not yet covered by a checkpoint: they must not open a group again, nor overwrite the files that the
    commit deletes (the next start then found state.json naming missing files)."""
    buf = EpisodeBuffer(CFG, tmp_path)
    add_group(buf, "g1", [1, 0, 0, 0])
    add_group(buf, "g2", [1, 1, 0, 0])
    assert buf.pop_batch(1) is not None
    buf.add_result(result("g1/0", "g1", 1))
    buf.add_trajectory(traj("g1/0"))
    acc = buf.accounting()
    assert (acc["results"], acc["duplicate_results"], acc["trajectories_dropped"]) == (8, 1, 1) and balanced(acc)
    assert buf._groups == {}
    buf.commit(1)
    again = EpisodeBuffer(CFG, tmp_path)
    assert again.accounting() == buf.accounting() and again.accounting()["used"] == 8


def notice(eid, reason="greedy", version=0):
    """What the learner makes of a Trajectory the policy node withholds: no chunks, only why."""
    return TrajectoryRecord.withheld_notice(eid, "/arm0", "reach the red disc", version, 1.0, reason)


def test_a_member_whose_trajectory_is_withheld_is_left_out_and_its_group_closes(tmp_path):
    """The policy node withholds some trajectories (two versions, greedy chunks, started mid-episode) and
    says so; the group is scored on the other members, and too few of them is the usual `incomplete`."""
    buf = EpisodeBuffer(CFG, tmp_path)
    for i, s in enumerate([1, 0, 0]):
        buf.add_trajectory(traj(f"g/{i}"))
        buf.add_result(result(f"g/{i}", "g", s))
    buf.add_trajectory(notice("g/3", "two_versions"))  # before its result; it is journalled like a trajectory
    buf = EpisodeBuffer(CFG, tmp_path)
    buf.add_result(result("g/3", "g", 1))
    buf.add_result(result("h/0", "h", 1))  # its notice after its result
    buf.add_trajectory(notice("h/0", "greedy"))
    for i, reason in enumerate(["joined_midway", "no_chunks"], 1):
        buf.add_trajectory(notice(f"h/{i}", reason))
        buf.add_result(result(f"h/{i}", "h", 0))
    buf.add_trajectory(traj("h/3"))
    buf.add_result(result("h/3", "h", 0))
    acc = buf.accounting()
    assert buf.ready_groups() == 1 and acc["incomplete"] == 1 and acc["withheld"] == 4 and balanced(acc)
    assert (acc["withheld/two_versions"], acc["withheld/greedy"], acc["withheld/joined_midway"]) == (1, 1, 1)
    add_group(buf, "k", [1, 0, 1, 0])
    batch = buf.pop_batch(1)
    assert [len(g.episodes) for g in batch] == [3, 4] and batch[0].rewards.tolist() == [1, 0, 0]


def test_a_withheld_record_carries_no_chunks_and_a_known_reason():
    with pytest.raises(ValueError, match="withheld='lazy'"):
        notice("e", "lazy")
    with pytest.raises(ValueError, match="a withheld trajectory carries no chunks"):
        replace(traj("e"), withheld="greedy")


def test_a_group_whose_manager_died_is_dropped_once_its_newest_result_is_stale(tmp_path):
    """An arm's episode manager died mid-group: the rest of its results never come. Once even the newest
    result it holds is more than max_policy_lag behind, the group is dropped (memory and state.json);
    a late result of a manager that was only slow takes the group up with the count it had."""
    buf = EpisodeBuffer(CFG, tmp_path)  # max_policy_lag 1
    add_group(buf, "dead", [1, 0])  # 2 of 4
    buf.add_result(result("dead/2", "dead", 1))  # its trajectory never comes either
    add_group(buf, "slow", [1])  # 1 of 4
    buf.set_policy_version(1)
    assert set(buf._groups) == {"dead", "slow"}
    buf.set_policy_version(2)
    acc = buf.accounting()
    assert buf._groups == {} and acc["groups/abandoned"] == 2 and acc["stale"] == 4 and balanced(acc)
    buf = EpisodeBuffer(CFG, tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["groups"] == {}
    for i, s in [(1, 0), (2, 1), (3, 0)]:
        buf.add_trajectory(traj(f"slow/{i}", version=2))
        buf.add_result(result(f"slow/{i}", "slow", s, version=2))
    acc = buf.accounting()
    assert buf.ready_groups() == 1 and acc["pending"] == 3 and balanced(acc)


def tear(path, how):
    """What an OS crash can leave of a file renamed into place whose data never reached the disk."""
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["empty", "half"])
def test_journal_files_torn_by_an_os_crash_are_dropped_and_their_groups_go_on(tmp_path, how):
    """Journal files are not fsynced one by one: after an OS crash one may be empty or cut short. Loading
    drops it with a warning; an episode that state.json counted is settled as lost, wherever it was (in
    flight, ready, in an open group), and what is left of its group is classified again."""
    buf = EpisodeBuffer(CFG, tmp_path)
    add_group(buf, "g1", [1, 0, 0, 0])
    add_group(buf, "g2", [0, 1, 0, 1])
    assert buf.pop_batch(1) is not None  # in flight: update 1, no checkpoint yet
    add_group(buf, "g3", [1, 1, 0, 0])  # ready
    add_group(buf, "g4", [1, 0, 0])  # open: 3 of 4
    buf.add_trajectory(traj("w/0"))  # waiting for its result
    episodes = tmp_path / "episodes"
    for name in ("g1%2F0.result.json", "g3%2F2.traj.npz", "g4%2F1.result.json", "w%2F0.traj.npz"):
        tear(episodes / name, how)
    (episodes / "late.result.json").write_bytes(b"")  # arrived after the last state.json, torn too
    (episodes / "late.traj.npz").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match=r"dropped 6 unreadable journal file\(s\).*3 episode\(s\) of state"):
        buf = EpisodeBuffer(CFG, tmp_path)
    acc = buf.accounting()
    assert (acc["lost"], acc["journal_unreadable"], acc["trajectories_dropped"]) == (3, 6, 1) and balanced(acc)
    assert (acc["filtered_all_same"], acc["used"], acc["pending"]) == (3, 4, 5)  # g1 is left all failures
    assert buf.rollback(after_update=0) == 1  # g2; g3 is ready again, on its 3 readable members
    buf.add_trajectory(traj("g4/3"))
    buf.add_result(result("g4/3", "g4", 0))  # g4 closes on its 3 members
    assert buf.ready_groups() == 3 and [len(g.episodes) for g in buf.pop_batch(2)] == [4, 3]
    assert not [p.name for p in episodes.iterdir() if p.name.startswith(("g1%2F0.", "g3%2F2.", "g4%2F1.", "late"))]
    assert balanced(buf.accounting()) and EpisodeBuffer(CFG, tmp_path).accounting() == buf.accounting()
