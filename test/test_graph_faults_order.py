"""Delivery-order faults at the policy node: an episode's result overtaken by the arm's next
EpisodeStart (different topics carry no order; the soak lost 38 of 60 trajectories this way under load
before the node kept replaced episodes for their result)."""

from __future__ import annotations

import pytest
from rosgraph import RosGraph
from test_graph_policy import checkpoints, start_policy  # noqa: F401  (a module fixture)

pytestmark = pytest.mark.graph


def test_a_result_overtaken_by_the_next_start_still_yields_the_trajectory(ros_graph: RosGraph,
                                                                          checkpoints) -> None:  # noqa: F811
    arms = start_policy(ros_graph, checkpoints[0])
    arms.start("arm0", "ep-1")
    arms.observe("arm0", sec=1)
    arms.request("arm0", "ep-1", 1, sec=1)
    arms.wait(lambda: arms.chunks["arm0"], "ep-1's chunk")
    # ep-2 starts (and is served: the node has seen the start) before ep-1's result arrives.
    arms.start("arm0", "ep-2")
    arms.observe("arm0", sec=2)
    arms.request("arm0", "ep-2", 1, sec=2, step=0)
    arms.wait(lambda: len(arms.chunks["arm0"]) == 2, "ep-2's chunk")
    arms.end("arm0", "ep-1")
    arms.wait(lambda: arms.trajectories["arm0"], "ep-1's trajectory")
    first = arms.trajectories["arm0"][0]
    assert (first.episode_id, list(first.steps), list(first.token_ids)) == (
        "ep-1", [0], list(arms.chunks["arm0"][0].token_ids))
    # The running episode is unaffected: its own result gives its own trajectory.
    arms.end("arm0", "ep-2")
    arms.wait(lambda: len(arms.trajectories["arm0"]) == 2, "ep-2's trajectory")
    assert arms.trajectories["arm0"][1].episode_id == "ep-2"
    assert list(arms.trajectories["arm0"][1].token_ids) == list(arms.chunks["arm0"][1].token_ids)
    assert "episode without a result" not in ros_graph.log("policy_node")
