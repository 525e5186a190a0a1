"""Whole-dataset operations behind `vla-rl dataset`: summary, merge, export, verify."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_rl_ros.data.atomic import DatasetError, writing
from vla_rl_ros.data.dataset import EpisodeDataset


def summary(ds: EpisodeDataset) -> dict:
    """Episodes and frames; per task: episodes, successes and success rate, over all episodes and
    over held-out evaluation episodes alone (greedy rollouts; training rollouts sample, see DESIGN)."""
    per_task: dict[str, dict] = {}
    for meta in ds.episodes_meta():
        entry = per_task.setdefault(meta["task"], {"all": [0, 0], "evaluation": [0, 0], "instructions": set()})
        for group in ("all", "evaluation") if meta["evaluation"] else ("all",):
            entry[group][0] += 1
            entry[group][1] += int(meta["success"])
        entry["instructions"].add(meta["instruction"])
    return {
        "root": str(ds.root),
        "fps": ds.fps,
        "cameras": {name: list(hw) for name, hw in ds.cameras.items()},
        "episodes": len(ds),
        "frames": ds.num_frames,
        "instructions": len(ds.tasks),
        "tasks": {
            task: {
                "episodes": e["all"][0],
                "successes": e["all"][1],
                "success_rate": e["all"][1] / e["all"][0],
                "eval_episodes": e["evaluation"][0],
                "eval_success_rate": e["evaluation"][1] / e["evaluation"][0] if e["evaluation"][0] else None,
                "instructions": len(e["instructions"]),
            }
            for task, e in sorted(per_task.items())
        },
    }


@dataclass(frozen=True)
class MergeResult:
    added: int  # episodes copied into the destination
    duplicates: int  # episodes skipped because the destination already held their content


def merge(dest: str | Path, sources: Sequence[str | Path], *, progress: bool = False) -> MergeResult:
    """Append every episode of `sources` to `dest` once: episodes whose content digest is already in
    `dest` (or was met earlier in this merge) are skipped. `dest` is created like the first source if
    it does not exist. Videos are copied, not re-encoded, so merged frames are bit-identical (with other
    video settings than `dest`'s they are re-encoded, and keep their source's digest all the same). Every
    source is checked before anything is written: a refused merge leaves `dest` as it was."""
    if not sources:
        raise ValueError("merge needs at least one source dataset")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest} is a file, not a dataset folder; merge into a dataset folder (a new one "
                           "is created), e.g. `vla-rl dataset merge merged/ SOURCE...`")
    opened = [EpisodeDataset.open(src) for src in sources]
    out = EpisodeDataset.open(dest) if dest.exists() and any(dest.iterdir()) else None
    for src in opened:
        (out or opened[0]).check_same_schema(src)
    out = out or EpisodeDataset.create_like(dest, opened[0])
    seen = {meta["digest"] for meta in out.episodes_meta()}
    added = duplicates = 0
    total = sum(len(src) for src in opened)
    with tqdm(total=total, desc="merge", unit="episode", disable=not progress) as bar:
        for src in opened:
            for index, meta in enumerate(src.episodes_meta()):
                # episodes recorded by other tools carry no digest: take it from the decoded content,
                # which is also what append stores for them
                digest = meta["digest"] or src[index].digest()
                if digest in seen:
                    duplicates += 1
                else:
                    out.append_from(src, index)
                    seen.add(digest)
                    added += 1
                bar.update()
    return MergeResult(added=added, duplicates=duplicates)


def export_npz(ds: EpisodeDataset, path: str | Path, *, images: bool = True, progress: bool = False) -> Path:
    """Flatten the dataset into one .npz: per-frame arrays concatenated over episodes (N frames),
    `episode_index` (N,) mapping frames to episodes, and per-episode label arrays `episode/<field>`
    (`episode/digest` is "" for episodes recorded without one, by LeRobot: no object array, which
    np.load reads only with pickle allowed)."""
    path = Path(path)
    frames: dict[str, list[np.ndarray]] = {}
    for index in tqdm(range(len(ds)), desc="export", unit="episode", disable=not progress):
        episode = ds.read(index, cameras=None if images else ())
        arrays = {"observation.state": episode.state, "action": episode.actions, **episode.extras}
        arrays |= {f"observation.images.{cam}": value for cam, value in episode.images.items()}
        arrays["episode_index"] = np.full(episode.length, index, dtype=np.int64)
        for key, value in arrays.items():
            frames.setdefault(key, []).append(value)
    out = {key: np.concatenate(values) for key, values in frames.items()}
    for field, values in _columns(ds.episodes_meta()).items():
        out[f"episode/{field}"] = np.asarray(["" if v is None else v for v in values] if field == "digest" else values)
    with writing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out)
    return path


def verify(ds: EpisodeDataset, *, progress: bool = False) -> list[str]:
    """Read every episode back; return one line per problem, each naming the file at fault."""
    problems = []
    for index in tqdm(range(len(ds)), desc="verify", unit="episode", disable=not progress):
        try:
            ds[index]
        except DatasetError as exc:
            problems.append(f"episode {index}: {exc}")
    return problems


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
