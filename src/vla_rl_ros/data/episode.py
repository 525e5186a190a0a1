"""One recorded episode in memory: what the sim demo writer, the recorder and the learner exchange
with the dataset. Shapes: T frames, H x W images, P state dims, A action dims."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

# EpisodeResult.END_* (msg/msg/EpisodeResult.msg): why an episode ended.
# Why an episode ended, one name each (EpisodeResult.END_*: the cores below the nodes cannot import messages).
SUCCESS, TIMEOUT, FAILURE, ESTOP, ABORT, LOST_NODE, ERROR = (
    "success", "timeout", "failure", "estop", "abort", "lost_node", "error")
END_REASONS = (SUCCESS, TIMEOUT, FAILURE, ESTOP, ABORT, LOST_NODE, ERROR)


@dataclass(eq=False)  # arrays make == ambiguous; compare digest() or fields instead
class Episode:
    """A complete episode: per-frame camera images, proprioception and actions, plus its labels.

    Frame t holds the observation the policy saw and the action it then took (LeRobot convention)."""

    task: str  # task name, e.g. "reach" (sim registry key or a real-arm task name)
    instruction: str  # the language instruction; LeRobot's per-episode "task" text
    seed: int  # initial-state seed (sim) or layout number (real arm)
    success: bool
    reward: float  # 1.0 for success, else 0.0 (binary reward, SimpleVLA-RL)
    end_reason: str  # one of END_REASONS
    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8 RGB (all the dataset's cameras to append)
    state: np.ndarray  # (T, P) float32
    actions: np.ndarray  # (T, A) float32
    policy_version: int = 0  # version that acted; 0 for scripted demonstrations
    group_id: str = ""  # GRPO group: rollouts of one task from one initial state share it
    episode_id: str = ""  # EpisodeResult.episode_id, joins the episode to its Trajectory
    evaluation: bool = False  # held-out evaluation with greedy actions
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (T,) or (T, K) float32

    def __post_init__(self) -> None:
        self.state = _float_frames("state", self.state)
        self.actions = _float_frames("actions", self.actions)
        self.extras = {key: _float_frames(f"extras[{key!r}]", value) for key, value in self.extras.items()}
        T = len(self.state)
        if T == 0:
            raise ValueError("an episode needs at least one frame; got state with 0 rows")
        for name, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(
                    f"images[{name!r}] must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}; "
                    "convert float images with (x * 255).round().astype(np.uint8)"
                )
        lengths = {"state": T, "actions": len(self.actions)}
        lengths |= {f"images[{k!r}]": len(v) for k, v in self.images.items()}
        lengths |= {f"extras[{k!r}]": len(v) for k, v in self.extras.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"every per-frame array needs the same length T, got {lengths}")
        if self.end_reason not in END_REASONS:
            raise ValueError(f"end_reason={self.end_reason!r} is not one of {END_REASONS} (EpisodeResult.END_*)")
        if not self.instruction:
            raise ValueError("instruction is empty; pass the language instruction the policy was given")

    @property
    def length(self) -> int:
        """T, the number of frames."""
        return len(self.state)

    def digest(self) -> str:
        """sha256 of the recorded content (frames, arrays, task, seed, instruction, ids), not of the
        labels: an operator's relabel keeps the identity, so merge can tell duplicates apart."""
        h = hashlib.sha256()
        for text in (self.task, self.instruction, str(self.seed), self.episode_id, self.group_id):
            h.update(text.encode() + b"\0")
        for name in sorted(self.images):
            h.update(name.encode() + b"\0")
            h.update(np.ascontiguousarray(self.images[name]).tobytes())
        for name, array in (("state", self.state), ("actions", self.actions), *sorted(self.extras.items())):
            h.update(name.encode() + b"\0")
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


def _float_frames(name: str, value: np.ndarray) -> np.ndarray:
    """Per-frame values as float32 (the stored dtype), finite, (T,) or (T, K)."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim not in (1, 2) or (name in ("state", "actions") and array.ndim != 2):
        raise ValueError(f"{name} must be (T, K) (or (T,) for extras), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.argwhere(~np.isfinite(array))[0][0])
        raise ValueError(f"{name} has a non-finite value at frame {bad}; datasets keep finite numbers only")
    return array


class EpisodeBuilder:
    """Collects an episode frame by frame (a recorder's buffer) and checks each frame as it comes,
    so a bad frame is refused when it arrives rather than when the episode ends."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Drop the frames collected so far (e.g. an episode aborted before it started)."""
        self._images: dict[str, list[np.ndarray]] = {}
        self._state: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._extras: dict[str, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def add(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        action: np.ndarray,
        extras: dict[str, np.ndarray | float] | None = None,
    ) -> None:
        """One frame: camera -> (H, W, 3) uint8, state (P,), the action (A,) taken, extras."""
        extras = extras or {}
        if self._state:
            first = {"cameras": sorted(self._images), "extras": sorted(self._extras)}
            if first != {"cameras": sorted(images), "extras": sorted(extras)}:
                raise ValueError(
                    f"frame {len(self)} has cameras/extras {sorted(images)}/{sorted(extras)}, "
                    f"earlier frames {first['cameras']}/{first['extras']}"
                )
            for name, image in images.items():
                if image.shape != self._images[name][0].shape:
                    raise ValueError(
                        f"frame {len(self)}: camera {name!r} is {image.shape}, "
                        f"earlier frames {self._images[name][0].shape}"
                    )
            if np.shape(state) != self._state[0].shape or np.shape(action) != self._actions[0].shape:
                raise ValueError(
                    f"frame {len(self)}: state {np.shape(state)} / action {np.shape(action)} differ "
                    f"from earlier frames {self._state[0].shape} / {self._actions[0].shape}"
                )
        for name, image in images.items():
            self._images.setdefault(name, []).append(np.asarray(image))
        self._state.append(np.asarray(state, dtype=np.float32))
        self._actions.append(np.asarray(action, dtype=np.float32))
        for key, value in extras.items():
            self._extras.setdefault(key, []).append(np.asarray(value, dtype=np.float32))

    def build(self, **labels: object) -> Episode:
        """The Episode of the frames so far, with `labels` (task, instruction, seed, success, reward,
        end_reason, and optionally policy_version, group_id, episode_id, evaluation)."""
        if not self._state:
            raise ValueError("no frames were added; an episode needs at least one")
        return Episode(
            images={name: np.stack(frames) for name, frames in self._images.items()},  # (T, H, W, 3)
            state=np.stack(self._state),  # (T, P)
            actions=np.stack(self._actions),  # (T, A)
            extras={key: np.stack(values) for key, values in self._extras.items()},
            **labels,
        )
