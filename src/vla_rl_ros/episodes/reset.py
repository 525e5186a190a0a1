"""The reset protocol of a real arm (no ROS): send the arm home, then wait for the operator.

A simulator resets in one service call (ResetEpisode). A real arm cannot: between episodes the
episode manager has the executor step it to the robot config's home pose (`control.Homing`, inside
the executor's own limits: joint limits, per-joint step cap, workspace box), then asks the operator
to restore the layout and press r. A GRPO group is n rollouts from the same initial state, so the
operator is asked to restore the same layout n times, and told which group and rollout comes next.
After an abort or an e-stop the arm is the operator's: nothing moves until they press r (the e-stop
released first).
"""

from __future__ import annotations

from vla_rl_ros.episodes.schedule import EpisodePlan


def plan_label(plan: EpisodePlan) -> str:
    """Where an episode stands, for an operator: "group 3, rollout 5/8 (pick_place, layout 42)"."""
    kind = "evaluation round" if plan.evaluation else "group"
    return f"{kind} {plan.group_index}, rollout {plan.rollout + 1}/{plan.rollouts} ({plan.task}, layout {plan.seed})"


def layout_prompt(plan: EpisodePlan, instruction: str) -> str:
    """What the operator must do before `plan` can start."""
    if plan.rollout == 0 or plan.evaluation:
        todo = f"set up layout {plan.seed} for {instruction!r}"
    else:
        todo = f"restore the layout of rollout 1 ({instruction!r})"
    return f"{plan_label(plan)}: {todo}, then press r"
