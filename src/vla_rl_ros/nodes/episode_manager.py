"""episode_manager: runs one arm's episodes: reset -> announce -> run -> end, and says why each ended.

ROS surface (names relative to the arm's namespace)
  clients     reset_episode   vla_rl_interfaces/ResetEpisode  (reset sim) the sim bridge
              executor/go_home std_srvs/Trigger               (reset operator) asked every 0.5 s while the
                                                              arm goes home; "the arm is home" once it is
  publishes   episode_start   vla_rl_interfaces/EpisodeStart  reliable, transient local
              episode_result  vla_rl_interfaces/EpisodeResult reliable, depth 100
              operator_prompt std_msgs/String                 reliable, transient local: what the manager
                                                              waits for (shown by `vla-rl operator`)
  subscribes  success         vla_rl_interfaces/SuccessSignal ends the episode as a success; an operator's
                                                              verdict (source operator) ends it either way
              action_chunk    vla_rl_interfaces/ActionChunk   progress, and the policy version acting
              estop           std_msgs/Bool                   true ends the episode as estop
              /policy_update  vla_rl_interfaces/PolicyUpdate  every eval_every_versions: an evaluation round
              joint_states    sensor_msgs/JointState          (reset operator) sensor data QoS: the arm's
                                                              clock, which stamps the episode's start
              /diagnostics    diagnostic_msgs/DiagnosticArray the executor's e-stop state (reset operator) and
                                                              why it holds: a sensor fault that lasts
                                                              sensor_fault_abort_s ends the episode as abort
  services    episode_manager/ready  std_srvs/Trigger         (reset operator) the operator restored the
                                                              layout (or, after an abort, the arm is clear)
              episode_manager/abort  std_srvs/Trigger         end the running episode as abort (take over)
  parameters  see Params below (config/episode_manager.yaml)

The state machine is `vla_rl_ros.episodes.ManagerCore` (its docstring says how episodes are reset,
when they end and why); this node converts messages, calls the reset services the core asks for,
tells it which peers are up, and steps it on every input that can end an episode and on a wall-clock
timer. With max_episodes the node exits after that many results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.client import Client
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart, PolicyUpdate, SuccessSignal
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.control import SIM_PANDA, RobotConfig
from vla_rl_ros.episodes import ManagerConfig, ManagerCore, Scheduler, manager
from vla_rl_ros.rl.config import GROUP_SIZE
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import stamp_ns, to_stamp
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    DIAGNOSTICS_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    GO_HOME_SERVICE,
    JOINT_STATES_TOPIC,
    MANAGER_ABORT_SERVICE,
    MANAGER_READY_SERVICE,
    OPERATOR_PROMPT_TOPIC,
    POLICY_UPDATE_TOPIC,
    RESET_EPISODE_SERVICE,
    SUCCESS_TOPIC,
)
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE

# Wall-clock period of the state machine. Verdicts, reset responses and ends move it at once; the tick
# only catches what no message announces (a time-out with nothing judged, a lost node), so it can be
# slow: every rclpy timer wake-up costs about half a millisecond of Python.
TICK_S = 0.1


@dataclass
class Params:
    tasks: list[str] = param(["reach", "lift"], "tasks to schedule (vla-rl tasks); the default: the embedded "
                             "default policy's suite")
    group_size: int = param(GROUP_SIZE, "rollouts per GRPO group (same task, same seed); SimpleVLA-RL uses 8. "
                            "Every EpisodeStart and EpisodeResult carries it: the learner closes a group at it",
                            unit="episodes", low=1, high=1024)
    arm_index: int = param(0, "this arm's index among num_arms (splits the evaluation seeds)", low=0, high=1023)
    num_arms: int = param(1, "how many arms share the evaluation seeds", low=1, high=1024)
    host_index: int = param(0, "this rollout host's index among num_hosts: its arms are host_index * num_arms + "
                            "arm_index of num_hosts * num_arms (every host the same num_arms)", low=0, high=1023)
    num_hosts: int = param(1, "how many rollout hosts share the evaluation seeds", low=1, high=1024)
    eval_seeds_per_task: int = param(0, "held-out seeds per task in an evaluation round; 0: no evaluation",
                                     unit="episodes", low=0, high=1000)
    eval_every_versions: int = param(0, "an evaluation round after every N policy versions (and one at the "
                                     "start); 0: only at the start", unit="versions", low=0, high=100000)
    lost_node_timeout_s: float = param(60.0, "wall time without an action chunk before the episode ends as "
                                       "lost_node", unit="s", low=0.5, high=3600.0)
    verdict_wait_s: float = param(5.0, "wall time a time-out waits for the success detector's verdict on the "
                                  "last step (it may lag behind a lockstep sim); 0: do not wait", unit="s",
                                  low=0.0, high=3600.0)
    sensor_fault_abort_s: float = param(5.0, "wall time the executor may hold on a sensor fault (stale image or "
                                        "joint states, joint states outside the joint limits) before the episode "
                                        "ends as abort; 0: never", unit="s", low=0.0, high=3600.0)
    max_episodes: int = param(0, "stop after this many episodes; 0: run until shut down", low=0, high=10**9)
    seed: int = param(0, "seed of the task/seed schedule", low=0, high=2**31 - 1)
    reset_timeout_s: float = param(30.0, "wall time a reset may take before it is retried", unit="s",
                                   low=0.1, high=3600.0)
    reset: str = param("sim", "how the world is reset: sim (the sim bridge's reset_episode) or operator (a real "
                       "arm: home pose through the executor, then the operator's ready)",
                       choices=("sim", "operator"))
    robot_config: str = param(SIM_PANDA, "the executor's robot config: its control_rate_hz converts max_steps to "
                              "ROS time; (reset operator) its joints are those of joint_states")
    home_timeout_s: float = param(60.0, "wall time homing may take before the operator is asked to move the arm "
                                  "home by hand (reset operator)", unit="s", low=1.0, high=3600.0)


class EpisodeManager(Node):
    def __init__(self, **options: Any) -> None:
        """`options`: rclpy Node arguments (namespace, cli_args...) when `sim_arms` composes the arm's nodes."""
        super().__init__("episode_manager", **options)
        self.params = p = declare(self, Params)
        try:
            scheduler = Scheduler(p.tasks, group_size=p.group_size, arm=self.get_namespace(), arm_index=p.arm_index,
                                  num_arms=p.num_arms, host_index=p.host_index, num_hosts=p.num_hosts,
                                  eval_seeds_per_task=p.eval_seeds_per_task, seed=p.seed)
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        try:
            self.robot = RobotConfig.load(p.robot_config)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"robot_config {p.robot_config!r}: {exc}") from exc
        rest = {f.name: getattr(p, f.name) for f in fields(ManagerConfig) if f.name != "control_rate_hz"}
        config = ManagerConfig(control_rate_hz=self.robot.control_rate_hz, **rest)
        self.core = ManagerCore(scheduler, config, peers=self)
        self.drops = DropLog(self.get_logger())
        self.wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.executor_name = self.get_namespace().rstrip("/") + "/executor"
        self.reset_future: Future | None = None  # the reset_episode call in flight
        self.home_future: Future | None = None  # the go_home call in flight

        self.start_pub = self.create_publisher(EpisodeStart, EPISODE_START_TOPIC, LATCHED)
        self.result_pub = self.create_publisher(EpisodeResult, EPISODE_RESULT_TOPIC, EPISODES)
        self.prompt_pub = self.create_publisher(String, OPERATOR_PROMPT_TOPIC, LATCHED)
        self.create_service(Trigger, MANAGER_ABORT_SERVICE, self.on_abort)
        self.reset_client: Client  # reset_episode (sim) or executor/go_home (operator)
        if self.core.operator:
            self.reset_client = self.create_client(Trigger, GO_HOME_SERVICE)
            self.create_subscription(JointState, JOINT_STATES_TOPIC, self.on_joint_states, qos_profile_sensor_data)
            self.create_service(Trigger, MANAGER_READY_SERVICE, self.on_ready)
        else:
            self.reset_client = self.create_client(ResetEpisode, RESET_EPISODE_SERVICE)
        self.create_subscription(SuccessSignal, SUCCESS_TOPIC, self.on_success, RELIABLE)
        self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self.on_chunk, RELIABLE)
        self.create_subscription(Bool, ESTOP_TOPIC, self.on_estop, RELIABLE)
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self.on_diagnostics, RELIABLE)
        self.create_subscription(PolicyUpdate, POLICY_UPDATE_TOPIC, self.on_policy_update, LATCHED)
        self.create_timer(TICK_S, self.on_tick, clock=self.wall)
        self.get_logger().info(f"scheduling {p.tasks} in groups of {p.group_size} at "
                               f"{self.robot.control_rate_hz:g} Hz ({p.robot_config})")

    # -- the peers the core asks about ------------------------------------------------------
    def served_and_judged(self) -> bool:
        return self.count_publishers(ACTION_CHUNK_TOPIC) > 0 and self.count_publishers(SUCCESS_TOPIC) > 0

    def service_ready(self) -> bool:
        return self.reset_client.service_is_ready()

    # -- inputs ------------------------------------------------------------------------------
    def on_success(self, msg: SuccessSignal) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if self.core.verdict(msg.episode_id, msg.success, msg.source, stamp):
            self.tick(at_ns=stamp)

    def on_chunk(self, msg: ActionChunk) -> None:
        self.core.chunk(msg.episode_id, msg.policy_version, time.monotonic())

    def on_estop(self, msg: Bool) -> None:
        if msg.data and self.core.estop():
            self.tick()

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        """The executor says whether its e-stop is latched (released only by executor/release_estop) and
        why it holds."""
        for status in msg.status:
            if status.name == self.executor_name:
                values = {kv.key: kv.value for kv in status.values}
                estop = {"true": True, "false": False}.get(values.get("estop", ""))
                self.core.executor_status(values.get("hold", ""), values.get("episode_id"), estop, time.monotonic())

    def on_joint_states(self, msg: JointState) -> None:
        names = list(msg.name)
        try:
            q = np.array([msg.position[names.index(j)] for j in self.robot.joints], dtype=float)
        except (ValueError, IndexError):
            self.drops.drop("unusable joint_states", f"names {names} lack some of {list(self.robot.joints)}")
            return
        if not np.all(np.isfinite(q)):
            self.drops.drop("unusable joint_states", "non-finite positions")
            return
        self.core.joint_state(stamp_ns(msg.header.stamp))

    def on_ready(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.core.ready()
        return response

    def on_abort(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.core.abort()
        if response.success:
            self.tick()
        return response

    def on_policy_update(self, msg: PolicyUpdate) -> None:
        self.core.policy_update(msg.version)

    # -- the state machine -------------------------------------------------------------------
    def on_tick(self) -> None:
        """The timer's entry: no argument (the EventsExecutor passes a TimerInfo to a callback that takes one)."""
        self.tick()

    def tick(self, at_ns: int = 0) -> None:
        """Hand the core the services' answers, step it (`at_ns`: the stamp of the input that called it),
        and carry out what it says."""
        reset, home = self.reset_future, self.home_future
        if reset is not None and reset.done():
            self.reset_future, response = None, reset.result()
            if response is None:
                self.core.reset_answer(False, "no response")
            else:
                self.core.reset_answer(response.success, response.message, response.instruction,
                                       stamp_ns(response.stamp))
        if home is not None and home.done():
            self.home_future, answer = None, home.result()
            self.core.home_answer(answer.success, answer.message)
        for out in self.core.advance(self.get_clock().now().nanoseconds, time.monotonic(), at_ns):
            self.carry_out(out)

    def carry_out(self, out: manager.Out) -> None:
        if isinstance(out, manager.Started):
            self.start_pub.publish(self.start_msg(out))
        elif isinstance(out, manager.Finished):
            self.result_pub.publish(self.result_msg(out))
        elif isinstance(out, manager.Prompt):
            self.prompt_pub.publish(String(data=out.text))
            if self.core.operator:  # in sim nobody waits on it: keep training logs quiet
                self.get_logger().info(f"operator: {out.text}")
        elif isinstance(out, manager.AskReset):
            plan = out.plan
            request = ResetEpisode.Request(task=plan.task, seed=plan.seed, episode_id=plan.episode_id)
            self.reset_future = self.reset_client.call_async(request)
            self.reset_future.add_done_callback(lambda _future: self.tick())
        elif isinstance(out, manager.DropReset) and self.reset_future is not None:
            future, self.reset_future = self.reset_future, None
            future.cancel()  # its done callback ticks: the core may ask again
        elif isinstance(out, manager.AskHome):
            self.home_future = self.reset_client.call_async(Trigger.Request())
        elif isinstance(out, manager.Log):
            self.log(out)
        elif isinstance(out, manager.Exit):
            rclpy.try_shutdown(context=self.context)

    def log(self, out: manager.Log) -> None:
        """One call site per severity: rclpy refuses a call site whose severity changes."""
        if out.level == manager.INFO:
            self.get_logger().info(out.text)
        elif out.level == manager.WARNING:
            self.get_logger().warning(out.text)
        else:
            self.get_logger().error(out.text)

    def start_msg(self, out: manager.Started) -> EpisodeStart:
        plan = out.plan
        msg = EpisodeStart(episode_id=plan.episode_id, arm=self.get_namespace(), task=plan.task, seed=plan.seed,
                           group_id=plan.group_id, group_size=plan.group_size, instruction=out.instruction,
                           evaluation=plan.evaluation, max_steps=plan.max_steps)
        msg.header.stamp = to_stamp(out.stamp_ns)
        return msg

    def result_msg(self, out: manager.Finished) -> EpisodeResult:
        plan = out.plan
        msg = EpisodeResult(episode_id=plan.episode_id, arm=self.get_namespace(), group_id=plan.group_id,
                            group_size=plan.group_size, task=plan.task, seed=plan.seed, instruction=out.instruction,
                            success=out.success, reward=1.0 if out.success else 0.0, steps=out.steps,
                            policy_version=out.policy_version, evaluation=plan.evaluation, end_reason=out.end_reason)
        msg.header.stamp = to_stamp(out.stamp_ns)
        return msg


def main(args: list[str] | None = None) -> int:
    return run_node(EpisodeManager, args)
