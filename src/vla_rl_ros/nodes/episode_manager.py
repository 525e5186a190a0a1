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

No episode starts before a policy (a publisher on action_chunk) and a success detector (one on
success) are up: an episode nobody judges would end as a timeout, a failure it never was.

Resets: with reset=sim the manager calls the sim bridge's reset_episode. With reset=operator (a real
arm) it has the executor send the arm home between episodes (executor/go_home: the robot config's
home pose, one command per control step inside the executor's limits; the executor stops when the
manager stops asking) and then waits for the operator's ready; operator_prompt says which group and
rollout comes next and what to do. An abort (the operator's, through episode_manager/abort) or an
e-stop leaves the arm to the operator: it goes home only after they press r, and never while the
executor reports a latched e-stop. Aborted episodes carry end reason abort, which the learner
discards (rl.records.DISCARD_REASONS). An operator's failure verdict ends the episode with end reason
failure (reward 0, used for learning like any failed rollout).

Time-outs count control steps as ROS time (max_steps / control_rate_hz): with use_sim_time and the
sim bridge's lockstep clock, that is exactly the number of steps executed. A detector that judges
every step (sim_oracle, classifier) can lag behind a lockstep sim that runs faster than it judges, so
a time-out waits up to verdict_wait_s of wall time for its verdict on the last step (the executor
holds meanwhile): a success on the steps before the limit is a success, whatever the load. An
episode in which no action chunk arrives for lost_node_timeout_s of wall time ends as lost_node: a
dead policy sends none, and a dead arm stops the executor's requests (joint_states alone prove nothing: a bridge
re-sends them while idle). Sooner than that, an episode whose executor holds on a sensor fault (a
stale or missing image or joint state: an unplugged camera, a dead driver; or joint states outside
the joint limits: a spoofed message, a driver publishing degrees) for sensor_fault_abort_s ends as
abort: the arm held, and the rollout says nothing about the policy. Evaluation episodes are
marked so the learner never trains on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from vla_rl_interfaces.msg import ActionChunk, EpisodeResult, EpisodeStart, PolicyUpdate, SuccessSignal
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.control import HOME, SENSOR_FAULTS, SIM_PANDA, RobotConfig
from vla_rl_ros.episodes import EpisodePlan, Scheduler, layout_prompt, plan_label
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import stamp_ns
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE
from vla_rl_ros.sim.tasks import get_task
from vla_rl_ros.success import OPERATOR

# Wall-clock period of the state machine. Verdicts, reset responses and ends move it at once; the tick
# only catches what no message announces (a time-out with nothing judged, a lost node), so it can be
# slow: every rclpy timer wake-up costs about half a millisecond of Python.
TICK_S = 0.1
HOME_ASK_S = 0.5  # period of executor/go_home while homing (the executor stops 2 s after the last)
# Executor holds that mean a sensor of the arm is gone or lies (its /diagnostics "hold" value).
SENSOR_FAULT_HOLDS = frozenset(hold.value for hold in SENSOR_FAULTS)
# Operator-reset phases between two episodes.
CLEAR, HOMING, LAYOUT = "clear", "homing", "layout"


