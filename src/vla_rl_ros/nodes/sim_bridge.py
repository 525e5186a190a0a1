"""sim_bridge: one MuJoCo world offering the interface a real arm offers through ros2_control.

ROS surface (names relative to the arm's namespace)
  publishes   camera/image_raw        sensor_msgs/Image rgb8      sensor data QoS; the "front" camera
              wrist_camera/image_raw  sensor_msgs/Image rgb8      sensor data QoS; the "wrist" camera
                                                                  (each camera in `cameras` is rendered
                                                                  only while it has a subscriber)
              joint_states            sensor_msgs/JointState      reliable, depth 1000 (qos.STEPS); arm joints
                                                                  then fingers (rad, m)
              task_state              vla_rl_interfaces/TaskState reliable, transient local depth 1;
                                                                  privileged state for the sim oracle
              /clock                  rosgraph_msgs/Clock         reliable; sim time (publish_clock)
  subscribes  joint_trajectory        trajectory_msgs/JointTrajectory  reliable; ros2_control JTC format,
                                                                  stamped zero or at the current state
              chunk_request           vla_rl_interfaces/ChunkRequest   reliable, depth 1000 (qos.STEPS); only
                                                                  with render_when chunk_request
  services    reset_episode           vla_rl_interfaces/ResetEpisode
  parameters  see Params below (config/sim_bridge.yaml)

Lockstep: physics advances only while a command executes. Each trajectory point is one control step
of the core env (`SimEnv.step` in joint_position mode: servo interpolation from the previous target,
speed limits); after each point the cameras, the task state, the joint states and /clock are
published, all stamped with the new sim time. With render_when chunk_request the cameras render only
when the arm's executor asks for a chunk, the state its policy reads: at chunk size C, one control
step in C renders (in train_sim, where the success oracle reads the task state, nothing else reads
the images; a 64 px frame costs about as much as the physics of a step). Between commands sim time
stands still, so a policy's thinking time costs no sim time; the newest images, joint states and
/clock are re-sent at heartbeat_hz of wall time (same stamps: consumers tell new frames by the
stamp), so watchdogs downstream see a live bridge and a frame lost on the best-effort image topics
(or before discovery completed) cannot stall the lockstep loop. The task state is latched instead
(transient local), as the success oracle counts every message as a step. Sim time is an exact integer count (`SimClock`:
steps x period in ns, never MuJoCo's float data.time, whose rounding once made a step 1 ns short and
stalled the executor) and monotonic across resets: each reset adds the env's settling time, so states
after a reset are stamped later than any before it.

A command must name every arm joint (any order), may name the finger joints (m; their mean sets the
gripper), and each point must last one control period (time_from_start steps of the env's control_dt).
Its header stamp is its start time, as for a joint_trajectory_controller: zero starts it now; any other
must be the current state's stamp (the executor, on sim time, stamps each command with the joint state
it was computed from). A command of another state was computed before a reset or a newer step: applied,
the previous episode's last command would move the arm of the next one in its first step.
Unknown names, missing arm joints, non-finite numbers, other durations or another state's stamp are
refused with a log line, and nothing moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory
from vla_rl_interfaces.msg import ChunkRequest
from vla_rl_interfaces.msg import TaskState as TaskStateMsg
from vla_rl_interfaces.srv import ResetEpisode

from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import image_to_msg, stamp_ns, task_state_to_msg, to_stamp
from vla_rl_ros.ros.names import (
    CAMERA_TOPICS,
    CHUNK_REQUEST_TOPIC,
    CLOCK_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    RESET_EPISODE_SERVICE,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, STEPS
from vla_rl_ros.sim import CAMERAS, TASKS, Observation, SimClock, get_task, make_env
from vla_rl_ros.sim.env import EnvConfig

RENDER_WHEN = ("step", "chunk_request")
# How far a point's duration may differ from the control period (s): rounding of builtin Duration.
DURATION_TOLERANCE_S = 1e-3
NS_PER_S = 1_000_000_000


@dataclass
class Params:
    task: str = param("reach", "task loaded at start-up (reset_episode switches tasks)", choices=tuple(TASKS))
    seed: int = param(0, "seed of the start-up initial state (a train or held-out seed of the task)", low=0,
                      high=2**31 - 1)
    image_size: int = param(64, "camera image height and width", unit="px", low=8, high=1024)
    cameras: list[str] = param(list(CAMERAS), f"cameras to render and publish, of {list(CAMERA_TOPICS)}")
    heartbeat_hz: float = param(5.0, "wall-clock rate at which the newest images, joint_states and /clock are "
                                "re-sent (same stamps) while no command runs; 0: never", unit="Hz", low=0.0,
                                high=100.0)
    render_when: str = param("step", "when the cameras render and publish: step, every control step (for any reader "
                             "of every frame: a recorder, a success classifier, a viewer); chunk_request, when the "
                             "executor asks for a chunk (the policy's frames only: train_sim)",
                             choices=RENDER_WHEN)
    publish_clock: bool = param(True, "publish /clock (one bridge per graph may: with several arms, one only)")
    frame_id: str = param("world", "frame of task_state poses")

    def __post_init__(self) -> None:
        unknown = [c for c in self.cameras if c not in CAMERA_TOPICS]
        if unknown or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras={self.cameras}: each must be one of {list(CAMERA_TOPICS)}, once")


class TrajectoryError(ValueError):
    """A joint_trajectory command the bridge refuses; `cause` names the kind, for the log."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


