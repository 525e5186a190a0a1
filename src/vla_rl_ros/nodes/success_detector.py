"""success_detector: is the running episode a success? One per arm; the backend is the `type` parameter.

ROS surface (names relative to the arm's namespace)
  subscribes  episode_start   vla_rl_interfaces/EpisodeStart   reliable, transient local: which task runs
              task_state      vla_rl_interfaces/TaskState      reliable (type sim_oracle): privileged state
              <image_topic>   sensor_msgs/Image rgb8/bgr8      sensor data QoS (type classifier): the camera
              episode_result  vla_rl_interfaces/EpisodeResult  reliable (type operator): labels close with it
  publishes   success         vla_rl_interfaces/SuccessSignal  reliable. sim_oracle, classifier: one verdict
                                                               per judged step, success true once the raw
                                                               verdict held for hold_steps steps, offered
                                                               only once the input topic has a publisher;
                                                               operator: one final verdict per episode
  services    success_detector/label_episode  vla_rl_interfaces/LabelEpisode  (type operator) the operator's
                                                               verdict on the running episode (empty id: the
                                                               running one); refused for any other episode
  parameters  see Params below (config/success_detector.yaml)

The episode manager starts no episode before a success publisher exists, so the detector offers one
only when what it judges has a publisher: a lockstep sim can run a whole episode while a detector that
has just started still discovers its camera, and that episode would end unjudged as a time-out.

A classifier judges one camera frame per control period of the frames' stamps (the robot config's
rate, a quarter period of jitter allowed, `control.Lockstep`): its hold_steps count control steps, as
the datasets it was trained and checked on hold one frame per step, and a 30 fps camera would
otherwise pass 3 frames of success in 0.1 s. The sim bridge's idle re-sends (same stamp) are not new
steps; frames stamped before the episode's start belong to the previous episode and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import qos_profile_sensor_data
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image
from vla_rl_interfaces.msg import EpisodeResult, EpisodeStart, SuccessSignal, TaskState
from vla_rl_interfaces.srv import LabelEpisode

from vla_rl_ros.control import SIM_PANDA, Lockstep, RobotConfig
from vla_rl_ros.control.executor import NS_PER_S
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import MessageError, image_from_msg, stamp_ns, task_state_from_msg
from vla_rl_ros.ros.names import (
    CAMERA_TOPICS,
    DETECTOR_LABEL_SERVICE,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    SUCCESS_TOPIC,
    TASK_STATE_TOPIC,
)
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import LATCHED, RELIABLE, RESULTS
from vla_rl_ros.sim.tasks.hold import HoldFilter
from vla_rl_ros.success import BACKENDS, LabelError, backend_class

OFFER_PERIOD_S = 0.05  # how often a detector without a success publisher looks for its input's publisher


@dataclass
class Params:
    type: str = param("sim_oracle", "success detector backend: sim_oracle (privileged sim state), classifier "
                      "(camera images, `vla-rl train-classifier`), operator (vla-rl operator)", choices=tuple(BACKENDS))
    hold_steps: int = param(0, "consecutive steps success must hold; 0: the backend's own (the task's for "
                            "sim_oracle, the model's for classifier)", unit="steps", low=0, high=1000)
    model: str = param("", "classifier directory (model.safetensors + classifier.json); type classifier only")
    threshold: float = param(0.0, "classifier success probability threshold; 0: the one stored with the model",
                             low=0.0, high=0.999)
    image_topic: str = param(CAMERA_TOPICS["front"], "camera topic the classifier judges (the sim bridge's front "
                             "camera)")
    robot_config: str = param(SIM_PANDA, "robot config YAML (the executor's); type classifier: one frame is judged "
                              "per control period, the steps hold_steps counts")


class SuccessDetector(Node):
    def __init__(self, **options: Any) -> None:
        """`options`: rclpy Node arguments (namespace, cli_args...) when `sim_arms` composes the arm's nodes."""
        super().__init__("success_detector", **options)
        self.params = p = declare(self, Params)
        cls = backend_class(p.type)
        try:
            self.backend = cls(**{name: getattr(p, name) for name in cls.options})
        except ValueError as exc:  # ClassifierError is one: a missing or corrupt model
            raise ParameterError(f"type {p.type}: {exc}") from exc
        self.drops = DropLog(self.get_logger())
        self.episode: EpisodeStart | None = None
        try:
            period_ns = round(RobotConfig.load(p.robot_config).period * NS_PER_S)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"robot_config {p.robot_config!r}: {exc}") from exc
        self.frames = Lockstep(period_ns)  # when the classifier's next frame is due, by the frames' stamps
        self.hold = HoldFilter(1)
        self.success_pub: Publisher | None = None
        self.create_subscription(EpisodeStart, EPISODE_START_TOPIC, self.on_episode_start, LATCHED)
        observes = self.backend.observes
        self.judged: Subscription | None = None  # the input judged at each step
        if observes == "task_state":
            self.judged = self.create_subscription(TaskState, TASK_STATE_TOPIC, self.on_task_state, RELIABLE)
        elif observes == "image":
            self.judged = self.create_subscription(Image, p.image_topic, self.on_image, qos_profile_sensor_data)
        else:
            self.create_subscription(EpisodeResult, EPISODE_RESULT_TOPIC, self.on_episode_result, RESULTS)
            self.create_service(LabelEpisode, DETECTOR_LABEL_SERVICE, self.on_label)
        where = p.model if observes == "image" else observes
        self.get_logger().info(f"judging success with {p.type} ({where})")
        self.offer_timer = self.create_timer(OFFER_PERIOD_S, self.offer, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.offer()

    def offer(self) -> None:
        """Create the success publisher once the judged input has a publisher (at once for the operator);
        a tick queued before the timer was cancelled finds it made."""
        if self.success_pub is None and (self.judged is None or self.judged.get_publisher_count() > 0):
            self.advertise()

    def advertise(self) -> None:
        self.offer_timer.cancel()
        self.success_pub = self.create_publisher(SuccessSignal, SUCCESS_TOPIC, RELIABLE)
        if self.judged is not None:
            self.get_logger().info(f"{self.judged.topic_name} has a publisher: offering verdicts")

    def on_episode_start(self, msg: EpisodeStart) -> None:
        try:
            hold = self.params.hold_steps or self.backend.hold_steps(msg.task)
        except ValueError as exc:
            self.drops.drop("unknown task", str(exc))
            self.episode = None
            return
        if self.episode is not None and self.episode.episode_id == msg.episode_id:
            return  # the latched start again
        self.episode = msg
        self.hold.reset(hold)
        self.frames = Lockstep(self.frames.period_ns)
        if self.backend.observes == "operator":
            self.backend.start(msg.episode_id)
            self.get_logger().info(f"episode {msg.episode_id} running: waiting for the operator's label")
        else:
            self.get_logger().info(f"episode {msg.episode_id} running: {self.backend.source} judges {msg.task}")

    def verdict(self, raw: bool, confidence: float, header: object) -> None:
        assert self.episode is not None
        if self.success_pub is None:  # an input arrived before the timer saw its publisher
            self.advertise()
        out = SuccessSignal(episode_id=self.episode.episode_id, success=self.hold.update(raw),
                            confidence=confidence, source=self.backend.source)
        out.header = header
        self.success_pub.publish(out)

    def on_task_state(self, msg: TaskState) -> None:
        if self.episode is None or msg.episode_id != self.episode.episode_id:
            self.drops.drop("task_state of another episode", f"episode {msg.episode_id!r}")
            return
        try:
            raw, confidence = self.backend.judge(self.episode.task, task_state_from_msg(msg))
        except (MessageError, KeyError, ValueError) as exc:
            self.drops.drop("malformed task_state", str(exc))
            return
        self.verdict(raw, confidence, msg.header)

    def on_image(self, msg: Image) -> None:
        if self.episode is None:
            return
        try:
            image = image_from_msg(msg)  # before the stamp checks: garbage is reported whatever its stamp
        except MessageError as exc:
            self.drops.drop("unusable image", str(exc))
            return
        stamp = stamp_ns(msg.header.stamp)
        if stamp < stamp_ns(self.episode.header.stamp) or not self.frames.due(stamp):
            return  # one of the previous episode, a re-sent frame, or one within the control period
        raw, confidence = self.backend.judge(self.episode.task, image)
        self.frames.sent(stamp)
        self.verdict(raw, confidence, msg.header)

    def on_episode_result(self, msg: EpisodeResult) -> None:
        self.backend.end(msg.episode_id)

    def on_label(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        try:
            episode_id = self.backend.label(request.episode_id, request.success)
        except LabelError as exc:
            response.accepted, response.message = False, str(exc)
            self.drops.drop("label refused", str(exc))
            return response
        out = SuccessSignal(episode_id=episode_id, success=request.success, confidence=1.0, source=self.backend.source)
        out.header.stamp = self.get_clock().now().to_msg()
        self.success_pub.publish(out)
        response.accepted, response.message = True, f"episode {episode_id} labelled success={request.success}"
        self.get_logger().info(response.message)
        return response


def main(args: list[str] | None = None) -> int:
    return run_node(SuccessDetector, args)
