"""The real-arm reset protocol's core: homing inside the executor's limits on the real MuJoCo arm, and
the prompts that tell the operator which group and rollout come next."""

from __future__ import annotations

import numpy as np

from vla_rl_ros.control import SIM_PANDA, Homing, RobotConfig
from vla_rl_ros.episodes import Scheduler, layout_prompt, plan_label
from vla_rl_ros.sim import make_env


def test_homing_brings_the_sim_arm_home_within_the_joint_step_limits() -> None:
    robot = RobotConfig.load(SIM_PANDA)
    homing = Homing(robot, tolerance=0.02)
    with make_env("reach", cameras=(), action_mode="joint_position") as env:
        env.reset(0)
        away = homing.home + np.array([0.6, -0.4, 0.3, 0.5, -0.3, 0.4, 0.8])
        for _ in range(10):  # drive the arm away first
            env.step(np.append(away, 1.0))
        q = env.joint_state()[1][:7]
        assert not homing.at_home(q)
        steps = 0
        while not homing.at_home(q) and steps < 60:
            command = homing.command(q)
            assert np.all(np.abs(command.arm - q) <= homing.commander.max_step + 1e-9)
            assert command.gripper == robot.gripper.open
            env.step(np.append(command.arm, 0.0))
            q = env.joint_state()[1][:7]
            steps += 1
        assert homing.at_home(q), f"{np.max(np.abs(q - homing.home)):.3f} rad from home after {steps} steps"
        assert steps > 3  # it took several limited steps, not one jump
        assert len(homing.commander.positions(command)) == len(robot.command_joints)


def test_prompts_name_the_group_the_rollout_and_what_to_do() -> None:
    scheduler = Scheduler(["reach"], group_size=3, arm="/arm0", eval_seeds_per_task=2)
    first, second = scheduler.next(), scheduler.next()
    assert plan_label(first) == f"group 1, rollout 1/3 (reach, layout {first.seed})"
    assert layout_prompt(first, "go to the red cube") == \
        f"group 1, rollout 1/3 (reach, layout {first.seed}): set up layout {first.seed} for 'go to the red cube', " \
        "then press r"
    assert layout_prompt(second, "go to the red cube").startswith(
        f"group 1, rollout 2/3 (reach, layout {first.seed}): restore the layout of rollout 1")
    scheduler.next()
    scheduler.request_evaluation()
    evaluation = scheduler.next()
    assert evaluation.evaluation and plan_label(evaluation).startswith("evaluation round 1, rollout 1/2")
    assert scheduler.next().rollout == 1 and scheduler.next().group_index == 2
