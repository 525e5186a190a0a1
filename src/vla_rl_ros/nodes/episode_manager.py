"""episode_manager: runs one arm's episodes: reset -> announce -> run -> end, and says why each ended.

ROS surface (names relative to the arm's namespace)
  clients     reset_episode   vla_rl_interfaces/ResetEpisode  the sim bridge (or a real-arm reset)
  publishes   episode_start   vla_rl_interfaces/EpisodeStart  reliable, transient local
              episode_result  vla_rl_interfaces/EpisodeResult reliable, depth 100
  subscribes  success         vla_rl_interfaces/SuccessSignal ends the episode as a success
              action_chunk    vla_rl_interfaces/ActionChunk   progress, and the policy version acting
              estop           std_msgs/Bool                   true ends the episode as estop
              /policy_update  vla_rl_interfaces/PolicyUpdate  every eval_every_versions: an evaluation round
  parameters  see Params below (config/episode_manager.yaml)

Time-outs count control steps as ROS time (max_steps / control_rate_hz): with use_sim_time and the
sim bridge's lockstep clock, that is exactly the number of steps executed. An episode in which no
action chunk arrives for lost_node_timeout_s of wall time ends as lost_node: a dead policy sends
none, and a dead arm stops the executor's requests (joint_states alone prove nothing: a bridge
re-sends them while idle). Evaluation episodes are marked so the learner never trains on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import Bool
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart, PolicyUpdate, SuccessSignal
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.episodes import EpisodePlan, Scheduler
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE

TICK_S = 0.02  # wall-clock period of the state machine


@dataclass
class Params:
    tasks: list[str] = param(["reach", "push", "lift", "pick_place", "stack"], "tasks to schedule (vla-rl tasks)")
    group_size: int = param(8, "rollouts per GRPO group (same task, same seed); SimpleVLA-RL uses 8",
                            unit="episodes", low=1, high=1024)
    arm_index: int = param(0, "this arm's index among num_arms (splits the evaluation seeds)", low=0, high=1023)
    num_arms: int = param(1, "how many arms share the evaluation seeds", low=1, high=1024)
    eval_seeds_per_task: int = param(0, "held-out seeds per task in an evaluation round; 0: no evaluation",
                                     unit="episodes", low=0, high=1000)
    eval_every_versions: int = param(0, "an evaluation round after every N policy versions (and one at the "
                                     "start); 0: only at the start", unit="versions", low=0, high=100000)
    control_rate_hz: float = param(10.0, "control steps per second (converts max_steps to ROS time)", unit="Hz",
                                   low=0.1, high=1000.0)
    lost_node_timeout_s: float = param(60.0, "wall time without an action chunk before the episode ends as "
                                       "lost_node", unit="s", low=0.5, high=3600.0)
    max_episodes: int = param(0, "stop after this many episodes; 0: run until shut down", low=0, high=10**9)
    seed: int = param(0, "seed of the task/seed schedule", low=0, high=2**31 - 1)
    reset_timeout_s: float = param(30.0, "wall time a reset may take before it is retried", unit="s",
                                   low=0.1, high=3600.0)

    def __post_init__(self) -> None:
        if self.arm_index >= self.num_arms:
            raise ValueError(f"arm_index={self.arm_index} must be below num_arms={self.num_arms}")


class EpisodeManager(Node):
    def __init__(self) -> None:
        super().__init__("episode_manager")
        self.params = p = declare(self, Params)
        try:
            self.scheduler = Scheduler(p.tasks, group_size=p.group_size, arm=self.get_namespace(),
                                       arm_index=p.arm_index, num_arms=p.num_arms,
                                       eval_seeds_per_task=p.eval_seeds_per_task, seed=p.seed)
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        self.scheduler.request_evaluation()  # the starting point, before any update
        self.drops = DropLog(self.get_logger())
        self.wall = Clock(clock_type=ClockType.STEADY_TIME)

        self.start_pub = self.create_publisher(EpisodeStart, "episode_start", LATCHED)
        self.result_pub = self.create_publisher(EpisodeResult, "episode_result", EPISODES)
        self.reset_client = self.create_client(ResetEpisode, "reset_episode")
        self.create_subscription(SuccessSignal, "success", self.on_success, RELIABLE)
        self.create_subscription(ActionChunk, "action_chunk", self.on_chunk, RELIABLE)
        self.create_subscription(Bool, "estop", self.on_estop, RELIABLE)
        self.create_subscription(PolicyUpdate, "/policy_update", self.on_policy_update, LATCHED)

        self.plan: EpisodePlan | None = None      # the episode being reset or run
        self.running = False
        self.reset_future = None
        self.reset_sent_at = 0.0
        self.start_time = self.get_clock().now()
        self.last_progress = 0.0
        self.policy_version = 0
        self.versions_seen: set[int] = set()
        self.episodes_done = 0
        self.instruction = ""
        self.ending: str | None = None            # set by callbacks, acted on by the tick
        self.waiting_logged = False
        self.create_timer(TICK_S, self.tick, clock=self.wall)
        self.get_logger().info(f"scheduling {p.tasks} in groups of {p.group_size}")

    # -- inputs ------------------------------------------------------------------------------
    def on_success(self, msg: SuccessSignal) -> None:
        if self.running and self.plan and msg.episode_id == self.plan.episode_id and msg.success:
            self.ending = self.ending or EpisodeResult.END_SUCCESS

    def on_chunk(self, msg: ActionChunk) -> None:
        if self.running and self.plan and msg.episode_id == self.plan.episode_id:
            self.policy_version = msg.policy_version
            self.last_progress = time.monotonic()

    def on_estop(self, msg: Bool) -> None:
        if msg.data and self.running:
            self.ending = EpisodeResult.END_ESTOP

    def on_policy_update(self, msg: PolicyUpdate) -> None:
        if msg.version in self.versions_seen:
            return
        self.versions_seen.add(msg.version)
        every = self.params.eval_every_versions
        if every and msg.version % every == 0:
            self.scheduler.request_evaluation()

    # -- the state machine -------------------------------------------------------------------
    def tick(self) -> None:
        if self.running:
            self.check_running()
        elif self.reset_future is not None:
            self.check_reset()
        elif not self.params.max_episodes or self.episodes_done < self.params.max_episodes:
            self.begin_reset()

    def graph_ready(self) -> bool:
        """A reset service to call and a policy to answer chunk requests."""
        return self.reset_client.service_is_ready() and self.count_publishers("action_chunk") > 0

    def begin_reset(self) -> None:
        if not self.graph_ready():
            if not self.waiting_logged:
                self.get_logger().info("waiting for the reset_episode service and a policy (action_chunk)")
                self.waiting_logged = True
            return
        self.waiting_logged = False
        self.plan = self.plan or self.scheduler.next()
        request = ResetEpisode.Request(task=self.plan.task, seed=self.plan.seed, episode_id=self.plan.episode_id)
        self.reset_future = self.reset_client.call_async(request)
        self.reset_sent_at = time.monotonic()

    def check_reset(self) -> None:
        assert self.plan is not None and self.reset_future is not None
        if not self.reset_future.done():
            if time.monotonic() - self.reset_sent_at > self.params.reset_timeout_s:
                self.get_logger().warning(f"reset of {self.plan.episode_id} took over "
                                          f"{self.params.reset_timeout_s:.0f} s; retrying")
                self.reset_future.cancel()
                self.reset_future = None
            return
        response = self.reset_future.result()
        self.reset_future = None
        if response is None or not response.success:
            why = response.message if response is not None else "no response"
            self.get_logger().error(f"reset {self.plan.task}/{self.plan.seed} failed: {why}; skipping it")
            self.plan = None
            return
        plan = self.plan
        # The reset state's own stamp: this node's clock may not have caught up with it yet.
        reset_at = Time.from_msg(response.stamp, clock_type=self.get_clock().clock_type)
        self.start_time = reset_at if reset_at.nanoseconds else self.get_clock().now()
        self.last_progress = time.monotonic()
        self.ending = None
        self.running = True
        msg = EpisodeStart(episode_id=plan.episode_id, arm=self.get_namespace(), task=plan.task, seed=plan.seed,
                           group_id=plan.group_id, instruction=response.instruction, evaluation=plan.evaluation,
                           max_steps=plan.max_steps)
        msg.header.stamp = self.start_time.to_msg()
        self.instruction = response.instruction
        self.start_pub.publish(msg)

    def steps_elapsed(self) -> int:
        elapsed = (self.get_clock().now() - self.start_time).nanoseconds * 1e-9
        return max(0, round(elapsed * self.params.control_rate_hz))

    def check_running(self) -> None:
        assert self.plan is not None
        if self.ending is None:
            if self.steps_elapsed() >= self.plan.max_steps:
                self.ending = EpisodeResult.END_TIMEOUT
            elif time.monotonic() - self.last_progress > self.params.lost_node_timeout_s:
                self.ending = EpisodeResult.END_LOST_NODE
        if self.ending is not None:
            self.finish(self.ending)

    def finish(self, reason: str) -> None:
        assert self.plan is not None
        plan, success = self.plan, reason == EpisodeResult.END_SUCCESS
        msg = EpisodeResult(episode_id=plan.episode_id, arm=self.get_namespace(), group_id=plan.group_id,
                            task=plan.task, seed=plan.seed, instruction=self.instruction, success=success,
                            reward=1.0 if success else 0.0, steps=min(self.steps_elapsed(), plan.max_steps),
                            policy_version=self.policy_version, evaluation=plan.evaluation, end_reason=reason)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.result_pub.publish(msg)
        self.running, self.plan, self.ending = False, None, None
        self.episodes_done += 1
        kind = "eval" if plan.evaluation else f"group {plan.group_id[-6:]}"
        line = (f"episode {self.episodes_done} {plan.task}/{plan.seed} ({kind}, policy v{self.policy_version}): "
                f"{reason} after {msg.steps} steps")
        if reason == EpisodeResult.END_LOST_NODE:  # rclpy wants one severity per call site
            self.get_logger().warning(line + f" (no progress for {self.params.lost_node_timeout_s:.0f} s)")
        else:
            self.get_logger().info(line)
        if self.params.max_episodes and self.episodes_done >= self.params.max_episodes:
            self.get_logger().info(f"ran the {self.params.max_episodes} episodes asked for; exiting")
            rclpy.try_shutdown(context=self.context)


def main(args: list[str] | None = None) -> int:
    return run_node(EpisodeManager, args)
