"""recorder: writes one arm's episodes to a dataset on disk (LeRobotDataset v3 layout), reward-labelled.

ROS surface (names relative to the arm's namespace)
  subscribes  episode_start      vla_rl_interfaces/EpisodeStart   reliable, transient local, depth 10 (qos.STARTS):
                                                                  opens one
              chunk_request      vla_rl_interfaces/ChunkRequest   reliable, depth 1000 (qos.STEPS, as published):
                                                                  the control step a chunk starts at
              action_chunk       vla_rl_interfaces/ActionChunk    reliable, depth 1000: the actions, accepted as the
                                                                  executor accepts them (control.chunks.validate_chunk)
              joint_states       sensor_msgs/JointState           reliable, depth 1000 (the sim bridge and
                                                                  ros2_control's broadcaster publish reliable;
                                                                  a lost one would shift the frames)
              <camera_topics>    sensor_msgs/Image rgb8/bgr8      sensor data QoS, depth 30 (qos.IMAGES); one topic
                                                                  per camera
              episode_result     vla_rl_interfaces/EpisodeResult  reliable, depth 100: labels, closes the episode
  services    label_episode      vla_rl_interfaces/LabelEpisode   relabel a recorded episode (operator's
                                                                  correction, persistent); empty id: the last one
  parameters  see Params below (config/recorder.yaml)

How frames are formed from these topics, and which episodes are written, is the core's
(`data.recording.FrameAligner`, see its module); writing, relabelling and the bags are the writer
thread's (`data.writer.EpisodeWriter`). This node converts messages for them, ticks the core on a
wall-clock timer and hands the episodes it finishes to the writer.

A dataset that this recorder's episodes cannot go into (cameras, fps, state, action names) stops it at
start; input that no episode of the dataset could hold (a camera's first image of another size, actions
of another dim) stops it when it comes, with the reason and exit status 2, as a bad parameter does.

The success detector's verdicts (`success`) are not subscribed: the episode manager ends an episode
on them and its EpisodeResult carries the label, which is what the dataset and the bag record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.task import Future as RosFuture
from sensor_msgs.msg import Image, JointState
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart
from vla_rl_interfaces.srv import LabelEpisode

from vla_rl_ros.control import SIM_PANDA, RobotConfig, make_kinematics
from vla_rl_ros.data import DatasetError, VideoConfig
from vla_rl_ros.data.recording import Finished, FrameAligner, RequestIn, ResultIn, StartIn, recorded_action_names
from vla_rl_ros.data.writer import EpisodeWriter, SchemaError
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import MessageError, chunk_from_msg, image_from_msg, proprio_from_joint_state, stamp_ns
from vla_rl_ros.ros.inputs import InputWatch
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CAMERA_TOPICS,
    CHUNK_REQUEST_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    JOINT_STATES_TOPIC,
    LABEL_EPISODE_SERVICE,
)
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param
from vla_rl_ros.ros.qos import IMAGES, RESULTS, STARTS, STEPS

NS_PER_S = 1_000_000_000
TICK_S = 0.05  # wall-clock period of the core's checks for ended episodes and late messages
INPUT_CHECK_S = 0.5  # period of the check that every input topic has a publisher
BACKLOG_WARNING = 4  # episodes waiting for the writer before the log says it falls behind
REFUSED = 2  # exit status for input the dataset cannot hold: run_node's for refused parameters
STATE_EE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")  # after the joints: proprio_from_joint_state's layout
_VIDEO = {f.name: f for f in dataclasses.fields(VideoConfig)}


def video_param(name: str, **limits: Any) -> Any:
    """A parameter that is a VideoConfig field: same default and help (used when creating a dataset)."""
    f = _VIDEO[name]
    return param(f.default, f.metadata["help"] + " (applies when the dataset is created)", **limits)


@dataclass
class Params:
    dataset: str = param("", "dataset root directory (required): created with the first episode if it holds "
                         "none, appended to if it does")
    cameras: list[str] = param(list(CAMERA_TOPICS), "dataset camera names, one per camera_topics entry")
    camera_topics: list[str] = param(list(CAMERA_TOPICS.values()),
                                     "image topic of each camera (relative to the arm's namespace)")
    robot_config: str = param(SIM_PANDA, "robot config YAML (the executor's): model for the state's end-effector "
                              "part, control rate, action mode")
    fps: int = param(0, "dataset frames per second; 0: the robot config's control rate (a frame is a control step, "
                     "so any other value must equal it)", unit="Hz", low=0, high=1000)
    record_evaluation: bool = param(True, "also record held-out evaluation episodes (EpisodeStart.evaluation)")
    bag_dir: str = param("", "if set, also write each episode as a rosbag2 MCAP folder here "
                         "(<bag_dir>/episode_<index>)")
    video_codec: str = video_param("codec")
    video_crf: int = video_param("crf", low=0, high=63)
    video_preset: str = video_param("preset")
    video_pix_fmt: str = video_param("pix_fmt", choices=("yuv420p", "yuv444p"))
    video_gop: int = video_param("gop", low=1, high=1000)

    def __post_init__(self) -> None:
        if len(self.cameras) != len(self.camera_topics) or not self.cameras or len(set(self.cameras)) != \
                len(self.cameras):
            raise ValueError(f"cameras={self.cameras} and camera_topics={self.camera_topics} must be non-empty "
                             "lists of equal length with distinct camera names")

    def video(self) -> VideoConfig:
        return VideoConfig(codec=self.video_codec, crf=self.video_crf, preset=self.video_preset,
                           pix_fmt=self.video_pix_fmt, gop=self.video_gop)


class Recorder(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.params = p = declare(self, Params)
        if not p.dataset:
            raise ParameterError("parameter dataset is required: the dataset root directory, e.g. "
                                 "-p dataset:=$HOME/vla_rl_data/arm0")
        try:
            self.robot = RobotConfig.load(p.robot_config)
            self.kinematics = make_kinematics(self.robot)
            video = p.video()
        except (OSError, ValueError) as exc:
            raise ParameterError(f"recorder: {exc}") from exc
        rate = self.robot.control_rate_hz
        if (p.fps or rate) != rate or rate != round(rate):
            raise ParameterError(f"fps={p.fps} with a {rate:g} Hz robot ({self.robot.source}): a frame is one "
                                 "control step, so fps must be 0 or the control rate, and that rate a whole number")
        self.exit_status = 0  # run_node's: REFUSED once input the dataset cannot hold has stopped the node
        try:
            self.writer = EpisodeWriter(
                Path(p.dataset).expanduser(), fps=p.fps or round(rate), cameras=list(p.cameras),
                state_names=(*self.kinematics.joint_names, *STATE_EE_NAMES),
                action_names=[recorded_action_names(self.robot.action_mode, self.robot.joints, dim)
                              for dim in self.robot.action_dims],
                robot_type=self.robot.name, video=video, bag_dir=Path(p.bag_dir).expanduser() if p.bag_dir else None,
                namespace=self.get_namespace().rstrip("/"), log=self.log)
        except SchemaError as exc:
            raise ParameterError(str(exc)) from exc
        except (DatasetError, OSError) as exc:
            raise ParameterError(f"dataset {p.dataset!r}: {exc}") from exc
        self.drops = DropLog(self.get_logger())
        self.core = FrameAligner(
            cameras=p.cameras, period_ns=round(NS_PER_S / rate), action_mode=self.robot.action_mode,
            action_dims=self.robot.action_dims, arm_joints=self.robot.joints, image_sizes=self.writer.image_sizes,
            action_names=self.writer.dataset_action_names, record_evaluation=p.record_evaluation,
            drop=self.drops.drop, refuse=self.refuse, log=self.log)
        self.wall = Clock(clock_type=ClockType.STEADY_TIME)

        subscriptions = [
            self.create_subscription(EpisodeStart, EPISODE_START_TOPIC, self.on_start, STARTS),
            self.create_subscription(ChunkRequest, CHUNK_REQUEST_TOPIC, self.on_request, STEPS),
            self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self.on_chunk, STEPS),
            self.create_subscription(JointState, JOINT_STATES_TOPIC, self.on_joint_states, STEPS),
            *[self.create_subscription(Image, topic, lambda m, c=camera: self.on_image(c, m), IMAGES)
              for camera, topic in zip(p.cameras, p.camera_topics, strict=True)],
            self.create_subscription(EpisodeResult, EPISODE_RESULT_TOPIC, self.on_result, RESULTS)]
        self.inputs, self.started = InputWatch(self.get_logger(), subscriptions), self.now()
        self.create_service(LabelEpisode, LABEL_EPISODE_SERVICE, self.on_label)
        self.create_timer(TICK_S, lambda: self.write(self.core.tick(self.now())), clock=self.wall)
        self.create_timer(INPUT_CHECK_S, lambda: self.inputs.check(self.now() - self.started), clock=self.wall)
        self.get_logger().info(f"recording {list(p.cameras)} at {p.fps or round(rate)} fps into {p.dataset}")

    def log(self, level: str, text: str) -> None:
        """Log for the core and the writer thread; one call site per severity, as rclpy requires."""
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    def refuse(self, reason: str) -> None:
        """Input the dataset cannot hold (the core's refusal): every episode would be lost, so stop with the
        reason, as the start-up check does; what ended before is still written (close)."""
        if self.exit_status:
            return
        self.get_logger().fatal(f"dataset {self.writer.root}: {reason}: choose another dataset root (parameter "
                                "dataset) or make the input match it; stopping")
        self.exit_status = REFUSED
        rclpy.try_shutdown(context=self.context)

    def now(self) -> float:
        """Monotonic wall time (s): the core's waits for late messages go on while a sim clock stands still."""
        return self.wall.now().nanoseconds / NS_PER_S

    def write(self, finished: list[Finished]) -> None:
        """Queue the episodes the core finished for the writer thread."""
        for f in finished:
            self.writer.submit(f.episode, f.action_names)
            if self.writer.backlog() > BACKLOG_WARNING:
                self.get_logger().warning(f"{self.writer.backlog()} episodes wait for the writer: appends are slower "
                                          "than episodes (video settings, disk); memory grows until they catch up")

    # -- messages to the core ------------------------------------------------------------------------
    def on_start(self, msg: EpisodeStart) -> None:
        self.write(self.core.start(StartIn(
            episode_id=msg.episode_id, task=msg.task, seed=msg.seed, instruction=msg.instruction,
            evaluation=msg.evaluation, max_steps=msg.max_steps, stamp_ns=stamp_ns(msg.header.stamp)), self.now()))

    def on_request(self, msg: ChunkRequest) -> None:
        self.core.request(RequestIn(episode_id=msg.episode_id, request_id=msg.request_id, step=msg.step,
                                    stamp_ns=stamp_ns(msg.header.stamp)), self.now())

    def on_chunk(self, msg: ActionChunk) -> None:
        self.core.chunk(chunk_from_msg(msg), self.now())

    def on_result(self, msg: EpisodeResult) -> None:
        self.write(self.core.result(ResultIn(
            episode_id=msg.episode_id, task=msg.task, seed=msg.seed, instruction=msg.instruction,
            group_id=msg.group_id, success=msg.success, reward=msg.reward, steps=msg.steps,
            policy_version=msg.policy_version, evaluation=msg.evaluation, end_reason=msg.end_reason,
            stamp_ns=stamp_ns(msg.header.stamp)), self.now()))

    def on_joint_states(self, msg: JointState) -> None:
        try:
            state = proprio_from_joint_state(self.robot, self.kinematics, msg)
        except MessageError as exc:
            self.drops.drop("unusable joint_states", str(exc))
            return
        self.core.joint_state(stamp_ns(msg.header.stamp), state)

    def on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = image_from_msg(msg)
        except MessageError as exc:
            self.drops.drop(f"unusable {camera} image", str(exc))
            return
        self.core.image(camera, stamp_ns(msg.header.stamp), rgb)

    # -- labels ------------------------------------------------------------------------------------
    async def on_label(self, request: LabelEpisode.Request,
                       response: LabelEpisode.Response) -> LabelEpisode.Response:
        """A coroutine: it answers once the writer has relabelled (possibly behind a long append), and the
        executor delivers messages meanwhile, on its one thread."""
        rec = self.core.episode(request.episode_id)
        if rec is not None:
            response.accepted, response.message = False, (f"episode {rec.episode_id} is still being recorded; "
                                                          "label it once it is written (seconds after its result)")
            return response
        answer: RosFuture = RosFuture()
        self.writer.relabel(request.episode_id, request.success).add_done_callback(
            lambda done: answer.set_result(done.result()))
        response.accepted, response.message = await answer
        return response

    def close(self) -> None:
        """Write what ended (also episodes still waiting for images), then drain the writer's queue."""
        self.write(self.core.drain())
        if self.drops.counts:
            self.get_logger().info(f"dropped input, by cause: {dict(self.drops.counts)}")
        backlog = self.writer.backlog()
        if backlog:
            self.get_logger().info(f"writing the {backlog} episode(s) and label(s) still queued before exiting")
        self.writer.close()
        self.get_logger().info("episode writer joined")


def main(args: list[str] | None = None) -> int:
    return run_node(Recorder, args)