@dataclass
class Params:
    tasks: list[str] = param(["reach", "lift"], "tasks to schedule (vla-rl tasks); the default: the embedded "
                             "default policy's suite")
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
    robot_config: str = param(SIM_PANDA, "the executor's robot config (reset operator): the joints of joint_states")
    home_timeout_s: float = param(60.0, "wall time homing may take before the operator is asked to move the arm "
                                  "home by hand (reset operator)", unit="s", low=1.0, high=3600.0)

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
        self.prompt_pub = self.create_publisher(String, "operator_prompt", LATCHED)
        self.create_service(Trigger, "episode_manager/abort", self.on_abort)
        self.operator = p.reset == "operator"
        if self.operator:
            try:
                self.robot = RobotConfig.load(p.robot_config)
            except (OSError, ValueError) as exc:
                raise ParameterError(f"robot_config {p.robot_config!r}: {exc}") from exc
            self.home_client = self.create_client(Trigger, "executor/go_home")
            self.create_subscription(JointState, "joint_states", self.on_joint_states, qos_profile_sensor_data)
            self.create_service(Trigger, "episode_manager/ready", self.on_ready)
        else:
            self.reset_client = self.create_client(ResetEpisode, "reset_episode")
        self.create_subscription(SuccessSignal, "success", self.on_success, RELIABLE)
        self.create_subscription(ActionChunk, "action_chunk", self.on_chunk, RELIABLE)
        self.create_subscription(Bool, "estop", self.on_estop, RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, RELIABLE)
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
        self.judged_ns = -1                       # stamp of the newest per-step verdict on the running episode
        self.limit_reached_at: float | None = None  # when the step limit ran out (monotonic), while waiting
        self.waiting_logged = False
        # Operator reset: the phase between episodes, the arm's newest joints and e-stop state.
        self.phase = CLEAR  # nothing moves before the operator's first r
        self.ready = False
        self.joints: np.ndarray | None = None     # (J,) rad, robot config order
        self.joints_ns = 0
        self.homing_since = 0.0
        self.home_future = None                   # the go_home call in flight
        self.home_asked = 0.0                     # when it was sent (monotonic)
        self.estop_latched = False
        self.estop_confirmed = False              # the executor has reported an e-stop latched since the last release
        self.executor_name = (self.get_namespace().rstrip("/") + "/executor")
        self.fault: tuple[str, float] | None = None  # the executor's sensor-fault hold and since when (monotonic)
        self.prompt = ""
        self.create_timer(TICK_S, self.on_tick, clock=self.wall)
        self.get_logger().info(f"scheduling {p.tasks} in groups of {p.group_size}")

    # -- inputs ------------------------------------------------------------------------------
    def on_success(self, msg: SuccessSignal) -> None:
        if not (self.running and self.plan and msg.episode_id == self.plan.episode_id):
            return
        if msg.source != OPERATOR:
            self.judged_ns = max(self.judged_ns, stamp_ns(msg.header.stamp))
        if msg.success:
            self.ending = self.ending or EpisodeResult.END_SUCCESS
        elif msg.source == OPERATOR:  # an operator's verdict is final
            self.ending = self.ending or EpisodeResult.END_FAILURE
        self.tick(Time.from_msg(msg.header.stamp, clock_type=self.get_clock().clock_type))

    def on_chunk(self, msg: ActionChunk) -> None:
        if self.running and self.plan and msg.episode_id == self.plan.episode_id:
            self.policy_version = msg.policy_version
            self.last_progress = time.monotonic()

    def on_estop(self, msg: Bool) -> None:
        if msg.data:
            # The executor latches it too; released only by its service, which /diagnostics then reports.
            self.estop_latched = True
            if self.running:
                self.ending = EpisodeResult.END_ESTOP
                self.tick()

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        """The executor says whether its e-stop is latched (released only by executor/release_estop) and
        why it holds."""
        for status in msg.status:
            if status.name == self.executor_name:
                values = {kv.key: kv.value for kv in status.values}
                hold = values.get("hold", "")
                ours = self.running and self.plan is not None and values.get("episode_id") == self.plan.episode_id
                if not (ours and hold in SENSOR_FAULT_HOLDS):
                    self.fault = None
                elif self.fault is None:
                    self.fault = (hold, time.monotonic())
                if values.get("estop") == "true":
                    self.estop_latched = self.estop_confirmed = True
                elif values.get("estop") == "false" and self.estop_confirmed:
                    # Only a "false" after a "true": one sent before the executor saw the e-stop (topics are
                    # not ordered with each other) must not release it here.
                    self.estop_latched = self.estop_confirmed = False

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
        self.joints, self.joints_ns = q, stamp_ns(msg.header.stamp)

    def on_ready(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.running or self.phase == HOMING or self.plan is None:
            response.success = False
            response.message = f"not waiting for ready: {self.prompt or 'starting up'}"
        elif self.estop_latched:
            response.success, response.message = False, "the e-stop is latched: release it first " \
                                                        "(executor/release_estop), then press r"
        else:
            self.ready = True
            response.success = True
            response.message = "sending the arm home" if self.phase == CLEAR else f"starting {plan_label(self.plan)}"
        return response

    def on_abort(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self.running:
            response.success, response.message = False, "no episode is running"
            return response
        self.ending = self.ending or EpisodeResult.END_ABORT
        response.success, response.message = True, f"aborting {self.plan.episode_id}: the arm holds; it is yours"
        self.tick()
        return response

    def on_policy_update(self, msg: PolicyUpdate) -> None:
        if msg.version in self.versions_seen:
            return
        self.versions_seen.add(msg.version)
        every = self.params.eval_every_versions
        if every and msg.version % every == 0:
            self.scheduler.request_evaluation()

    # -- the state machine -------------------------------------------------------------------
    def on_tick(self) -> None:
        """The timer's entry: no argument (the EventsExecutor passes a TimerInfo to a callback that takes one)."""
        self.tick()

    def tick(self, at: Time | None = None) -> None:
        """One step of the state machine; `at` is the stamp of the input that called it, if newer than
        this node's clock (a verdict on the step that timed the episode out)."""
        if self.running:
            self.check_running(at)
        if self.running or (self.params.max_episodes and self.episodes_done >= self.params.max_episodes):
            return
        if self.operator:
            self.operator_reset()
        elif self.reset_future is not None:
            self.check_reset()
        else:
            self.begin_reset()

    def say(self, prompt: str) -> None:
        """Publish what the manager waits for (latched: a tool started later still sees it)."""
        if prompt != self.prompt:
            self.prompt = prompt
            self.prompt_pub.publish(String(data=prompt))
            if self.operator:  # in sim nobody waits on it: keep training logs quiet
                self.get_logger().info(f"operator: {prompt}")

    # -- operator reset ----------------------------------------------------------------------
    def operator_reset(self) -> None:
        if not self.served_and_judged() or self.joints is None:
            self.say("waiting for a policy (action_chunk), a success detector (success) and the arm's joint_states")
            return
        self.plan = self.plan or self.scheduler.next()
        if self.phase == CLEAR:
            self.say("e-stop latched: release it (executor/release_estop), then press r to send the arm home"
                     if self.estop_latched else
                     "the arm is yours and will not move; when it is clear, press r to send it home")
            if self.ready:
                self.ready, self.phase, self.homing_since = False, HOMING, time.monotonic()
        elif self.phase == HOMING:
            self.home_step()
        else:
            self.say(layout_prompt(self.plan, self.instruction_of(self.plan)))
            if self.ready:
                self.ready = False
                self.start_episode(self.plan, self.instruction_of(self.plan),
                                   Time(nanoseconds=self.joints_ns, clock_type=self.get_clock().clock_type))

    def home_step(self) -> None:
        """Keep asking the executor to step the arm home until it answers that it is."""
        if self.estop_latched:  # the arm is the operator's again: it moves only after their next r
            self.phase = CLEAR
            return
        if time.monotonic() - self.homing_since > self.params.home_timeout_s:
            self.get_logger().error(f"the arm did not reach home within {self.params.home_timeout_s:.0f} s")
            self.say("homing failed: move the arm home by hand, then press r")
            self.phase, self.home_future = CLEAR, None  # no more asking: the executor stops within 2 s
            return
        future = self.home_future
        if future is not None:
            if not future.done():
                return
            self.home_future = None
            answer = future.result()
            if answer.success and answer.message == HOME:
                self.get_logger().info("the arm is home")
                self.phase = LAYOUT
                return
            self.say("sending the arm home" if answer.success else f"sending the arm home (executor: {answer.message})")
        if time.monotonic() - self.home_asked >= HOME_ASK_S and self.home_client.service_is_ready():
            self.home_future, self.home_asked = self.home_client.call_async(Trigger.Request()), time.monotonic()

    @staticmethod
    def instruction_of(plan: EpisodePlan) -> str:
        """The instruction of the plan's layout (the task's template for its seed, as the sim's)."""
        return get_task(plan.task).sample(plan.seed).instruction

    def served_and_judged(self) -> bool:
        """A policy to answer chunk requests and a success detector: an episode nobody judges would end
        as a timeout and be learned from (and recorded) as a failure."""
        return self.count_publishers("action_chunk") > 0 and self.count_publishers("success") > 0

    def graph_ready(self) -> bool:
        """A reset service to call, a policy and a success detector."""
        return self.reset_client.service_is_ready() and self.served_and_judged()

    def begin_reset(self) -> None:
        if not self.graph_ready():
            if not self.waiting_logged:
                self.get_logger().info("waiting for the reset_episode service, a policy (action_chunk) and a "
                                       "success detector (success)")
                self.waiting_logged = True
            return
        self.waiting_logged = False
        self.plan = self.plan or self.scheduler.next()
        request = ResetEpisode.Request(task=self.plan.task, seed=self.plan.seed, episode_id=self.plan.episode_id)
        self.reset_future = self.reset_client.call_async(request)
        self.reset_future.add_done_callback(lambda _future: self.tick())
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
        # The reset state's own stamp: this node's clock may not have caught up with it yet.
        self.start_episode(self.plan, response.instruction,
                           Time.from_msg(response.stamp, clock_type=self.get_clock().clock_type))

    def start_episode(self, plan: EpisodePlan, instruction: str, reset_at: Time) -> None:
        """Announce `plan`, starting at the reset state's stamp (now if it has none)."""
        self.start_time = reset_at if reset_at.nanoseconds else self.get_clock().now()
        self.last_progress = time.monotonic()
        self.ending = None
        self.judged_ns, self.limit_reached_at = -1, None
        self.running = True
        msg = EpisodeStart(episode_id=plan.episode_id, arm=self.get_namespace(), task=plan.task, seed=plan.seed,
                           group_id=plan.group_id, instruction=instruction, evaluation=plan.evaluation,
                           max_steps=plan.max_steps)
        msg.header.stamp = self.start_time.to_msg()
        self.instruction = instruction
        self.start_pub.publish(msg)
        self.say(f"{plan_label(plan)} running: s success, f failure, a abort (take over)")

    def now_or(self, at: Time | None) -> Time:
        """This node's clock, or the later stamp `at` of an input: under load /clock can reach this node
        steps after the messages stamped by it, and a result stamped early would cut the episode short
        for every node that bounds the episode by its stamp (the recorder's frames)."""
        now = self.get_clock().now()
        return at if at is not None and at > now else now

    def steps_elapsed(self, at: Time | None = None) -> int:
        """Control steps since the start, by this node's clock or the later stamp `at`."""
        elapsed = (self.now_or(at) - self.start_time).nanoseconds * 1e-9
        return max(0, round(elapsed * self.params.control_rate_hz))

    def check_running(self, at: Time | None = None) -> None:
        assert self.plan is not None
        if self.ending is None:
            if self.steps_elapsed(at) >= self.plan.max_steps:
                if not self.last_step_judged():
                    return
                self.ending = EpisodeResult.END_TIMEOUT
            elif time.monotonic() - self.last_progress > self.params.lost_node_timeout_s:
                self.ending = EpisodeResult.END_LOST_NODE
            elif (self.fault and self.params.sensor_fault_abort_s
                  and time.monotonic() - self.fault[1] > self.params.sensor_fault_abort_s):
                self.get_logger().warning(f"the executor has held on {self.fault[0]} for "
                                          f"{self.params.sensor_fault_abort_s:.0f} s; aborting the episode")
                self.ending = EpisodeResult.END_ABORT
        if self.ending is not None:
            self.finish(self.ending, at)

    def last_step_judged(self) -> bool:
        """Whether the detector has judged the episode's last step, or cannot be waited for any longer: one
        that sent no per-step verdict (an operator's) or still none after verdict_wait_s."""
        assert self.plan is not None
        wait = self.params.verdict_wait_s
        last_step_ns = self.start_time.nanoseconds + round((self.plan.max_steps - 0.5) / self.params.control_rate_hz
                                                           * 1e9)
        if self.judged_ns < 0 or not wait or self.judged_ns >= last_step_ns:
            return True
        if self.limit_reached_at is None:
            self.limit_reached_at = time.monotonic()
        if time.monotonic() - self.limit_reached_at < wait:
            return False
        self.get_logger().warning(f"no verdict on the last step of {self.plan.episode_id} within {wait:.1f} s "
                                  "(the success detector lags or is gone); ending it as a timeout")
        return True

    def finish(self, reason: str, at: Time | None = None) -> None:
        assert self.plan is not None
        plan, success = self.plan, reason == EpisodeResult.END_SUCCESS
        msg = EpisodeResult(episode_id=plan.episode_id, arm=self.get_namespace(), group_id=plan.group_id,
                            task=plan.task, seed=plan.seed, instruction=self.instruction, success=success,
                            reward=1.0 if success else 0.0, steps=min(self.steps_elapsed(at), plan.max_steps),
                            policy_version=self.policy_version, evaluation=plan.evaluation, end_reason=reason)
        msg.header.stamp = self.now_or(at).to_msg()
        self.result_pub.publish(msg)
        self.running, self.plan, self.ending, self.fault = False, None, None, None
        self.episodes_done += 1
        # Operator reset: after an abort or e-stop the arm stays the operator's until they press r.
        self.phase = CLEAR if reason in (EpisodeResult.END_ABORT, EpisodeResult.END_ESTOP) else HOMING
        self.ready, self.homing_since = False, time.monotonic()
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
