"""What every task module provides (`TaskSpec`), the privileged state its predicate reads
(`TaskState`), and the shared pieces of initial-state sampling."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vla_rl_ros.sim.scene import OBJECT_SLOTS, PALETTE

if TYPE_CHECKING:
    from vla_rl_ros.sim.env import SimEnv
    from vla_rl_ros.sim.tasks.config import TaskConfig

# Seed splits shared by every task: training draws from the first, evaluation only from the second,
# so a held-out initial state is never trained on (DESIGN.md: unlike SimpleVLA-RL).
TRAIN_SEEDS = range(0, 100_000)
HELDOUT_SEEDS = range(1_000_000, 1_001_000)
# Where objects may start: in front of the arm, inside the front camera's view (m, table frame).
SPAWN_X = (0.38, 0.64)
SPAWN_Y = (-0.22, 0.22)
SPAWN_GAP = 0.03  # m of free table between any two footprints at reset
SPAWN_TRIES = 1000
CUBE_YAW_RANGE = 0.25  # rad either side of the finger axis: a 6 cm cube then spans <= 7.3 cm of the 8 cm opening


@dataclass(frozen=True)
class TaskState:
    """Privileged simulator state, the Python twin of vla_rl_interfaces/TaskState.msg.

    The first objects are the task's roles in the order its `TaskSpec.roles` names them (e.g.
    pick_place: the object to move, then the plate); distractors follow.
    """

    object_names: tuple[str, ...]  # e.g. ("red_cube", "plate", "blue_cylinder")
    object_pos: np.ndarray  # (N, 3) m, world frame
    object_quat: np.ndarray  # (N, 4) wxyz
    ee_pos: np.ndarray  # (3,) m, tool centre point
    ee_quat: np.ndarray  # (4,) wxyz
    gripper: float  # measured closure, 0 open .. 1 closed
    values: dict[str, float] = field(default_factory=dict)  # task-specific named scalars


@dataclass(frozen=True)
class Placement:
    """One thing on the table at reset: a graspable object (slot) or a fixture (plate, target)."""

    name: str  # as reported in TaskState, e.g. "red_cube" or "plate"
    body: str  # scene body: an OBJECT_SLOTS key or a fixture name
    x: float
    y: float
    yaw: float = 0.0
    colour: str | None = None  # a PALETTE key for objects; fixtures keep their scene colour

    @property
    def words(self) -> str:
        """How an instruction names it: "red cube", "plate"."""
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class Layout:
    """A sampled initial state: placements in role order, then distractors."""

    instruction: str
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class TaskSpec:
    """One language-conditioned task: everything the env, the CLI and the success oracle need."""

    name: str
    description: str
    templates: tuple[str, ...]  # instruction templates, formatted with the role names' words
    roles: tuple[str, ...]  # what the leading TaskState objects are, e.g. ("object", "plate")
    config: TaskConfig  # the task module's subclass: max_steps, hold_steps, its thresholds
    sample_fn: Callable[[np.random.Generator, Any], tuple[Placement, ...]]
    success_fn: Callable[[TaskState, Any], bool]
    expert_fn: Callable[[TaskState, Any], np.ndarray]  # -> (4,) [dx, dy, dz, gripper]
    train_seeds: range = TRAIN_SEEDS
    heldout_seeds: range = HELDOUT_SEEDS

    def __post_init__(self) -> None:
        overlap = range(max(self.train_seeds.start, self.heldout_seeds.start),
                        min(self.train_seeds.stop, self.heldout_seeds.stop))
        if overlap:
            raise ValueError(f"task {self.name!r}: train seeds {self.train_seeds} and held-out seeds "
                             f"{self.heldout_seeds} overlap; make the ranges disjoint")

    @property
    def max_steps(self) -> int:
        return self.config.max_steps

    @property
    def hold_steps(self) -> int:
        """Consecutive control steps the predicate must hold for the episode to succeed."""
        return self.config.hold_steps

    def check_seed(self, seed: int) -> str:
        """'train' or 'heldout'; a ValueError naming both ranges for any other seed."""
        if seed in self.train_seeds:
            return "train"
        if seed in self.heldout_seeds:
            return "heldout"
        raise ValueError(f"seed {seed} is in neither seed set of task {self.name!r}: train "
                         f"[{self.train_seeds.start}, {self.train_seeds.stop}), held-out "
                         f"[{self.heldout_seeds.start}, {self.heldout_seeds.stop})")

    def rng(self, seed: int) -> np.random.Generator:
        """The seed's generator, distinct per task (the same seed lays out each task differently)."""
        return np.random.default_rng([seed, zlib.crc32(self.name.encode())])

    def sample(self, seed: int, *, named: int = 0) -> Layout:
        """The seed's initial state and instruction (deterministic).

        named > 0 gives the same scene with the named-th placement, a distractor object, in the first
        role's place (and the instruction naming it): demonstrations of one scene under different
        instructions make the words, not the image, decide the action (`vla-rl demos --name-each-object`).
        """
        self.check_seed(seed)
        rng = self.rng(seed)
        placements = self.sample_fn(rng, self.config)
        if named:
            if named not in self.distractor_objects(placements):
                raise ValueError(f"task {self.name!r}, seed {seed}: named={named} is not a distractor object's "
                                 f"index; this layout's are {self.distractor_objects(placements)}")
            order = list(placements)
            order[0], order[named] = order[named], order[0]
            placements = tuple(order)
        template = self.templates[int(rng.integers(len(self.templates)))]
        words = {role: p.words for role, p in zip(self.roles, placements, strict=False)}
        return Layout(instruction=template.format(**words), placements=placements)

    def distractor_objects(self, placements: tuple[Placement, ...]) -> list[int]:
        """Indices of the distractors that could play the first role instead: graspable objects past
        the roles, when the first role is a graspable object too."""
        if not placements or placements[0].colour is None:
            return []
        return [k for k in range(len(self.roles), len(placements)) if placements[k].colour is not None]

    def success(self, state: TaskState) -> bool:
        """The privileged success predicate, a pure function of the state at one instant."""
        return bool(self.success_fn(state, self.config))

    def expert(self, env: SimEnv) -> np.ndarray:
        """The scripted expert's next action for `env`, in the env's action mode."""
        return env.from_ee_action(self.expert_fn(env.task_state(), self.config))


