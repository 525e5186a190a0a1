"""ArmModel: the MJCF's kinematics against Franka's published DH table, IK, limits, trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.control.kinematics import ArmModel, IKConfig
from vla_rl_ros.sim.scene import scene_path

# Franka Emika's modified DH parameters (a, d, alpha) per joint, then the flange; the TCP is 0.1034 m
# further along the flange z axis (https://frankaemika.github.io/docs/control_parameters.html).
DH = [(0, 0.333, 0), (0, 0, -np.pi / 2), (0, 0.316, np.pi / 2), (0.0825, 0, np.pi / 2),
      (-0.0825, 0.384, -np.pi / 2), (0, 0, np.pi / 2), (0.088, 0, np.pi / 2)]
FLANGE_D, TCP_D = 0.107, 0.1034


def dh_tcp(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference forward kinematics straight from the DH table (Craig's convention)."""
    T = np.eye(4)
    for (a, d, alpha), theta in zip(DH, q, strict=True):
        ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
        T = T @ np.array([[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa],
                          [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])
    T = T @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, FLANGE_D + TCP_D], [0, 0, 0, 1]])
    return T[:3, 3], T[:3, :3]


def quat_z_axis(quat: np.ndarray) -> np.ndarray:
    """Third column of the rotation matrix of a unit quaternion wxyz (the TCP's approach axis).
    Plain numpy: this file must not import mujoco before vla_rl_ros picks the GL backend."""
    w, x, y, z = quat
    return np.array([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])


@pytest.fixture(scope="module")
def kinematics() -> ArmModel:
    return ArmModel.from_mjcf(scene_path())


def random_q(kinematics: ArmModel, rng: np.random.Generator, spread: float = 1.0) -> np.ndarray:
    q = kinematics.home + spread * rng.uniform(-0.5, 0.5, kinematics.dof)
    return np.clip(q, kinematics.lower, kinematics.upper)


