"""The learner's episode buffer: joins trajectories and results, forms groups, filters, persists.

Episodes arrive in two halves on two topics, in either order: the policy node's Trajectory and
the episode manager's EpisodeResult. Every result ends in exactly one bucket, so a soak test can
check `results == sum(BUCKETS) + pending` (`EpisodeBuffer.accounting`). A group of one (task, seed) is
complete when as many results of its `group_id` have arrived as its episode manager scheduled
(`ResultRecord.group_size`; a discarded member counts as arrived) and every kept member has its
trajectory. A member whose trajectory the policy node withholds (a record without chunks saying why,
`TrajectoryRecord.withheld`) is left out (`withheld`) and the group is scored on the others. A group
whose newest result is more than max_policy_lag versions behind (its manager died mid-group: the rest
never come) is dropped (`groups/abandoned`, its members `stale`); if its manager was only slow, a late
result takes it up again with the count it had. The advantage compares rollouts of one sampling
distribution, so a group whose trajectories carry different temperatures is refused whole
(`mixed_temperature`, reported by `take_refusals`). An episode handed to an update is still the
buffer's until the checkpoint that covers the update: a half of it that comes again (transient-local
history re-sent) is a duplicate.

Persistence is a journal, not a snapshot: each half is written to its own file on arrival and
removed once the episode is settled; `state.json` (groups, queue, counters) is rewritten after
every change, each file via temp file + os.replace, so a killed learner loses nothing. Files are
flushed to disk (os.sync) when a checkpoint covers the state (`commit`), not one fsync per file
(10-20 ms each here, about eight per episode), so an OS crash or power cut can lose what arrived
since the last checkpoint: a file renamed into place whose data never reached the disk is dropped
when the journal is loaded, with a warning (`journal_unreadable`); an episode that state.json counted
is then settled as `lost`. Groups handed to an update stay on disk, tagged with the update number,
until the learner's checkpoint covers that update; after a restart `rollback` puts them back in
the queue, so a restarted learner loses no episode.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from vla_rl_ros.data.atomic import is_tmp, write_json
from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.loss import keep_group
from vla_rl_ros.rl.records import (
    DISCARD_REASONS,
    ResultRecord,
    TrajectoryRecord,
    load_result,
    load_trajectory,
    replace_write,
    save_result,
    save_trajectory,
)

STATE_FILE = "state.json"
EPISODES_DIR = "episodes"
STATE_FORMAT = 2  # 2: results carry group_size, trajectories temperature, groups their size
# Ids of settled episodes remembered so that a late half (e.g. the trajectory of an evaluation
# episode arriving after its result) is recognised and dropped; halves arrive seconds apart.
SETTLED_MEMORY = 2000
# Abandoned groups remembered with their result count, so that a late result of a group whose manager was
# only slow takes it up where it was (more than the open groups of a fleet: one per arm).
ABANDONED_MEMORY = 256
MIN_VALID_MEMBERS = 2  # fewer valid rollouts than this leave no group baseline
# Policy versions whose evaluated (task, seed) pairs are remembered: an evaluation round runs at one version.
EVALUATED_VERSIONS = 4

# Terminal buckets of a result; `pending` is everything still held.
BUCKETS = ("evaluation", "aborted", "withheld", "lost", "stale", "incomplete", "mixed_temperature",
           "filtered_all_same", "used")
# What loading a journal file raises when its data never reached the disk (empty, cut short, zeros); not
# OSError: a file the disk cannot read now is not known to be torn, and is not deleted.
UNREADABLE = (EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


@dataclass
class Rollout:
    """Both halves of one training episode, joined by episode id: what the policy node saw and sampled, and
    how the episode manager says it ended (`data.Episode` is an episode of a dataset, another thing)."""

    trajectory: TrajectoryRecord
    result: ResultRecord


@dataclass
class Group:
    """The kept rollouts of one task from one initial state."""

    group_id: str
    episodes: list[Rollout]

    @property
    def rewards(self) -> np.ndarray:
        """(G,) float32."""
        return np.array([e.result.reward for e in self.episodes], dtype=np.float32)


def _file_stem(episode_id: str) -> str:
    """Episode ids may hold '/' (arm namespaces); percent-encode them into one file name."""
    return quote(episode_id, safe="")


class EpisodeBuffer:
    """Joins, groups, filters and queues episodes; journals them under `directory` if given.

    Not thread-safe: the learner node calls it from one callback group.
    """

    def __init__(self, config: GRPOConfig, directory: Path | str | None = None) -> None:
        self.config = config
        self.directory = Path(directory) if directory is not None else None
        self.policy_version = 0
        self.counters: Counter[str] = Counter()
        # Halves awaiting use (journalled buffers keep in-flight episodes on disk only)
        self._trajectories: dict[str, TrajectoryRecord] = {}
        self._results: dict[str, ResultRecord] = {}  # training results only
        # open group id -> {"members": [eid], "seen": int, "size": int, "version": newest result's policy version}
        self._groups: dict[str, dict] = {}
        self._abandoned: list[tuple[str, int]] = []  # (group id, results seen) of dropped groups, oldest first
        self._ready: list[tuple[str, list[str]]] = []  # kept complete groups, oldest first
        self._in_flight: list[dict] = []  # {"update": int, "groups": [(gid, [eid])]}
        self._settled: list[str] = []  # recently settled episode ids, oldest first
        self._doomed: list[Path] = []  # files of forgotten episodes, deleted after the next state.json
        self._tally: dict[str, Counter] = {"rollout": Counter(), "eval": Counter()}
        self._evaluated: dict[int, list[str]] = {}  # policy version -> "task/seed" evaluated at it
        self._refusals: list[str] = []  # why groups were refused since take_refusals, for the node's log
        if self.directory is not None:
            (self.directory / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
            self._load()

    # --- input ---------------------------------------------------------------------------------

    def add_trajectory(self, record: TrajectoryRecord) -> None:
        """Take the policy node's half of an episode."""
        eid = record.episode_id
        self.counters["trajectories"] += 1
        if eid in self._trajectories or eid in self._settled_set() or eid in self._flying():
            self.counters["trajectories_dropped"] += 1  # repeat, or its episode is in an update or settled
            self._save_state()
            return
        self._trajectories[eid] = record
        if self.directory is not None:
            save_trajectory(self._path(eid, "traj.npz"), record)
        if eid in self._results:
            self._join(eid)
        self._save_state()

    def add_result(self, record: ResultRecord) -> None:
        """Take the episode manager's half of an episode. ValueError, taking nothing, if its group_size
        differs from that of its group's earlier results (one manager schedules a group)."""
        eid = record.episode_id
        if eid in self._results or eid in self._settled_set() or eid in self._flying():
            self.counters["duplicate_results"] += 1
            self._save_state()
            return
        group = self._groups.get(record.group_id)
        if not record.evaluation and group is not None and group["size"] != record.group_size:
            raise ValueError(f"episode {eid!r}: group_size={record.group_size}, but earlier results of group "
                             f"{record.group_id!r} said {group['size']}")
        self.counters["results"] += 1
        if (record.evaluation or record.end_reason in DISCARD_REASONS) and eid in self._trajectories:
            self.counters["trajectories_dropped"] += 1
        if record.evaluation:
            if self._first_evaluation(record):
                self._tally_outcome("eval", record)
            else:
                self.counters["evaluation_repeats"] += 1
            self._settle([eid], "evaluation")
        elif record.end_reason in DISCARD_REASONS:
            self.counters[f"aborted/{record.end_reason}"] += 1
            self._count_in_group(record)
            self._settle([eid], "aborted")
            self._maybe_close(record.group_id)
        else:
            self._tally_outcome("rollout", record)
            self._results[eid] = record
            if self.directory is not None:
                save_result(self._path(eid, "result.json"), record)
            self._count_in_group(record)["members"].append(eid)
            if eid in self._trajectories:
                self._join(eid)
        self._save_state()

    def set_policy_version(self, version: int) -> None:
        """The learner's policy moved on: drop members now more than max_policy_lag behind, and open groups
        whose newest result is (its manager died mid-group: the rest never come)."""
        self.policy_version = int(version)
        self._take_out({e for _, eids in self._ready for e in eids if self._is_stale(e)}, "stale")
        for group in self._groups.values():
            joined_stale = [e for e in group["members"] if e in self._trajectories and self._is_stale(e)]
            for eid in joined_stale:
                group["members"].remove(eid)
            self._settle(joined_stale, "stale")
        for gid, group in list(self._groups.items()):
            if self.policy_version - group["version"] > self.config.max_policy_lag:
                del self._groups[gid]
                self.counters["groups/abandoned"] += 1
                self._abandoned = [*self._abandoned, (gid, group["seen"])][-ABANDONED_MEMORY:]
                self._settle(group["members"], "stale")
            else:
                self._maybe_close(gid)
        self._save_state()

    # --- output --------------------------------------------------------------------------------

    def ready_groups(self) -> int:
        """Kept complete groups waiting for an update."""
        return len(self._ready)

    def pop_batch(self, update: int) -> list[Group] | None:
        """The oldest `groups_per_update` kept groups for update number `update`, or None if fewer
        are ready. They stay journalled until `commit(update)`."""
        n = self.config.groups_per_update
        if len(self._ready) < n:
            return None
        taken, self._ready = self._ready[:n], self._ready[n:]
        self._in_flight.append({"update": int(update), "groups": taken})
        self.counters["used"] += sum(len(eids) for _, eids in taken)
        self._save_state()
        groups = [Group(gid, [Rollout(self._trajectories[e], self._results[e]) for e in eids])
                  for gid, eids in taken]
        if self.directory is not None:  # in flight they live on disk only: `rollback` reads them back
            for _, eids in taken:
                for eid in eids:
                    del self._trajectories[eid], self._results[eid]
        return groups

    def commit(self, through_update: int) -> None:
        """A checkpoint now covers every update <= through_update: forget their episodes."""
        done = [f for f in self._in_flight if f["update"] <= through_update]
        self._in_flight = [f for f in self._in_flight if f["update"] > through_update]
        for flight in done:
            for _, eids in flight["groups"]:
                self._forget(eids)
        self._save_state(durable=True)

    def rollback(self, after_update: int) -> int:
        """The learner restarted from the checkpoint of update `after_update`: groups handed to later
        updates were never learned from, so queue them again (first). Returns how many groups."""
        lost = [f for f in self._in_flight if f["update"] > after_update]
        self.commit(after_update)
        requeue = [g for f in lost for g in f["groups"]]
        for eid in (e for _, eids in requeue for e in eids):
            if eid not in self._results:
                self._results[eid] = load_result(self._path(eid, "result.json"))
                self._trajectories[eid] = load_trajectory(self._path(eid, "traj.npz"))
        self._in_flight = []
        self._ready = requeue + self._ready
        self.counters["used"] -= sum(len(eids) for _, eids in requeue)
        self._save_state()
        return len(requeue)

    def drain_outcomes(self) -> dict[str, float]:
        """Success rates of the training and evaluation results received since the last call:
        rollout/success_rate, rollout/episodes, eval/success_rate, eval/episodes,
        eval/policy_version (mean version of the evaluated policy), and per task
        rollout/success_rate/<task>, eval/success_rate/<task> (a task whose groups all fail is
        filtered out and learns nothing: the per-task rollout rate shows it)."""
        out: dict[str, float] = {}
        for kind, tally in self._tally.items():
            n = tally["episodes"]
            if n == 0:
                continue
            out[f"{kind}/episodes"] = float(n)
            out[f"{kind}/success_rate"] = tally["successes"] / n
            if kind == "eval":
                out["eval/policy_version"] = tally["version_sum"] / n
            for key in tally:
                if key.startswith("task_n/"):
                    task = key.removeprefix("task_n/")
                    out[f"{kind}/success_rate/{task}"] = tally[f"task_s/{task}"] / tally[key]
        self._tally = {"rollout": Counter(), "eval": Counter()}
        self._save_state()
        return out

    def take_refusals(self) -> list[str]:
        """Why complete groups were refused (mixed temperatures) since the last call, one line each."""
        refusals, self._refusals = self._refusals, []
        return refusals

    def accounting(self) -> dict[str, int]:
        """Where every episode went. Always: results == sum of BUCKETS + pending, and
        trajectories == joined + trajectories_dropped + trajectories_waiting (a withheld trajectory's
        record joins its result like any other). `used` counts episodes handed to updates, including
        those `in_flight` (not yet covered by a checkpoint). journal_unreadable: files dropped at a load."""
        flying = self._flying()
        in_flight = len(flying)
        out = {"results": self.counters["results"], "pending": len(set(self._results) - flying)}
        out.update({b: self.counters[b] for b in BUCKETS})
        out["in_flight"] = in_flight
        out["ready"] = sum(len(e) for _, e in self._ready)
        out["joined"] = self.counters["joined"]
        out["trajectories"] = self.counters["trajectories"]
        out["trajectories_dropped"] = self.counters["trajectories_dropped"]
        out["trajectories_waiting"] = len(set(self._trajectories) - set(self._results) - flying)
        out["duplicate_results"] = self.counters["duplicate_results"]
        out["evaluation_repeats"] = self.counters["evaluation_repeats"]  # in `evaluation`, not in the success rate
        out["journal_unreadable"] = self.counters["journal_unreadable"]
        for key, value in self.counters.items():
            if key.startswith(("groups/", "aborted/", "withheld/")):
                out[key] = value
        return out

    # --- internals -----------------------------------------------------------------------------

    def _count_in_group(self, record: ResultRecord) -> dict:
        """Count a training result in its open group (opened, or taken up again if it was abandoned); the
        group's size is what the manager scheduled."""
        gid = record.group_id
        if gid not in self._groups:
            seen = next((n for g, n in self._abandoned if g == gid), 0)
            self._abandoned = [a for a in self._abandoned if a[0] != gid]
            self._groups[gid] = {"members": [], "seen": seen, "size": record.group_size, "version": 0}
        group = self._groups[gid]
        group["seen"] += 1
        group["version"] = max(group["version"], record.policy_version)
        return group

    def _join(self, eid: str) -> None:
        """Both halves are here: drop the episode if its trajectory is withheld or stale, then see whether
        its group is complete."""
        self.counters["joined"] += 1
        gid = self._results[eid].group_id
        withheld = self._trajectories[eid].withheld
        if withheld or self._is_stale(eid):
            self._groups[gid]["members"].remove(eid)
            if withheld:
                self.counters[f"withheld/{withheld}"] += 1
            self._settle([eid], "withheld" if withheld else "stale")
        self._maybe_close(gid)

    def _is_stale(self, eid: str) -> bool:
        lag = self.policy_version - self._trajectories[eid].policy_version
        return lag > self.config.max_policy_lag

    def _maybe_close(self, gid: str) -> None:
        """Once all scheduled results of a group are in and every kept member is joined, classify it."""
        group = self._groups.get(gid)
        if group is None or group["seen"] < group["size"]:
            return
        if any(e not in self._trajectories for e in group["members"]):
            return
        del self._groups[gid]
        self._classify(gid, group["members"])

    def _classify(self, gid: str, eids: list[str]) -> None:
        """Complete group -> queue (kept) or settled (too few valid members, mixed temperatures, or all
        rewards equal)."""
        temperatures = sorted({self._trajectories[e].temperature for e in eids})
        if len(eids) < MIN_VALID_MEMBERS:
            self.counters["groups/incomplete"] += 1
            self._settle(eids, "incomplete")
        elif len(temperatures) > 1:
            self.counters["groups/mixed_temperature"] += 1
            self._refusals.append(f"group {gid!r}: its {len(eids)} trajectories were sampled at temperatures "
                                  f"{temperatures}; a group's advantages need one (policy nodes disagree?)")
            self._settle(eids, "mixed_temperature")
        elif self.config.dynamic_sampling and not keep_group([self._results[e].reward for e in eids]):
            self.counters["groups/filtered_all_same"] += 1
            self._settle(eids, "filtered_all_same")
        else:
            self.counters["groups/kept"] += 1
            self._ready.append((gid, eids))

    def _take_out(self, gone: set[str], bucket: str, *, in_flight: bool = False) -> None:
        """Settle the `gone` members of the ready groups (and of those in flight) in `bucket`, and classify
        what is left of each such group again: it may now be too small, or all of one reward."""
        queues = [self._ready, *(f["groups"] for f in self._in_flight if in_flight)]
        for queue in queues:
            for gid, eids in list(queue):
                left = [e for e in eids if e not in gone]
                if len(left) == len(eids):
                    continue
                queue.remove((gid, eids))
                self.counters["groups/kept"] -= 1  # classified again below
                if queue is not self._ready:
                    self.counters["used"] -= len(eids)
                self._settle([e for e in eids if e in gone], bucket)
                self._classify(gid, left)

    def _settle(self, eids: list[str], bucket: str) -> None:
        self.counters[bucket] += len(eids)
        self._forget(eids)

    def _forget(self, eids: list[str]) -> None:
        for eid in eids:
            self._results.pop(eid, None)
            self._trajectories.pop(eid, None)
            # Recognised later: a trajectory still on its way, or files orphaned by a kill before unlinking.
            self._settled.append(eid)
            if self.directory is not None:  # deleted only once a state.json without them is written
                self._doomed += [self._path(eid, "traj.npz"), self._path(eid, "result.json")]
        self._settled = self._settled[-SETTLED_MEMORY:]

    def _settled_set(self) -> set[str]:
        return set(self._settled)

    def _flying(self) -> set[str]:
        """Episodes handed to updates that no checkpoint covers yet."""
        return {e for f in self._in_flight for _, eids in f["groups"] for e in eids}

    def _first_evaluation(self, record: ResultRecord) -> bool:
        """Whether its task and seed are the first evaluated at its policy version: an episode manager
        respawned mid-round starts its round again, and a seed counted twice would weigh double."""
        key = f"{record.task}/{record.seed}"
        seen = self._evaluated.setdefault(record.policy_version, [])
        if key in seen:
            return False
        seen.append(key)
        for version in sorted(self._evaluated)[:-EVALUATED_VERSIONS]:
            del self._evaluated[version]
        return True

    def _tally_outcome(self, kind: str, record: ResultRecord) -> None:
        tally = self._tally[kind]
        tally["episodes"] += 1
        tally["successes"] += int(record.success)
        tally["version_sum"] += record.policy_version
        tally[f"task_n/{record.task}"] += 1
        tally[f"task_s/{record.task}"] += int(record.success)

    def _path(self, eid: str, suffix: str) -> Path:
        assert self.directory is not None
        return self.directory / EPISODES_DIR / f"{_file_stem(eid)}.{suffix}"

    def _save_state(self, *, durable: bool = False) -> None:
        """Rewrite state.json (atomic rename). durable: first flush every journal file to disk
        (os.sync, once per checkpoint rather than an fsync per file), then write it fsynced."""
        if self.directory is None:
            return
        state = {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "policy_version": self.policy_version,
            "counters": dict(self.counters),
            "groups": self._groups,
            "abandoned": self._abandoned,
            "ready": self._ready,
            "in_flight": self._in_flight,
            "settled": self._settled,
            "tally": {k: dict(v) for k, v in self._tally.items()},
            "evaluated": sorted(self._evaluated.items()),
            "trajectories": sorted(self._trajectories),
        }
        if durable:
            os.sync()
            write_json(self.directory / STATE_FILE, state)
        else:
            replace_write(self.directory / STATE_FILE, json.dumps(state).encode())
        # Files of forgotten episodes go after the state that no longer lists them: a kill in between
        # leaves orphan files (cleaned up at the next load), never a state naming missing files.
        for path in self._doomed:
            path.unlink(missing_ok=True)
        self._doomed = []

    def _load(self) -> None:
        """Rebuild from the journal. Halves written but not yet in state.json (a crash between the
        two writes, or before the first state.json) are taken in again as if they had just arrived.
        Unreadable files (an OS crash) are dropped with a warning; an episode of state.json with one is
        settled as `lost` and its group goes on without it."""
        assert self.directory is not None
        known_trajectories: set[str] = set()
        if (self.directory / STATE_FILE).exists():
            known_trajectories = self._restore_state(json.loads((self.directory / STATE_FILE).read_text()))
        flying = self._flying()
        known_trajectories |= flying
        held = {e for g in self._groups.values() for e in g["members"]}
        held |= {e for _, eids in self._ready for e in eids} | flying
        settled = set(self._settled)
        late_results, late_trajectories = [], []
        unreadable: dict[str, str] = {}  # file name -> why
        lost: set[str] = set()  # episodes with an unreadable file (then: those of them state.json counted)
        for path in sorted((self.directory / EPISODES_DIR).iterdir()):
            if is_tmp(path):  # a write interrupted by the crash; its episode was never taken in
                path.unlink()
                continue
            is_result = path.name.endswith(".result.json")
            if not is_result and not path.name.endswith(".traj.npz"):
                continue
            try:
                record = load_result(path) if is_result else load_trajectory(path)
            except UNREADABLE as exc:
                unreadable[path.name] = f"{type(exc).__name__}: {exc}"
                eid = unquote(path.name.removesuffix(".result.json" if is_result else ".traj.npz"))
                lost.add(eid)
                if not is_result and eid in known_trajectories and eid not in held:
                    self.counters["trajectories_dropped"] += 1  # it had arrived, waiting for its result
                path.unlink()
                continue
            eid = record.episode_id
            if eid in (held if is_result else known_trajectories):
                (self._results if is_result else self._trajectories)[eid] = record
            elif eid not in settled:
                (late_results if is_result else late_trajectories).append(record)
            else:
                path.unlink()
        missing = [e for e in held - lost if e not in self._results]
        if missing:
            raise ValueError(f"{self.directory}: state.json lists episodes {missing[:5]} whose result "
                             "files are gone; the journal was edited by hand or the disk lost files")
        lost &= held
        if unreadable:
            self._drop_lost(lost)
            self.counters["journal_unreadable"] += len(unreadable)
            warnings.warn(f"{self.directory}: dropped {len(unreadable)} unreadable journal file(s), written just "
                          f"before an OS crash or power cut: {unreadable}; {len(lost)} episode(s) of "
                          "state.json are settled as lost", RuntimeWarning, stacklevel=3)
            self._save_state()
        for record in late_trajectories:
            if record.episode_id not in lost:
                self.add_trajectory(record)
        for record in late_results:
            self.add_result(record)

    def _drop_lost(self, lost: set[str]) -> None:
        """Settle as `lost` the episodes of state.json that lost a file; their groups go on without them
        (a lost member of an open group still counts as one of its results)."""
        for gid, group in list(self._groups.items()):
            gone = [e for e in group["members"] if e in lost]
            if gone:
                group["members"] = [e for e in group["members"] if e not in lost]
                self._settle(gone, "lost")
                self._maybe_close(gid)
        self._take_out(lost, "lost", in_flight=True)

    def _restore_state(self, state: dict) -> set[str]:
        """Counters, groups, queues from state.json; returns the ids of the trajectories it held."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.directory / STATE_FILE}: format {state.get('format')!r}, expected "
                             f"{STATE_FORMAT}; start the buffer in an empty directory")
        saved = GRPOConfig.from_dict(state["config"])
        if saved.groups_per_update != self.config.groups_per_update:
            raise ValueError(f"{self.directory}: buffer was built with groups_per_update="
                             f"{saved.groups_per_update}; resume with the same value or start a new run directory")
        self.policy_version = state["policy_version"]
        self.counters = Counter(state["counters"])
        self._groups = state["groups"]
        for group in self._groups.values():  # older journals: a group's age counts from now
            group.setdefault("version", self.policy_version)
        self._abandoned = [(gid, seen) for gid, seen in state.get("abandoned", [])]
        self._ready = [(gid, list(eids)) for gid, eids in state["ready"]]
        self._in_flight = [{"update": f["update"], "groups": [(g, list(e)) for g, e in f["groups"]]}
                           for f in state["in_flight"]]
        self._settled = list(state["settled"])
        self._tally = {k: Counter(v) for k, v in state["tally"].items()}
        self._evaluated = {int(v): list(keys) for v, keys in state.get("evaluated", [])}  # absent in older journals
        return set(state["trajectories"])