def pick_objects(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """`count` distinct object slots, each with a distinct colour: [(slot, colour), ...]."""
    slots = list(rng.permutation(list(OBJECT_SLOTS)))
    colours = list(rng.permutation(list(PALETTE)))
    return [(str(s), str(c)) for s, c in zip(slots[:count], colours[:count], strict=True)]


def object_placement(slot: str, colour: str, xy: np.ndarray, rng: np.random.Generator) -> Placement:
    """A graspable object at xy; cubes get a yaw the fixed-orientation gripper can still grasp."""
    shape = OBJECT_SLOTS[slot]
    yaw = float(rng.uniform(-CUBE_YAW_RANGE, CUBE_YAW_RANGE)) if shape == "cube" else 0.0
    return Placement(name=f"{colour}_{shape}", body=slot, x=float(xy[0]), y=float(xy[1]), yaw=yaw,
                     colour=colour)


def scatter(rng: np.random.Generator, radii: list[float], *, x_range: tuple[float, float] = SPAWN_X,
            y_range: tuple[float, float] = SPAWN_Y, gap: float = SPAWN_GAP,
            min_first_distance: float = 0.0, max_first_distance: float = np.inf) -> np.ndarray:
    """(K, 2) positions for footprints of the given radii, no two closer than r_i + r_j + gap; the
    second lies between min_ and max_first_distance from the first (for push/stack distances)."""
    for _ in range(SPAWN_TRIES):
        xy = np.column_stack([rng.uniform(*x_range, len(radii)), rng.uniform(*y_range, len(radii))])
        dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        need = np.add.outer(radii, radii) + gap
        np.fill_diagonal(need, 0.0)
        if np.any(dist < need):
            continue
        if len(radii) > 1 and not min_first_distance <= dist[0, 1] <= max_first_distance:
            continue
        return xy
    raise RuntimeError(f"could not place footprints {radii} in x {x_range}, y {y_range} after "
                       f"{SPAWN_TRIES} tries; widen the spawn area or use fewer objects")
