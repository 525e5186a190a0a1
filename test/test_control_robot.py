"""Robot configs: the shipped sim Panda loads and matches its model; bad files are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sensor_msgs.msg import JointState

from vla_rl_ros.control import SIM_PANDA, Commander, RobotConfig, make_kinematics
from vla_rl_ros.control.kinematics import ArmModel
from vla_rl_ros.ros.convert import proprio_from_joint_state
from vla_rl_ros.sim.env import EnvConfig


def sim_panda_dict() -> dict:
    return yaml.safe_load(Path(RobotConfig.load(SIM_PANDA).source).read_text())


def write(tmp_path: Path, data: dict) -> Path:
    data = {**data, "model": str(RobotConfig.load(SIM_PANDA).model_path())}
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sim_panda_matches_the_sim_core() -> None:
    robot = RobotConfig.load(SIM_PANDA)
    kinematics = make_kinematics(robot)
    env = EnvConfig()
    assert robot.joints == kinematics.joint_names and robot.gripper.joint in kinematics.finger_joint_names
    assert robot.workspace.low == env.workspace_low and robot.workspace.high == env.workspace_high
    assert robot.max_translation == env.max_translation and robot.period == env.control_dt
    assert robot.gripper.open == kinematics.finger_travel
    np.testing.assert_array_equal(kinematics.velocity_limits, robot.velocity_limits)  # the sim core's speed limits
    assert robot.command_joints == (*kinematics.joint_names, "finger_joint1")
    assert robot.action_dims == (4, 7)


def test_config_limits_tighten_the_model_limits(tmp_path: Path) -> None:
    data = sim_panda_dict()
    data["joint_lower"] = [-2.5] * 7
    data["joint_upper"] = [9.0] * 7  # looser than the model: the model's limits still apply
    robot = RobotConfig.load(write(tmp_path, data))
    commander = Commander(robot, make_kinematics(robot))
    kinematics = ArmModel.from_mjcf(robot.model_path())
    np.testing.assert_array_equal(commander.lower, np.maximum(-2.5, kinematics.lower))
    np.testing.assert_array_equal(commander.upper, kinematics.upper)
    assert np.all(commander.max_step <= robot.max_joint_step)


@pytest.mark.parametrize(("change", "message"), [
    ({"max_joint_stepp": 0.1}, "unknown key(s) ['max_joint_stepp']"),
    ({"velocity_limits": [1.0] * 6}, "velocity_limits=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0) must be 7"),
    ({"workspace": {"low": [0, 0, 1], "high": [1, 1, 0.5]}}, "must be below high"),
    ({"action_mode": "torque"}, "action_mode='torque' must be one of"),
    ({"gripper": {"joint": "finger_joint1", "open": 0.04, "closed": 0.04}}, "must be finite and differ"),
    ({"joints": ["joint1", "joint1"]}, "must be distinct"),
    ({"home": [0.0, float("nan"), 0, 0, 0, 0, 0]}, "home="),
    ({"control_rate_hz": 0}, "control_rate_hz=0"),
    ({"gripper": {"joint": "finger_joint1", "open": 0.04, "closed": 0.0, "binary": "false"}},
     "binary='false' must be a bool (true or false, unquoted)"),
    ({"max_joint_step": "0.05"}, "max_joint_step='0.05' must be a float"),
    ({"velocity_limits": [1.0] * 6 + ["fast"]}, "velocity_limits[6]='fast' must be a float"),
    ({"joints": "joint1"}, "joints='joint1' must be a list of str"),
])
def test_bad_configs_are_refused_by_name(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        RobotConfig.load(write(tmp_path, {**sim_panda_dict(), **change}))
    assert message in str(err.value)
    assert "robot.yaml" in str(err.value)


@pytest.mark.parametrize(("open_", "closed"), [(0.08, 0.0), (0.04, -0.02)], ids=["width", "negative"])
def test_a_gripper_beyond_the_models_fingers_is_refused(tmp_path: Path, open_: float, closed: float) -> None:
    """The arm's limits are narrowed to the model's; the gripper's positions went out as they were."""
    gripper = {"joint": "finger_joint1", "open": open_, "closed": closed}
    robot = RobotConfig.load(write(tmp_path, {**sim_panda_dict(), "gripper": gripper}))
    with pytest.raises(ValueError, match=r"must lie in the model's finger range \[0, 0.04\] m"):
        Commander(robot, make_kinematics(robot))


