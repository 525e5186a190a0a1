"""The task suite: seed splits, layouts, each success predicate on hand-built states (positive and
negative), and the scripted experts' success rate on held-out seeds through the real env."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.sim import TASKS, TaskState, make_env
from vla_rl_ros.sim.scene import DRAWER_OPENING, OBJECT_HALF_SIZE, PLATE_TOP
from vla_rl_ros.sim.tasks.base import SPAWN_X, SPAWN_Y

H = OBJECT_HALF_SIZE
EXPERT_EPISODES = 30  # per task here; the report measures 50 (benchmarks/bench_sim_core.py --experts)
EXPERT_MIN_RATE = 0.95


def make_state(objects: dict[str, tuple[float, float, float]], *, ee=(0.45, 0.0, 0.3), gripper=0.0,
               values: dict[str, float] | None = None) -> TaskState:
    n = len(objects)
    return TaskState(object_names=tuple(objects), object_pos=np.array(list(objects.values()), dtype=float),
                     object_quat=np.tile([1.0, 0, 0, 0], (n, 1)), ee_pos=np.array(ee, dtype=float),
                     ee_quat=np.array([0.0, 1, 0, 0]), gripper=gripper, values=values or {})


def test_task_suite_has_seven_tasks_with_disjoint_seed_splits() -> None:
    assert list(TASKS) == ["reach", "push", "lift", "open_drawer", "pick_place", "stack", "two_on_plate"]
    for spec in TASKS.values():
        assert not set(spec.train_seeds[:1000]) & set(spec.heldout_seeds)
        assert spec.check_seed(spec.train_seeds[0]) == "train"
        assert spec.check_seed(spec.heldout_seeds[-1]) == "heldout"
        assert spec.max_steps > 0 and spec.hold_steps >= 2 and len(spec.templates) >= 2


@pytest.mark.parametrize("task", list(TASKS))
def test_layouts_are_deterministic_separated_and_named_in_the_instruction(task: str) -> None:
    spec = TASKS[task]
    instructions = set()
    for seed in spec.train_seeds[:30]:
        layout = spec.sample(seed)
        assert layout == spec.sample(seed)
        instructions.add(layout.instruction)
        for role, placement in zip(spec.roles, layout.placements, strict=False):
            if placement.colour is not None:  # a named object: its colour and shape are in the text
                assert placement.words in layout.instruction, (role, layout)
        xy = np.array([(p.x, p.y) for p in layout.placements])
        assert np.all((xy[:, 0] >= SPAWN_X[0]) & (xy[:, 0] <= SPAWN_X[1]))
        assert np.all((xy[:, 1] >= SPAWN_Y[0]) & (xy[:, 1] <= SPAWN_Y[1]))
        dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert dist.min() > 2 * H
        colours = [p.colour for p in layout.placements if p.colour]
        assert len(colours) == len(set(colours))  # no two objects share a colour
    assert len(instructions) >= len(spec.templates)  # every template in use (and colours, shapes vary)


@pytest.mark.parametrize("task", ["reach", "lift", "pick_place"])
def test_naming_a_distractor_keeps_the_scene_and_changes_only_who_is_named(task: str) -> None:
    spec = TASKS[task]
    seed = spec.train_seeds[4]
    layout = spec.sample(seed)
    others = spec.distractor_objects(layout.placements)
    assert others and all(layout.placements[k].colour for k in others)
    for k in others:
        swapped = spec.sample(seed, named=k)
        assert set(swapped.placements) == set(layout.placements)  # same objects, same poses
        assert swapped.placements[0] == layout.placements[k] and swapped.placements[k] == layout.placements[0]
        assert layout.placements[k].words in swapped.instruction
        assert swapped.instruction.replace(layout.placements[k].words, layout.placements[0].words) \
            == layout.instruction  # same template
    with pytest.raises(ValueError, match="not a distractor object's index"):
        spec.sample(seed, named=len(layout.placements))
    if len(spec.roles) > 1:
        with pytest.raises(ValueError, match="not a distractor object's index"):
            spec.sample(seed, named=1)  # a role (pick_place's plate) is not a distractor


def test_a_scene_under_another_name_is_the_same_scene_and_the_expert_goes_to_the_named_object() -> None:
    spec = TASKS["reach"]
    seed = spec.train_seeds[4]
    with make_env("reach", cameras=("front",)) as env:
        frame = env.reset(seed).images["front"]
        renamed = env.reset(seed, named=2)
        assert np.array_equal(renamed.images["front"], frame)
        for _ in range(spec.max_steps):
            step = env.step(spec.expert(env))
            if step.done:
                break
        assert step.info["episode_success"] and env.task_state().object_names[0] == spec.sample(seed).placements[2].name


def test_reach_predicate() -> None:
    spec, obj = TASKS["reach"], (0.5, 0.1, H)
    hover = spec.config.hover_height
    assert spec.success(make_state({"red_cube": obj}, ee=(0.5, 0.1, H + hover)))
    assert spec.success(make_state({"red_cube": obj}, ee=(0.52, 0.1, H + hover)))
    assert not spec.success(make_state({"red_cube": obj}, ee=(0.5, 0.2, H + hover)))
    assert not spec.success(make_state({"red_cube": obj}, ee=(0.5, 0.1, 0.3)))


def test_push_predicate() -> None:
    spec = TASKS["push"]
    assert spec.success(make_state({"red_cube": (0.51, 0.02, H), "target": (0.5, 0.0, 0.0)}))
    assert not spec.success(make_state({"red_cube": (0.56, 0.0, H), "target": (0.5, 0.0, 0.0)}))  # on the edge
    assert not spec.success(make_state({"red_cube": (0.5, 0.0, H + 0.05), "target": (0.5, 0.0, 0.0)}))  # lifted


def test_lift_predicate() -> None:
    spec = TASKS["lift"]
    lifted = H + spec.config.lift_height + 0.01
    assert spec.success(make_state({"blue_cylinder": (0.5, 0.0, lifted)}, gripper=0.25))
    assert not spec.success(make_state({"blue_cylinder": (0.5, 0.0, H)}, gripper=0.25))
    assert not spec.success(make_state({"blue_cylinder": (0.5, 0.0, H + 0.05)}, gripper=0.25))


def test_open_drawer_predicate() -> None:
    spec, cabinet = TASKS["open_drawer"], {"drawer": (0.52, 0.1, 0.0)}
    assert spec.success(make_state(cabinet, values={DRAWER_OPENING: 0.12}))
    assert spec.success(make_state(cabinet, gripper=0.6, values={DRAWER_OPENING: 0.12}))  # still holding: fine
    assert not spec.success(make_state(cabinet, values={DRAWER_OPENING: 0.05}))
    assert not spec.success(make_state(cabinet, values={DRAWER_OPENING: 0.0}))


def test_pick_place_predicate() -> None:
    spec = TASKS["pick_place"]
    plate = (0.5, 0.1, 0.0)
    rest = PLATE_TOP + H
    assert spec.success(make_state({"red_cube": (0.51, 0.11, rest), "plate": plate}))
    assert not spec.success(make_state({"red_cube": (0.51, 0.11, rest), "plate": plate}, gripper=0.25))  # held
    assert not spec.success(make_state({"red_cube": (0.5, 0.0, H), "plate": plate}))  # beside the plate
    assert not spec.success(make_state({"red_cube": (0.5, 0.1, rest + 0.05), "plate": plate}))  # above it


def test_stack_predicate() -> None:
    spec = TASKS["stack"]
    base = (0.5, 0.0, H)
    assert spec.success(make_state({"red_cube": (0.505, 0.0, 3 * H), "green_cube": base}))
    assert not spec.success(make_state({"red_cube": (0.505, 0.0, 3 * H), "green_cube": base}, gripper=0.25))
    assert not spec.success(make_state({"red_cube": (0.6, 0.0, H), "green_cube": base}))  # side by side
    assert not spec.success(make_state({"red_cube": (0.5, 0.0, 3 * H + 0.04), "green_cube": base}))  # in the air
    assert not spec.success(make_state({"red_cube": (0.5, 0.0, 5 * H), "green_cube": (0.5, 0.0, 3 * H)}))


def test_two_on_plate_predicate() -> None:
    spec = TASKS["two_on_plate"]
    plate, rest = (0.5, 0.1, 0.0), PLATE_TOP + H
    both = {"red_cube": (0.46, 0.1, rest), "blue_cylinder": (0.54, 0.1, rest), "plate": plate}
    assert spec.success(make_state(both))
    assert not spec.success(make_state(both, gripper=0.25))
    assert not spec.success(make_state({**both, "blue_cylinder": (0.5, -0.1, H)}))  # one still on the table
    assert not spec.success(make_state({**both, "red_cube": (0.5, 0.1, rest + 0.06)}))  # one held above


def run_expert(env, seed: int) -> bool:
    env.reset(seed)
    while True:
        result = env.step(env.task.expert(env))
        if result.done:
            return result.info["episode_success"]


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds_on_heldout_seeds(task: str) -> None:
    spec = TASKS[task]
    with make_env(task, cameras=()) as env:
        wins = sum(run_expert(env, seed) for seed in spec.heldout_seeds[:EXPERT_EPISODES])
    assert wins / EXPERT_EPISODES >= EXPERT_MIN_RATE, f"{task}: {wins}/{EXPERT_EPISODES}"


@pytest.mark.parametrize("mode", [("ee_delta", 7), ("joint_position", None)])
def test_expert_drives_every_action_mode(mode: tuple[str, int | None]) -> None:
    with make_env("pick_place", cameras=(), action_mode=mode[0], action_dim=mode[1]) as env:
        assert all(run_expert(env, seed) for seed in TASKS["pick_place"].heldout_seeds[:3])


def test_episode_ends_on_timeout_without_success() -> None:
    with make_env("reach", cameras=()) as env:
        env.reset(TASKS["reach"].heldout_seeds[0])
        for _ in range(TASKS["reach"].max_steps):
            result = env.step(np.array([0.0, 0.0, 0.05, 0.0]))  # away from every object
        assert result.done and not result.success and result.info["end_reason"] == "timeout"