def test_joint_names_limits_and_home_are_the_pandas(kinematics: ArmModel) -> None:
    assert kinematics.joint_names == tuple(f"joint{i}" for i in range(1, 8))
    np.testing.assert_allclose(kinematics.upper, [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    np.testing.assert_allclose(kinematics.lower, [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    np.testing.assert_allclose(kinematics.velocity_limits, [2.175] * 4 + [2.61] * 3)
    np.testing.assert_allclose(kinematics.home, [0, -np.pi / 4, 0, -3 * np.pi / 4, 0, np.pi / 2, np.pi / 4], atol=1e-5)


def test_fk_matches_the_published_dh_table(kinematics: ArmModel) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = random_q(kinematics, rng, spread=3.0)
        pos, quat = kinematics.fk(q)
        ref_pos, ref_rot = dh_tcp(q)
        np.testing.assert_allclose(pos, ref_pos, atol=1e-6)
        # the hand is mounted -45 deg about z: compare the approach (z) axis, the same in both
        np.testing.assert_allclose(quat_z_axis(quat), ref_rot[:, 2], atol=1e-6)


def test_home_points_the_gripper_down(kinematics: ArmModel) -> None:
    pos, quat = kinematics.fk(kinematics.home)
    np.testing.assert_allclose(quat_z_axis(quat), [0, 0, -1], atol=1e-6)
    assert 0.25 < pos[0] < 0.35 and abs(pos[1]) < 1e-6 and 0.4 < pos[2] < 0.55


def test_ik_reaches_reachable_targets(kinematics: ArmModel) -> None:
    solver = ArmModel(kinematics.model, ik=IKConfig(iterations=100, tolerance=1e-7))
    rng = np.random.default_rng(1)
    for _ in range(10):
        target_pos, target_quat = solver.fk(random_q(solver, rng))
        q = solver.ik(solver.home, target_pos, target_quat)
        pos, quat = solver.fk(q)
        assert np.linalg.norm(pos - target_pos) < 1e-3
        assert min(np.linalg.norm(quat - target_quat), np.linalg.norm(quat + target_quat)) < 1e-2
        assert np.all(q >= solver.lower) and np.all(q <= solver.upper)


def test_ik_out_of_reach_stays_within_limits(kinematics: ArmModel) -> None:
    _, quat = kinematics.fk(kinematics.home)
    q = kinematics.ik(kinematics.home, np.array([3.0, 0.0, 0.5]), quat)
    assert np.all(np.isfinite(q)) and np.all(q >= kinematics.lower) and np.all(q <= kinematics.upper)


def test_clamp_respects_position_and_velocity_limits(kinematics: ArmModel) -> None:
    dt = 0.1
    q = kinematics.clamp(kinematics.home, kinematics.home + 10.0, dt)
    np.testing.assert_allclose(q - kinematics.home,
                               np.minimum(kinematics.velocity_limits * dt, kinematics.upper - kinematics.home))
    q = kinematics.clamp(kinematics.upper, kinematics.upper + 1.0, dt)
    np.testing.assert_allclose(q, kinematics.upper)


def test_trajectory_ends_at_goal_and_stretches_to_the_velocity_limits(kinematics: ArmModel) -> None:
    goal = kinematics.home + 0.01
    traj = kinematics.trajectory(kinematics.home, goal, 0.1, points=5)
    np.testing.assert_allclose(traj.positions[-1], goal)
    np.testing.assert_allclose(traj.times, [0.02, 0.04, 0.06, 0.08, 0.1])
    np.testing.assert_allclose(traj.velocities, 0.1)
    far = kinematics.home.copy()
    far[0] += 1.0
    slow = kinematics.trajectory(kinematics.home, far, 0.1, points=4)
    assert slow.times[-1] == pytest.approx(1.0 / kinematics.velocity_limits[0])
    assert np.all(np.abs(slow.velocities) <= kinematics.velocity_limits + 1e-9)
    with pytest.raises(ValueError, match="points"):
        kinematics.trajectory(kinematics.home, goal, 0.1, points=0)


def test_gripper_command_and_measure_are_inverse(kinematics: ArmModel) -> None:
    for closure in (0.0, 0.25, 1.0):
        assert kinematics.gripper_closure(kinematics.gripper_targets(closure)) == pytest.approx(closure)
    np.testing.assert_allclose(kinematics.gripper_targets(0.0), [0.04, 0.04])


def test_loads_the_bare_arm_mjcf_and_names_bad_files(tmp_path) -> None:
    bare = ArmModel.from_mjcf(scene_path("panda.xml"))
    assert bare.model.nq == 9  # 7 arm joints + 2 fingers, no objects
    with pytest.raises(FileNotFoundError, match="no MJCF"):
        ArmModel.from_mjcf(tmp_path / "missing.xml")
    other = tmp_path / "other.xml"
    other.write_text("<mujoco><worldbody><body><joint name='j'/><geom size='.1'/></body></worldbody></mujoco>")
    with pytest.raises(ValueError, match="joint1"):
        ArmModel.from_mjcf(other)
    with pytest.raises(ValueError, match="damping"):
        IKConfig(damping=0.0)


def test_ee_delta_target_moves_holds_turns_and_clips(kinematics: ArmModel) -> None:
    solver = ArmModel(kinematics.model, ik=IKConfig(iterations=50, tolerance=1e-8))
    pos0, quat0 = solver.fk(solver.home)
    pos, quat = solver.fk(solver.ee_delta_target(solver.home, [0.03, -0.02, -0.04], hold_quat=quat0))
    np.testing.assert_allclose(pos, pos0 + np.array([0.03, -0.02, -0.04]), atol=5e-4)
    assert abs(abs(float(quat @ quat0)) - 1) < 1e-6
    _, quat = solver.fk(solver.ee_delta_target(solver.home, np.zeros(3), rotation=[0, 0, 0.3]))
    assert 2 * np.arccos(min(1.0, abs(float(quat @ quat0)))) == pytest.approx(0.3, abs=1e-3)
    box = (np.array([0.2, -0.4, 0.45]), np.array([0.8, 0.4, 0.6]))
    pos, _ = solver.fk(solver.ee_delta_target(solver.home, [0.0, 0.0, -0.2], hold_quat=quat0, box=box))
    assert pos[2] == pytest.approx(0.45, abs=5e-4)