def test_missing_files_and_wrong_joint_counts_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no robot config at"):
        RobotConfig.load(tmp_path / "nope.yaml")
    data = {**sim_panda_dict(), "model": "missing.urdf"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(FileNotFoundError, match=r"no model file at .*missing.urdf"):
        make_kinematics(RobotConfig.load(tmp_path / "r.yaml"))
    six = RobotConfig.load(write(tmp_path, {**sim_panda_dict(), "joints": [f"ur_j{i}" for i in range(6)],
                                            "velocity_limits": [1.0] * 6}))
    with pytest.raises(ValueError, match=r"6 joints .* for a model with 7 arm joints"):
        make_kinematics(six)


def test_the_real_panda_example_maps_driver_names_and_leaves_the_gripper_out() -> None:
    robot = RobotConfig.load(SIM_PANDA.replace("sim_panda", "franka_panda"))
    commander = Commander(robot, make_kinematics(robot))
    assert robot.command_joints == tuple(f"panda_joint{i}" for i in range(1, 8))  # no gripper in the JTC goal
    cmd = commander.command(commander.home, np.array([0.5, 0.0, 0.0, 1.0]))
    assert commander.positions(cmd).shape == (7,)
    moved = commander.kinematics.fk(cmd.arm)[0] - commander.kinematics.fk(commander.home)[0]
    assert 0 < moved[0] <= robot.max_translation + 1e-3  # the example's slower steps
    assert np.all(np.abs(cmd.arm - commander.home) <= robot.max_joint_step + 1e-12)
    assert np.all(commander.lower >= robot.joint_lower) and np.all(commander.upper <= robot.joint_upper)


# A 6-joint arm that is not a Panda, as its URDF would describe it: its own joint names, no sites (the TCP is a
# link plus an offset), no home keyframe, no Panda fingers (its gripper is the driver's, in rad).
SIX_JOINTS = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint",
              "wrist_3_joint"]
SIX_LINKS = [("shoulder_link", "0 0 0.15", "0 0 1"), ("upper_arm_link", "0 0 0.1", "0 1 0"),
             ("forearm_link", "0.4 0 0", "0 1 0"), ("wrist_1_link", "0.35 0 0", "0 1 0"),
             ("wrist_2_link", "0.05 0 0", "0 0 1"), ("wrist_3_link", "0 0 -0.05", "1 0 0")]


def six_joint_arm(tmp_path: Path, **change: object) -> Path:
    """A robot config and the URDF it names, written to tmp_path."""
    inertial = ('<inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/>'
                "</inertial>")
    parts, parent = ['<robot name="six"><link name="base_link"/>'], "base_link"
    for (link, xyz, axis), joint in zip(SIX_LINKS, SIX_JOINTS, strict=True):
        parts += [f'<link name="{link}">{inertial}</link>',
                  f'<joint name="{joint}" type="revolute"><parent link="{parent}"/><child link="{link}"/>'
                  f'<origin xyz="{xyz}"/><axis xyz="{axis}"/>'
                  '<limit lower="-3.1" upper="3.1" effort="100" velocity="2"/></joint>']
        parent = link
    (tmp_path / "six.urdf").write_text("".join(parts) + "</robot>")
    config = {"name": "six", "model": "six.urdf", "joints": SIX_JOINTS,
              "gripper": {"joint": "gripper_joint", "open": 0.0, "closed": 0.8, "in_trajectory": False},
              "velocity_limits": [1.0] * 6, "max_joint_step": 0.1, "home": [0.0, -1.0, 2.0, -1.0, 0.0, 0.0],
              "tcp": "wrist_3_link", "tcp_offset": [0.15, 0.0, 0.0], "workspace": {"low": [0.3, -0.5, 0.0],
                                                                                "high": [0.9, 0.5, 0.6]}, **change}
    (tmp_path / "six.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "six.yaml"


def test_an_arm_that_is_not_a_panda_is_driven_from_its_urdf(tmp_path: Path) -> None:
    robot = RobotConfig.load(six_joint_arm(tmp_path))
    kinematics = make_kinematics(robot)
    assert kinematics.joint_names == tuple(SIX_JOINTS) and kinematics.finger_travel is None
    commander = Commander(robot, kinematics)
    pos, quat = kinematics.fk(commander.home)
    np.testing.assert_allclose(pos, [0.60522673, 0.0, 0.24207355], atol=1e-6)  # wrist_3_link + 0.15 m along x
    cmd = commander.command(commander.home, np.array([0.02, 0.0, -0.01, 1.0]))
    new_pos, new_quat = kinematics.fk(cmd.arm)
    np.testing.assert_allclose(new_pos - pos, [0.02, 0.0, -0.01], atol=1e-3)  # the IK of its own chain
    assert abs(abs(float(np.dot(new_quat, quat))) - 1) < 1e-5 and not cmd.clamped
    assert commander.positions(cmd).shape == (6,) and cmd.gripper == 0.8  # the gripper is not in its JTC goal
    # The policy's state from its driver's joint_states: 6 joints, the TCP, the gripper's closure in its units.
    msg = JointState(name=[*SIX_JOINTS, "gripper_joint"], position=[*commander.home, 0.2])
    state = proprio_from_joint_state(robot, kinematics, msg)
    np.testing.assert_allclose(state, [*commander.home, *pos, 0.25], atol=1e-6)
    with pytest.raises(ValueError, match="no 'home' keyframe: give the arm's home pose"):
        make_kinematics(RobotConfig.load(six_joint_arm(tmp_path, home=[])))
    with pytest.raises(ValueError, match="no site or body 'tool0'"):
        make_kinematics(RobotConfig.load(six_joint_arm(tmp_path, tcp="tool0")))
