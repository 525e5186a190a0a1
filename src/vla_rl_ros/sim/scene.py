"""Where the scene files are, what is in them (as named constants), and their MuJoCo ids.

The sizes here mirror sim/tabletop.xml; `SceneIds` checks them against the loaded model, so the
XML and the task predicates cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from vla_rl_ros.paths import package_share

PACKAGE = "vla_rl_ros"
SCENE_FILE = "tabletop.xml"
ARM_FILE = "panda.xml"

# Graspable object slots in the scene (body = joint = geom name) and their shape word.
OBJECT_SLOTS: dict[str, str] = {
    "cube_a": "cube", "cube_b": "cube", "cylinder_a": "cylinder", "cylinder_b": "cylinder",
}
OBJECT_HALF_SIZE = 0.03  # m: cube half edge, cylinder radius and half height (6 cm objects)
FIXTURES: tuple[str, ...] = ("plate", "target", "cabinet")
PLATE_RADIUS = 0.09  # m
PLATE_TOP = 0.01  # m above the table
TARGET_HALF_SIZE = 0.06  # m: the target square's half edge
DRAWER_JOINT = "drawer"
DRAWER_OPENING = "drawer_opening"  # TaskState.values key: how far the drawer is pulled out (m)
HANDLE_OFFSET = (-0.04, 0.0, 0.095)  # m: drawer handle centre from the cabinet origin, drawer closed
# Colours chosen far apart in hue so that a 64 px camera tells them apart (rgba).
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.08, 0.08, 1.0),
    "green": (0.1, 0.7, 0.15, 1.0),
    "blue": (0.1, 0.25, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
}
# Unused objects and fixtures wait on the floor behind the table, out of the cameras' view.
FLOOR_Z = -0.75
PARK_X = -0.9
PARK_Y0, PARK_DY = -0.6, 0.2


def scene_path(name: str = SCENE_FILE) -> Path:
    """Path of one of the project's MJCF files (in the source checkout, else the installed share/)."""
    path = package_share(PACKAGE) / "sim" / name
    if not path.is_file():
        raise FileNotFoundError(f"no MJCF at {path}; reinstall the package (bash scripts/setup.sh)")
    return path


def park_position(index: int) -> np.ndarray:
    """Resting place (3,) of the index-th parked object or fixture."""
    return np.array([PARK_X, PARK_Y0 + PARK_DY * index, FLOOR_Z])


@dataclass(frozen=True)
class SceneIds:
    """Every id the env needs, looked up by name once per model."""

    object_body: dict[str, int]
    object_geom: dict[str, int]
    object_qpos: dict[str, int]  # slot -> qpos address of its free joint (7 numbers: pos, quat)
    object_dof: dict[str, int]  # slot -> dof address (6 numbers)
    fixture_body: dict[str, int]
    drawer_qpos: int  # qpos address of the drawer's slide joint (0 closed, positive open)
    cameras: dict[str, int]

    @classmethod
    def lookup(cls, model: mujoco.MjModel) -> SceneIds:
        ids = cls(
            object_body={s: model.body(s).id for s in OBJECT_SLOTS},
            object_geom={s: model.geom(s).id for s in OBJECT_SLOTS},
            object_qpos={s: int(model.joint(s).qposadr[0]) for s in OBJECT_SLOTS},
            object_dof={s: int(model.joint(s).dofadr[0]) for s in OBJECT_SLOTS},
            fixture_body={f: model.body(f).id for f in FIXTURES},
            drawer_qpos=int(model.joint(DRAWER_JOINT).qposadr[0]),
            cameras={model.camera(i).name: i for i in range(model.ncam)},
        )
        ids._check_sizes(model)
        return ids

    def _check_sizes(self, model: mujoco.MjModel) -> None:
        sizes = {slot: model.geom_size[g] for slot, g in self.object_geom.items()}
        sizes["plate"] = model.geom_size[model.geom("plate").id]
        sizes["target"] = model.geom_size[model.geom("target").id]
        expected = {slot: OBJECT_HALF_SIZE for slot in OBJECT_SLOTS}
        expected |= {"plate": PLATE_RADIUS, "target": TARGET_HALF_SIZE}
        handle = model.body_pos[model.body("drawer").id] + model.body_pos[model.body("drawer_handle").id]
        if not np.allclose(handle, HANDLE_OFFSET):
            raise ValueError(f"the scene's drawer handle sits at {handle} from the cabinet but scene.py expects "
                             f"{HANDLE_OFFSET}; keep sim/{SCENE_FILE} and vla_rl_ros/sim/scene.py in step")
        for name, want in expected.items():
            if not np.isclose(sizes[name][0], want):
                raise ValueError(f"scene geom {name!r} has size {sizes[name][0]} but scene.py expects {want}; "
                                 f"keep sim/{SCENE_FILE} and vla_rl_ros/sim/scene.py in step")
