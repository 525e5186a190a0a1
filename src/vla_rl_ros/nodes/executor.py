"""executor: turns action chunks into joint commands for one arm, inside its limits; the same node in
sim and on a real arm (the robot config says which arm).

ROS surface (names relative to the arm's namespace)
  subscribes  episode_start        vla_rl_interfaces/EpisodeStart    reliable, transient local
              episode_result       vla_rl_interfaces/EpisodeResult   reliable, depth 100; and transient local,
                                                                     depth 100 (the manager's history: a restarted
                                                                     executor does not rejoin an ended episode)
              action_chunk         vla_rl_interfaces/ActionChunk     reliable, depth 1000 (qos.STEPS)
              joint_states         sensor_msgs/JointState            sensor data QoS (matches any publisher)
              estop                std_msgs/Bool                     reliable; true latches the e-stop
              camera/image_raw     sensor_msgs/Image (image_topic)   sensor data QoS; only if image_timeout_s > 0
  publishes   joint_trajectory     trajectory_msgs/JointTrajectory   reliable, depth 1000 (qos.STEPS); the robot
                                                                     config's command_topic;
                                                                     one point per step, time_from_start = period;
                                                                     stamped zero ("start now") on a real arm, on
                                                                     sim time with the joint state it follows
              chunk_request        vla_rl_interfaces/ChunkRequest    reliable, depth 1000 (qos.STEPS)
              /diagnostics         diagnostic_msgs/DiagnosticArray   reliable; why the arm holds, rejections,
                                                                     how many nodes publish action_chunk (one should)
              executor/dry_run_trajectory  trajectory_msgs/JointTrajectory  only with dry_run: what would be sent
  services    executor/release_estop  std_srvs/Trigger               the only way to release a latched e-stop
                                                                     (latched at start with estop_at_start)
              executor/go_home        std_srvs/Trigger               between episodes: step the arm to the robot
                                                                     config's home pose; ask again at least every
                                                                     home_keepalive_s; "the arm is home" when it is
  parameters  see Params below (config/executor.yaml)

The loop itself is `vla_rl_ros.control.ExecutorCore` (see its docstring); this node converts messages,
runs the watchdogs on a wall-clock timer, publishes /diagnostics at once when a fault or an e-stop
appears, other changes and new rejections at most every diagnostics_min_interval_s (with the rejections
by cause since the previous report), and every diagnostics_period_s (`ros.diagnostics.DiagnosticsPacer`),
and logs each cause of a hold or rejection when it first appears. It also warns while more than one
node publishes its action_chunk (a second train_sim in the same ROS domain, a forgotten policy
process): their chunks would interleave on the arm, and the learner would train on trajectories of
chunks the arm did not all run; /diagnostics counts them (action_chunk_publishers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart

from vla_rl_ros.control import (
    ERRORS,
    FAULTS,
    SIM_PANDA,
    STEPPING,
    Commander,
    CommandOut,
    ExecutorConfig,
    ExecutorCore,
    Hold,
    RequestOut,
    RobotConfig,
    make_kinematics,
)
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import chunk_from_msg, stamp_ns, to_stamp
from vla_rl_ros.ros.diagnostics import DiagnosticsPacer
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    CHUNK_REQUEST_TOPIC,
    DIAGNOSTICS_TOPIC,
    DRY_RUN_TRAJECTORY_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    ESTOP_TOPIC,
    GO_HOME_SERVICE,
    JOINT_STATES_TOPIC,
    RELEASE_ESTOP_SERVICE,
)
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RELIABLE, RESULTS, STEPS

TICK_S = 0.05  # wall-clock period of the watchdogs (s): well under any useful timeout
POLICIES_CHECK_S = 1.0  # wall-clock period of the count of action_chunk publishers (s)
HOLD_LOG_INTERVAL_S = 10.0  # a fault hold that comes back is logged again at most this often (s)
_CORE = {f.name: f for f in fields(ExecutorConfig)}


def core_param(name: str, **limits: Any) -> Any:
    """A parameter that is an ExecutorConfig field: same default and help, ROS range added here."""
    field = _CORE[name]
    return param(field.default, field.metadata["help"], **limits)


@dataclass
class Params:
    robot_config: str = param(SIM_PANDA, "robot config YAML (path or package://pkg/path): model, joints, "
                              "command topic, limits, workspace, action mode, control rate")
    request_ahead_steps: int = core_param("request_ahead_steps", unit="steps", low=0, high=1000)
    joint_state_timeout_s: float = core_param("joint_state_timeout_s", unit="s", low=0.01, high=3600.0)
    # On by default (the core's default is off): an executor started without the launch files on a real arm
    # must not run a long chunk open-loop on a dead camera. The sim launch files and sim_arms set 0.
    image_timeout_s: float = param(1.0, _CORE["image_timeout_s"].metadata["help"], unit="s", low=0.0, high=3600.0)
    chunk_timeout_s: float = core_param("chunk_timeout_s", unit="s", low=0.01, high=3600.0)
    home_tolerance: float = core_param("home_tolerance", unit="rad", low=0.001, high=0.5)
    # above the episode manager's 0.5 s between asks (HOME_ASK_S), or homing would stop between them
    home_keepalive_s: float = core_param("home_keepalive_s", unit="s", low=1.0, high=60.0)
    joint_limit_margin: float = core_param("joint_limit_margin", unit="rad", low=0.0, high=0.5)
    image_topic: str = param(CAMERA_TOPICS["front"], "image topic the image watchdog watches")
    always_greedy: bool = param(False, "request greedy chunks in every episode (deployment); otherwise only in "
                                "evaluation episodes")
    dry_run: bool = param(False, "run everything but send no command (they go to executor/dry_run_trajectory)")
    estop_at_start: bool = param(True, "start with the e-stop latched: nothing moves until executor/release_estop, "
                                 "so a restarted executor never lifts an e-stop it forgot; false for a simulated "
                                 "arm (the sim launch files and sim_arms set it)")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics between changes", unit="s", low=0.05,
                                        high=60.0)
    diagnostics_min_interval_s: float = param(0.5, "shortest time between /diagnostics reports of new rejections "
                                              "or of a change that is not a fault or e-stop appearing (those go out "
                                              "at once): a flood of bad chunks gives about 1/this reports per second",
                                              unit="s", low=0.05, high=60.0)


class Executor(Node):
    def __init__(self, **options: Any) -> None:
        """`options`: rclpy Node arguments (namespace, cli_args...) when `sim_arms` composes the arm's nodes."""
        super().__init__("executor", **options)
        self.params = p = declare(self, Params)
        try:
            self.robot = RobotConfig.load(p.robot_config)
            commander = Commander(self.robot, make_kinematics(self.robot))
        except (OSError, ValueError) as exc:
            raise ParameterError(f"robot_config {p.robot_config!r}: {exc}") from exc
        self.core = ExecutorCore(commander, ExecutorConfig(**{name: getattr(p, name) for name in _CORE}))
        # On sim time a command says which state it follows, so a sim bridge reset meanwhile refuses it.
        self.stamp_commands = bool(self.get_parameter("use_sim_time").value)
        self.drops = DropLog(self.get_logger())
        self.wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.hold_logged: dict[Hold, float] = {}
        self.last_hold = Hold.NO_EPISODE  # as of the previous report(): a fault hold is logged when it starts
        self.pacer = DiagnosticsPacer(p.diagnostics_period_s, p.diagnostics_min_interval_s)
        self.last_go_home = ""  # go_home's previous answer: each new one is logged once
        self.point_duration = Duration(nanoseconds=self.core.period_ns).to_msg()
        if p.estop_at_start:
            self.core.estop()

        command_topic = DRY_RUN_TRAJECTORY_TOPIC if p.dry_run else self.robot.command_topic
        self.command_pub = self.create_publisher(JointTrajectory, command_topic, STEPS)
        self.request_pub = self.create_publisher(ChunkRequest, CHUNK_REQUEST_TOPIC, STEPS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
        self.create_subscription(EpisodeStart, EPISODE_START_TOPIC, self.on_episode_start, LATCHED)
        # Volatile for `ros2 topic pub` (a transient-local reader matches no volatile writer), transient local
        # for the episode manager's latched history (a duplicate ends nothing twice).
        for qos in (RESULTS, EPISODES):
            self.create_subscription(EpisodeResult, EPISODE_RESULT_TOPIC, self.on_episode_result, qos)
        self.chunk_sub = self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self.on_chunk, STEPS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self.on_joint_states, qos_profile_sensor_data)
        self.create_subscription(Bool, ESTOP_TOPIC, self.on_estop, RELIABLE)
        if p.image_timeout_s > 0:
            self.create_subscription(Image, p.image_topic, lambda _m: self.core.image(time.monotonic()),
                                     qos_profile_sensor_data)
        self.create_service(Trigger, RELEASE_ESTOP_SERVICE, self.on_release)
        self.create_service(Trigger, GO_HOME_SERVICE, self.on_go_home)
        self.create_timer(TICK_S, self.advance, clock=self.wall)
        self.chunk_publishers = 0  # nodes publishing action_chunk at the previous count
        self.policies_warned = False  # about the current spell of several
        self.create_timer(POLICIES_CHECK_S, self.count_policies, clock=self.wall)
        self.get_logger().info(
            f"driving {self.robot.name} ({self.robot.action_mode}, {self.robot.control_rate_hz:g} Hz) on "
            f"{self.resolve_topic_name(command_topic)}{' (DRY RUN: nothing is sent to the arm)' if p.dry_run else ''}"
            f"{'; e-stop latched at start (estop_at_start): call executor/release_estop' if p.estop_at_start else ''}")

    # -- events ----------------------------------------------------------------------------------
    def on_episode_start(self, msg: EpisodeStart) -> None:
        greedy = msg.evaluation or self.params.always_greedy
        if self.core.start_episode(msg.episode_id, greedy=greedy, max_steps=msg.max_steps,
                                   stamp_ns=stamp_ns(msg.header.stamp)):
            self.get_logger().info(f"episode {msg.episode_id} ({msg.task}/{msg.seed}, "
                                   f"{'greedy' if greedy else 'sampled'}, {msg.max_steps} steps)")
        elif self.core.has_ended(msg.episode_id):
            self.drops.drop("start of an ended episode", f"episode {msg.episode_id} has its result already; "
                            "a new episode needs a new episode_id")
        self.advance()

    def on_episode_result(self, msg: EpisodeResult) -> None:
        if self.core.end_episode(msg.episode_id):
            self.get_logger().info(f"episode {msg.episode_id} ended ({msg.end_reason}) after "
                                   f"{self.core.step} commands; holding")
        self.advance()

    def on_chunk(self, msg: ActionChunk) -> None:
        rejection = self.core.chunk(chunk_from_msg(msg))
        if rejection is not None:
            self.drops.drop(f"action_chunk rejected ({rejection.reason.value})", rejection.detail)
        self.advance()

    def on_joint_states(self, msg: JointState) -> None:
        problem = self.core.joint_state(msg.name, msg.position, stamp_ns(msg.header.stamp), time.monotonic())
        if problem is not None:
            self.drops.drop("unusable joint_states", problem)
        self.advance()

    def on_estop(self, msg: Bool) -> None:
        if msg.data:
            if self.core.estop():
                self.get_logger().error("E-STOP latched: holding; call executor/release_estop to release")
        elif self.core.estopped:
            self.drops.drop("estop false while latched", "the e-stop stays latched until executor/release_estop")
        self.advance()

    def on_release(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.core.release()
        self.get_logger().warning(f"release_estop: {response.message}")
        self.advance()
        return response

    def on_go_home(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.core.go_home(time.monotonic())
        if response.message != self.last_go_home:  # asked every 0.5 s: log each new answer once
            self.get_logger().info(f"go_home: {response.message}")
        self.last_go_home = response.message
        self.advance()
        return response

    def count_policies(self) -> None:
        """Warn once per spell of several nodes publishing action_chunk, seen at two counts in a row (a
        respawned policy node's old publisher lingers a moment in the graph)."""
        topic = self.resolve_topic_name(ACTION_CHUNK_TOPIC)
        publishers = self.get_publishers_info_by_topic(topic)
        if len(publishers) <= 1:
            self.policies_warned = False  # the spell is over: a new one is warned about again
        elif self.chunk_publishers > 1 and not self.policies_warned:
            names = sorted(f"{p.node_namespace.rstrip('/')}/{p.node_name}" for p in publishers)
            self.get_logger().warning(
                f"{len(publishers)} nodes publish {topic} ({', '.join(names)}): their chunks interleave on this "
                "arm and the learner trains on chunks the arm did not all run; run one policy per arm (another "
                "graph in this ROS domain?)")
            self.policies_warned = True
        self.chunk_publishers = len(publishers)

    # -- the loop --------------------------------------------------------------------------------
    def advance(self) -> None:
        # A request or command published before its reader is matched would be lost (volatile QoS). A policy
        # hears requests and answers with chunks: other readers of chunk_request (a recorder, a sim bridge that
        # renders on request) do not count.
        self.core.policy_connected(self.request_pub.get_subscription_count() > 0
                                   and self.chunk_sub.get_publisher_count() > 0)
        self.core.robot_connected(self.params.dry_run or self.command_pub.get_subscription_count() > 0)
        for out in self.core.advance(time.monotonic()):
            if isinstance(out, RequestOut):
                request = ChunkRequest(episode_id=out.episode_id, request_id=out.request_id, step=out.step,
                                       greedy=out.greedy)
                request.header.stamp = to_stamp(out.stamp_ns)
                self.request_pub.publish(request)
            elif isinstance(out, CommandOut):
                self.command_pub.publish(self.trajectory(out))
        self.report()

    def trajectory(self, out: CommandOut) -> JointTrajectory:
        """One point lasting one period. A zero header stamp means "start now" to a JTC (a real arm's
        clock need not be this machine's); on sim time the stamp is the joint state's, which a JTC reads
        as the start time it is (the point ends one period after the state) and the sim bridge checks."""
        positions = self.core.commander.positions(out.command).tolist()
        point = JointTrajectoryPoint(positions=positions, time_from_start=self.point_duration)
        msg = JointTrajectory(joint_names=list(self.robot.command_joints), points=[point])
        if self.stamp_commands:
            msg.header.stamp = to_stamp(out.stamp_ns)
        return msg

    def report(self) -> None:
        """Log a fault hold when it starts (at most every HOLD_LOG_INTERVAL_S per cause); publish
        /diagnostics when the pacer says so (at once for a fault or e-stop appearing)."""
        core, now = self.core, time.monotonic()
        hold = core.hold
        fault = hold in FAULTS
        if fault and hold != self.last_hold and \
                now - self.hold_logged.get(hold, -HOLD_LOG_INTERVAL_S) >= HOLD_LOG_INTERVAL_S:
            self.hold_logged[hold] = now
            self.get_logger().warning(f"holding: {self.hold_text()}")
        self.last_hold = hold
        level = (DiagnosticStatus.ERROR if core.estopped or hold in ERRORS
                 else DiagnosticStatus.WARN if fault else DiagnosticStatus.OK)
        rejected = self.pacer.due(now, (None if hold in STEPPING else hold, core.estopped), level[0], core.rejections)
        if rejected is not None:
            self.diagnostics_pub.publish(self.diagnostics(level, rejected))

    def hold_text(self) -> str:
        """The hold's name, and why where the core says more (which joint is how far out of its limits)."""
        detail = self.core.hold_detail
        return f"{self.core.hold.value}: {detail}" if detail else self.core.hold.value

    def diagnostics(self, level: bytes, rejected: dict[str, int]) -> DiagnosticArray:
        """The status; `rejected`: chunks rejected by cause since the previous report."""
        core = self.core
        message = ("running" if core.hold in STEPPING else "homing" if core.hold is Hold.HOMING
                   else f"holding: {self.hold_text()}")
        if rejected:
            causes = ", ".join(f"{cause} ({n})" for cause, n in sorted(rejected.items(), key=lambda kv: -kv[1]))
            message += f"; rejected {sum(rejected.values())} chunks since the last report: {causes}"
        if core.last_rejection is not None:
            message += f"; last rejected chunk: {core.last_rejection}"
        values = {**core.status(), "action_chunk_publishers": str(self.chunk_publishers)}
        status = DiagnosticStatus(level=level, name=self.get_fully_qualified_name(), message=message,
                                  hardware_id=self.robot.name,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        return array


def main(args: list[str] | None = None) -> int:
    return run_node(Executor, args)