class SimBridge(Node):
    def __init__(self, **options: Any) -> None:
        """`options`: rclpy Node arguments (namespace, cli_args...) when `sim_arms` composes the arm's nodes."""
        super().__init__("sim_bridge", **options)
        self.params = p = declare(self, Params)
        try:
            TASKS[p.task].check_seed(p.seed)
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        # A joint_trajectory_controller moves the finger where it is told: the executor's robot config
        # already made the gripper action binary (or not), so the bridge applies the position as given.
        self.env = make_env(p.task, image_size=p.image_size, cameras=tuple(p.cameras), action_mode="joint_position",
                            config=EnvConfig(binary_gripper=False))
        self.kinematics = self.env.kinematics
        self.drops = DropLog(self.get_logger())
        self.period = self.env.config.control_dt
        self.clock = SimClock.of(self.env.config)
        self.episode_id = ""
        self.closure = 0.0  # the gripper command in force (0 open .. 1 closed)
        self.image_pubs = {c: self.create_publisher(Image, CAMERA_TOPICS[c], qos_profile_sensor_data)
                           for c in p.cameras}
        self.joint_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, STEPS)
        self.task_pub = self.create_publisher(TaskStateMsg, TASK_STATE_TOPIC, LATCHED)
        self.clock_pub = self.create_publisher(ClockMsg, CLOCK_TOPIC, RELIABLE) if p.publish_clock else None
        self.create_subscription(JointTrajectory, JOINT_TRAJECTORY_TOPIC, self.on_trajectory, RELIABLE)
        self.create_service(ResetEpisode, RESET_EPISODE_SERVICE, self.on_reset)
        self.on_request_only = p.render_when == "chunk_request"
        if self.on_request_only:
            self.create_subscription(ChunkRequest, CHUNK_REQUEST_TOPIC, self.on_chunk_request, STEPS)
        self.sent: list[tuple[object, object]] = []  # (publisher, message) of the newest state, for the heartbeat
        self.sent_stamp = self.now()  # their stamp
        if p.heartbeat_hz > 0:
            self.create_timer(1.0 / p.heartbeat_hz, self.heartbeat, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.observe_subscribed_cameras()
        self.publish(self.env.reset(p.seed))
        self.get_logger().info(f"{p.task}/{p.seed} ready: {p.image_size} px {list(p.cameras)}, "
                               f"{1 / self.period:.0f} Hz control, lockstep")

    # -- time ------------------------------------------------------------------------------------
    def now(self) -> Time:
        """Sim time, the stamp of everything published and of /clock."""
        return to_stamp(self.clock.now_ns)

    # -- commands --------------------------------------------------------------------------------
    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            targets = self.parse(msg)
        except TrajectoryError as exc:
            self.drops.drop(f"joint_trajectory refused ({exc.cause})", str(exc))
            return
        for q, closure in targets:  # (J,) rad, gripper closure
            self.closure = closure
            self.observe_subscribed_cameras()
            observation = self.env.step(np.append(q, closure)).observation
            self.clock.step()
            self.publish(observation)

    def observe_subscribed_cameras(self) -> None:
        """Render only the cameras someone subscribes to (a wrist-camera policy leaves the front one
        unread in train_sim), and none when rendering waits for chunk requests; a subscriber that joins
        gets frames from the next step or reset on."""
        self.env.set_observed_cameras([] if self.on_request_only else self.subscribed_cameras())

    def subscribed_cameras(self) -> list[str]:
        return [c for c, pub in self.image_pubs.items() if pub.get_subscription_count() > 0]

    def on_chunk_request(self, msg: ChunkRequest) -> None:
        """Publish the current state's frames, once per state: the request's stamp is that state's or,
        when a command overtook the request, an older one (a policy reads frames stamped at or after
        its request, so the current state serves either way)."""
        images = self.unsent_frames()
        for pub, image in images:
            pub.publish(image)
        self.sent = [*images, *self.sent]  # the heartbeat re-sends them while the state stands

    def unsent_frames(self) -> list[tuple[object, Image]]:
        """(publisher, image) of the current state for each subscribed camera whose frame is not among
        the sent messages: sim time stands still between commands, so rendering now shows that stamp."""
        sent = {pub for pub, _ in self.sent}
        return [(self.image_pubs[c], image_to_msg(self.env.render(c), self.sent_stamp, frame_id=camera_frame(c)))
                for c in self.subscribed_cameras() if self.image_pubs[c] not in sent]

    def parse(self, msg: JointTrajectory) -> list[tuple[np.ndarray, float]]:
        """Each point's arm joint targets (J,) in the model's order and gripper closure."""
        names = list(msg.joint_names)
        known = (*self.kinematics.joint_names, *self.kinematics.finger_joint_names)
        unknown = [n for n in names if n not in known]
        if unknown or len(set(names)) != len(names):
            raise TrajectoryError("unknown joint names", f"joint names {names}: unknown {unknown} or repeated; "
                                                         f"this arm has {list(known)}")
        missing = [n for n in self.kinematics.joint_names if n not in names]
        if missing:
            raise TrajectoryError("missing arm joints", f"joint names {names} lack {missing}")
        if not msg.points:
            raise TrajectoryError("no points", "the trajectory has no points")
        arm_index = [names.index(n) for n in self.kinematics.joint_names]
        finger_index = [names.index(n) for n in self.kinematics.finger_joint_names if n in names]
        start, current = stamp_ns(msg.header.stamp), stamp_ns(self.sent_stamp)
        if start and start != current:
            raise TrajectoryError("another state's stamp", f"the command starts at {start} ns, the current state is "
                                                           f"stamped {current} ns (computed before a reset or a "
                                                           "newer step)")
        targets, previous, closure = [], 0.0, self.closure
        for k, point in enumerate(msg.points):
            positions = np.asarray(point.positions, dtype=float)
            if positions.shape != (len(names),) or not np.all(np.isfinite(positions)):
                raise TrajectoryError("non-finite or missing positions",
                                      f"point {k} has positions {list(positions)} for joints {names}")
            end = Duration.from_msg(point.time_from_start).nanoseconds / NS_PER_S
            if not math.isclose(end - previous, self.period, abs_tol=DURATION_TOLERANCE_S):
                raise TrajectoryError("point duration", f"point {k} lasts {end - previous:.4f} s; each point must "
                                                        f"last one control period, {self.period} s")
            previous = end
            if finger_index:
                closure = self.kinematics.gripper_closure(np.full(2, positions[finger_index].mean()))
            targets.append((positions[arm_index], closure))
        return targets

    # -- episodes --------------------------------------------------------------------------------
    def on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        try:
            get_task(request.task).check_seed(request.seed)
        except ValueError as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().warning(f"reset refused: {exc}")
            return response
        self.observe_subscribed_cameras()
        observation = self.env.reset(request.seed, task=request.task)
        self.clock.reset()
        self.episode_id, self.closure = request.episode_id, 0.0
        self.publish(observation)
        response.success, response.instruction, response.stamp = True, observation.instruction, self.now()
        response.message = f"reset {request.task}/{request.seed} as {request.episode_id!r}"
        self.get_logger().info(f"{response.message}: {observation.instruction!r}")
        return response

    # -- output ----------------------------------------------------------------------------------
    def publish(self, observation: Observation) -> None:
        """Images, task state, joint states, then /clock, all stamped with the current sim time.
        Joint states come after the rest: the executor steps on them."""
        stamp = self.now()
        images = [(self.image_pubs[camera], image_to_msg(image, stamp, frame_id=camera_frame(camera)))
                  for camera, image in observation.images.items()]
        task = TaskStateMsg(episode_id=self.episode_id, task=self.env.task.name, seed=int(self.env.seed),
                            step=self.env.steps)
        task.header.stamp, task.header.frame_id = stamp, self.params.frame_id
        names, positions, velocities = self.env.joint_state()
        joints = JointState(name=list(names), position=positions.tolist(), velocity=velocities.tolist())
        joints.header.stamp = stamp
        clock = [(self.clock_pub, ClockMsg(clock=stamp))] if self.clock_pub is not None else []
        for pub, msg in images:
            pub.publish(msg)
        self.task_pub.publish(task_state_to_msg(self.env.task_state(), task))
        self.joint_pub.publish(joints)
        for pub, msg in clock:
            pub.publish(msg)
        self.sent = [*images, (self.joint_pub, joints), *clock]
        self.sent_stamp = stamp

    def heartbeat(self) -> None:
        if not self.on_request_only:  # a camera subscribed since the last step (a policy node that just started)
            self.sent = [*self.unsent_frames(), *self.sent]
        for pub, msg in self.sent:
            pub.publish(msg)

    def close(self) -> None:
        self.env.close()


def camera_frame(camera: str) -> str:
    return f"{camera}_camera"


def main(args: list[str] | None = None) -> int:
    return run_node(SimBridge, args)
