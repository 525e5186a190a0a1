"""The core env: every task resets and steps, determinism, action modes, limits, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.sim import STATE_NAMES, TASKS, SimClock, action_names, make_env
from vla_rl_ros.sim.env import EnvConfig

SIZE = 32


def heldout(task: str, i: int = 0) -> int:
    return TASKS[task].heldout_seeds[i]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_resets_and_steps_with_sane_outputs(task: str) -> None:
    with make_env(task, image_size=SIZE) as env:
        obs = env.reset(heldout(task))
        assert obs.instruction and obs.instruction == env.instruction
        rng = np.random.default_rng(0)
        for _ in range(3):
            action = np.concatenate([rng.uniform(-0.05, 0.05, 3), rng.uniform(0, 1, 1)])
            result = env.step(action)
            obs = result.observation
            assert set(obs.images) == {"front", "wrist"}
            for image in obs.images.values():
                assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 0
            assert obs.state.shape == (len(STATE_NAMES),) and obs.state.dtype == np.float32
            assert np.all(np.isfinite(obs.state))
            assert result.info["step"] == env.steps and not result.done
        state = env.task_state()
        n = len(state.object_names)
        assert state.object_pos.shape == (n, 3) and state.object_quat.shape == (n, 4)
        assert np.all(np.isfinite(state.object_pos)) and 0.0 <= state.gripper <= 1.0
        assert set(state.values) == ({"drawer_opening"} if task == "open_drawer" else set())
        np.testing.assert_allclose(obs.state[7:10], state.ee_pos, atol=1e-6)


def test_random_actions_keep_the_physics_sane() -> None:
    """RL explores with noisy actions: physics must stay finite and warning-free, objects on the table."""
    rng = np.random.default_rng(1)
    with make_env("pick_place", cameras=()) as env:
        for seed in range(3):
            env.reset(seed)
            for _ in range(60):
                action = np.concatenate([rng.uniform(-0.05, 0.05, 3), rng.integers(0, 2, 1)])
                assert np.all(np.isfinite(env.step(action).observation.state))
            assert not any(w.number for w in env.data.warning)
            assert np.all(env.task_state().object_pos[:, 2] > -0.01)


def rollout(task: str, seed: int, actions: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with make_env(task, image_size=SIZE) as env:
        obs = env.reset(seed)
        states, images = [obs.state], [obs.images["front"]]
        for action in actions:
            obs = env.step(action).observation
            states.append(obs.state)
            images.append(obs.images["front"])
    return states, images


def test_same_seed_same_initial_state_and_rollout() -> None:
    actions = np.random.default_rng(3).uniform([-0.05, -0.05, -0.05, 0], [0.05, 0.05, 0.05, 1], (8, 4))
    seed = heldout("pick_place", 5)
    a_states, a_images = rollout("pick_place", seed, actions)
    b_states, b_images = rollout("pick_place", seed, actions)
    for a, b in zip(a_states + a_images, b_states + b_images, strict=True):
        np.testing.assert_array_equal(a, b)
    _, c_images = rollout("pick_place", seed + 1, actions[:0])
    assert not np.array_equal(a_images[0], c_images[0])  # another seed, another layout


def test_observed_cameras_render_only_those_and_the_same_frames() -> None:
    with make_env("reach", image_size=SIZE) as env:
        both = env.reset(heldout("reach")).images
        env.set_observed_cameras(["wrist"])
        wrist = env.reset(heldout("reach")).images
        assert list(wrist) == ["wrist"]
        np.testing.assert_array_equal(wrist["wrist"], both["wrist"])  # skipping front changes nothing else
        assert list(env.step(np.zeros(4)).observation.images) == ["wrist"]
        env.set_observed_cameras([])
        assert env.step(np.zeros(4)).observation.images == {}
        with pytest.raises(ValueError, match="not among this env's cameras"):
            env.set_observed_cameras(["side"])
    with make_env("reach", image_size=SIZE, cameras=("front",)) as env, \
            pytest.raises(ValueError, match="not among"):
        env.set_observed_cameras(["wrist"])


def test_envs_side_by_side_do_not_interfere() -> None:
    actions = np.tile([0.03, -0.02, -0.03, 1.0], (5, 1))
    alone, _ = rollout("lift", heldout("lift"), actions)
    with make_env("lift", image_size=SIZE) as one, make_env("push", image_size=SIZE) as other:
        states = [one.reset(heldout("lift")).state]
        other.reset(heldout("push"))
        for action in actions:
            other.step(-action)
            states.append(one.step(action).observation.state)
    for a, b in zip(alone, states, strict=True):
        np.testing.assert_array_equal(a, b)


def test_joint_state_and_sim_clock_follow_the_physics() -> None:
    with make_env("lift", cameras=()) as env:
        env.reset(heldout("lift"))
        clock = SimClock.of(env.config)
        names, q, qd = env.joint_state()
        assert names == (*(f"joint{i}" for i in range(1, 8)), "finger_joint1", "finger_joint2")
        np.testing.assert_allclose(q[7:], 0.04)  # open
        for _ in range(3):
            obs = env.step(np.array([0.02, 0.0, 0.0, 1.0])).observation
            clock.step()
        names, q, qd = env.joint_state()
        np.testing.assert_allclose(q[:7], obs.state[:7])
        assert np.all(q[7:] < 0.005) and np.any(np.abs(qd[:7]) > 1e-3)
        assert clock.now_ns == 300_000_000 and abs(env.data.time * 1e9 - clock.now_ns) < 1  # the physics' time


def test_sim_clock_stamps_are_exact_multiples_of_the_period_however_long_the_run() -> None:
    """MuJoCo's float data.time, rounded to ns, once made step 10,635 of a 10 Hz run 1 ns short of a period,
    and the executor, waiting for a joint state a period later, stalled the lockstep for good."""
    clock = SimClock.of(EnvConfig())
    assert (clock.period_ns, clock.settle_ns) == (100_000_000, 200_000_000)
    stamps = []
    for _ in range(20_000):  # 2000 s of sim time, well past step 10,635
        clock.step()
        stamps.append(clock.now_ns)
    assert set(np.diff(stamps)) == {clock.period_ns} and stamps[-1] == 20_000 * clock.period_ns
    clock.reset()  # settling is sim time too: a reset's first state is later than any before it
    assert clock.now_ns == stamps[-1] + clock.settle_ns


def test_reset_can_switch_task() -> None:
    with make_env("reach", cameras=()) as env:
        env.reset(heldout("reach"))
        env.reset(heldout("stack"), task="stack")
        assert env.task.name == "stack" and len(env.task_state().object_names) == 3


def test_ee_delta_tracks_a_target_point() -> None:
    """Closed-loop IK: repeated deltas towards a point bring the TCP there, orientation held."""
    with make_env("reach", cameras=()) as env:
        env.reset(heldout("reach"))
        start_quat = env.task_state().ee_quat
        target = np.array([0.55, -0.15, 0.15])
        for _ in range(30):
            ee = env.task_state().ee_pos
            env.step(np.array([*np.clip(target - ee, -0.05, 0.05), 0.0]))
        state = env.task_state()
        assert np.linalg.norm(state.ee_pos - target) < 0.005
        assert abs(abs(float(state.ee_quat @ start_quat)) - 1.0) < 1e-3


@pytest.mark.parametrize("binary, action, closure", [(True, 0.45, 0.0), (True, 0.55, 1.0), (False, 0.45, 0.45)])
def test_the_gripper_action_is_binary_unless_configured_proportional(binary: bool, action: float,
                                                                     closure: float) -> None:
    """A sampled gripper token near the middle must not half-close the fingers (OpenVLA's binarised
    gripper); the measured closure follows the command."""
    with make_env("reach", cameras=(), config=EnvConfig(binary_gripper=binary)) as env:
        env.reset(heldout("reach"))
        for _ in range(5):
            result = env.step(np.array([0.0, 0.0, 0.0, action]))
        assert result.info["applied_action"][-1] == pytest.approx(closure)
        assert env.task_state().gripper == pytest.approx(closure, abs=0.05)


def test_workspace_box_and_action_bounds_are_enforced() -> None:
    with make_env("reach", cameras=()) as env:
        env.reset(heldout("reach"))
        for _ in range(25):
            result = env.step(np.array([0.0, 0.0, -1.0, 2.0]))
        np.testing.assert_allclose(result.info["applied_action"], [0.0, 0.0, -0.05, 1.0])
        low = env.config.workspace_low[2]
        assert env.task_state().ee_pos[2] > low - 0.005  # fingertips stay off the table


def test_seven_dim_mode_rotates_and_joint_mode_respects_limits() -> None:
    with make_env("reach", cameras=(), action_dim=7) as env:
        assert env.action_names == action_names("ee_delta", 7)
        env.reset(heldout("reach"))
        q7 = env.task_state().ee_quat
        for _ in range(3):
            env.step(np.array([0, 0, 0, 0, 0, 0.2, 0.0]))
        turned = env.task_state().ee_quat
        angle = 2 * np.arccos(min(1.0, abs(float(turned @ q7))))
        assert 0.45 < angle < 0.65  # about 3 x 0.2 rad of yaw
    with make_env("reach", cameras=(), action_mode="joint_position") as env:
        env.reset(heldout("reach"))
        far = env.kinematics.upper + 1.0
        for _ in range(30):
            result = env.step(np.array([*far, 0.0]))
            applied = result.info["applied_action"][:7]
            assert np.all(applied <= env.kinematics.upper + 1e-6)
        q = result.observation.state[:7]
        assert np.all(q <= env.kinematics.upper + 0.02)


def test_bad_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*reach"):
        make_env("nope")
    with pytest.raises(ValueError, match="unknown camera"):
        make_env("reach", cameras=("top",))
    with pytest.raises(ValueError, match="action_mode"):
        make_env("reach", action_mode="torque")
    with pytest.raises(ValueError, match="4 or 7"):
        make_env("reach", action_dim=5)
    with make_env("reach", cameras=()) as env:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(4))
        with pytest.raises(ValueError, match=r"neither seed set.*held-out"):
            env.reset(-1)
        with pytest.raises(ValueError, match="neither seed set"):
            env.reset(TASKS["reach"].heldout_seeds.stop)
        with pytest.raises(ValueError, match="unknown task"):
            env.reset(0, task="fly")
        env.reset(0)
        with pytest.raises(ValueError, match="4 finite numbers"):
            env.step(np.zeros(7))
        with pytest.raises(ValueError, match="finite"):
            env.step(np.array([np.nan, 0, 0, 0]))
