"""policy_node: answers chunk requests of one or more arms with one model, batching them.

ROS surface; per arm `a` in the `arms` parameter (absolute, or relative to the node's namespace; "": its own)
  subscribes  a/chunk_request     vla_rl_interfaces/ChunkRequest  reliable, depth 1000 (qos.STEPS)
              a/<image_topic>     sensor_msgs/Image                sensor data QoS; newest kept; by default
                                                                   the checkpoint camera's (front:
                                                                   camera/image_raw, wrist:
                                                                   wrist_camera/image_raw)
              a/joint_states      sensor_msgs/JointState           sensor data QoS; newest kept
              a/episode_start     vla_rl_interfaces/EpisodeStart   reliable, transient local
              a/episode_result    vla_rl_interfaces/EpisodeResult  reliable
              /policy_update      vla_rl_interfaces/PolicyUpdate   reliable, transient local
  publishes   a/action_chunk      vla_rl_interfaces/ActionChunk    reliable, depth 1000 (qos.STEPS)
              a/trajectory        vla_rl_interfaces/Trajectory     reliable, depth 100 (training episodes only)
  parameters  see Params below (config/policy_node.yaml)

A request is answered from the newest image and joint state once both are stamped at or after the
request (never from older observations). Requests that are ready together, from any arms, go through
one forward pass. A PolicyUpdate is verified (digest) and applied only between episodes, not waiting
for an arm that has asked for no chunk for a while (`SwapGate`: a dead or hung executor); if the new
weights fail to load, the old ones stay. A training episode's Trajectory carries the temperature its
chunks were sampled at (the learner scores at it); one with a greedy chunk has none and is withheld. A
withheld trajectory (also: two policy versions, the node started mid-episode, no chunk served) goes out
without chunks, its `withheld` field saying why, so that the learner closes the group without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import Image, JointState
from vla_rl_interfaces.msg import ActionChunk, ChunkRequest, EpisodeResult, EpisodeStart, PolicyUpdate, Trajectory

from vla_rl_ros.control.command import make_kinematics
from vla_rl_ros.control.robot import RobotConfig
from vla_rl_ros.digest import verify_checkpoint
from vla_rl_ros.paths import default_checkpoint
from vla_rl_ros.policy import CheckpointError, VLAPolicy
from vla_rl_ros.policy.serving import EpisodeLog, ServingState, SwapGate, withheld_reason
from vla_rl_ros.rl.config import ROLLOUT_TEMPERATURE
from vla_rl_ros.rl.records import DISCARD_REASONS
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import MessageError, image_from_msg, proprio_from_joint_state
from vla_rl_ros.ros.names import (
    ACTION_CHUNK_TOPIC,
    CHUNK_REQUEST_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    JOINT_STATES_TOPIC,
    POLICY_UPDATE_TOPIC,
    TRAJECTORY_TOPIC,
    camera_topic,
)
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param, threads_param
from vla_rl_ros.ros.qos import EPISODES, LATCHED, RESULTS, STEPS

# Requests are served when their observation arrives (every input calls `serve`), not by polling: an
# rclpy timer wake-up costs about half a millisecond of Python, which at 2 ms periods was a quarter of
# the node's CPU (bench_graph_tax: 4.3 -> 3.3 CPU ms per control step). Only a ready request waiting
# for other arms (batch_window_s) and the unannounced-request drop need a timer: a one-shot one for
# the first, this slow one for the second.
HOUSEKEEPING_S = 0.5
# A request may overtake its episode's EpisodeStart (different topics are not ordered): it waits this
# long for the episode to be announced before it is dropped.
UNANNOUNCED_WAIT_S = 5.0
# An episode's result and the arm's next EpisodeStart come on different topics, so the start may be
# handled first (under load both wait for one spin, and the executor takes them in its own order): the
# replaced episode's log waits for its result here, so its trajectory still reaches the learner.
UNFINISHED_PER_ARM = 4
# What the drop log says of a withheld trajectory (a training episode that got no chunk withholds nothing).
WITHHELD_DROPS = {
    Trajectory.WITHHELD_TWO_VERSIONS: ("episode served by two policy versions", "new weights came while its arm "
                                       "was silent"),
    Trajectory.WITHHELD_GREEDY: ("training episode with greedy chunks", "its executor asked for greedy chunks "
                                 "(always_greedy); the learner scores a trajectory at the temperature it was "
                                 "sampled at"),
    Trajectory.WITHHELD_JOINED_MIDWAY: ("episode joined mid-way", "served from step {step} on only (this node "
                                        "started during it)"),
}


@dataclass
class Params:
    checkpoint: str = param("", "policy checkpoint directory (safetensors); empty: the embedded default")
    device: str = param("cpu", "torch device, e.g. cpu or cuda:0")
    threads: int = threads_param()
    dtype: str = param("float32", "weights dtype", choices=("float32", "bfloat16", "float16"))
    trust_remote_code: bool = param(False, "allow a checkpoint's own Python code to run (transformers)")
    arms: list[str] = param([""], "arm namespaces served: absolute (/h1/arm0) or relative to this "
                            "node's ('' = its own)")
    image_topic: str = param("", "image topic under each arm namespace; empty: the checkpoint camera's topic "
                             "(front: camera/image_raw, wrist: wrist_camera/image_raw)")
    temperature: float = param(ROLLOUT_TEMPERATURE, "sampling temperature of training rollouts; each Trajectory "
                               "carries it and the learner scores at it (SimpleVLA-RL: 1.6; the tiny policies: "
                               "1.0, docs/grpo.md)", low=0.01, high=100.0)
    max_batch: int = param(16, "most requests in one forward pass", low=1, high=1024)
    batch_window_s: float = param(0.02, "how long a ready request may wait for other arms' requests", unit="s",
                                  low=0.0, high=5.0)
    robot_config: str = param("package://vla_rl_ros/config/robots/sim_panda.yaml",
                              "robot config (config/robots/*.yaml) whose model gives the state's end-effector part")
    seed: int = param(0, "seed of the sampling generator", low=0, high=2**31 - 1)
    action_mode: str = param("ee_delta", "what the checkpoint's actions mean (ActionChunk.action_mode)",
                             choices=("ee_delta", "joint_position"))


@dataclass
class Arm:
    """One served arm's topics and newest observations."""

    name: str
    chunk_pub: object
    trajectory_pub: object
    image: Image | None = None
    joints: JointState | None = None
    request: ChunkRequest | None = None
    ready_since: float | None = None


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.params = p = declare(self, Params)
        if p.threads:
            torch.set_num_threads(p.threads)
        transformers.logging.disable_progress_bar()  # per-shard bars would flood the launch output
        self.drops = DropLog(self.get_logger())
        checkpoint = Path(p.checkpoint) if p.checkpoint else default_checkpoint()
        try:
            self.policy = self.load(checkpoint)
            self.robot = RobotConfig.load(p.robot_config)
            self.kinematics = make_kinematics(self.robot)
            image_topic = p.image_topic or camera_topic(self.policy.camera)
        except (CheckpointError, FileNotFoundError, ValueError, OSError) as exc:
            raise ParameterError(f"cannot start the policy: {exc}") from exc
        self.generator = torch.Generator(device=p.device).manual_seed(p.seed)
        self.serving = ServingState(version=0)
        self.gate = SwapGate(self.serving)
        self.unfinished: dict[str, EpisodeLog] = {}  # replaced before their result, by episode id, oldest first
        self.arms: dict[str, Arm] = {}
        for name in p.arms:
            prefix = f"{name.rstrip('/')}/" if name else ""
            arm = Arm(name, self.create_publisher(ActionChunk, prefix + ACTION_CHUNK_TOPIC, STEPS),
                      self.create_publisher(Trajectory, prefix + TRAJECTORY_TOPIC, EPISODES))
            self.arms[name] = arm
            self.create_subscription(ChunkRequest, prefix + CHUNK_REQUEST_TOPIC,
                                     lambda m, a=arm: self.on_request(a, m), STEPS)
            self.create_subscription(Image, prefix + image_topic, lambda m, a=arm: self.on_image(a, m),
                                     qos_profile_sensor_data)
            self.create_subscription(JointState, prefix + JOINT_STATES_TOPIC, lambda m, a=arm: self.on_joints(a, m),
                                     qos_profile_sensor_data)
            self.create_subscription(EpisodeStart, prefix + EPISODE_START_TOPIC,
                                     lambda m, a=arm: self.on_start(a, m), LATCHED)
            self.create_subscription(EpisodeResult, prefix + EPISODE_RESULT_TOPIC,
                                     lambda m, a=arm: self.on_result(a, m), RESULTS)
        self.create_subscription(PolicyUpdate, POLICY_UPDATE_TOPIC, self.on_update, LATCHED)
        self.create_timer(HOUSEKEEPING_S, self.serve)
        # Fires once, batch_window_s after a ready request began waiting for other arms (re-armed then).
        self.window_timer = self.create_timer(max(p.batch_window_s, 1e-3), self.serve)
        self.window_timer.cancel()
        self.get_logger().info(
            f"serving {checkpoint} to {len(self.arms)} arm(s): chunk {self.policy.chunk_size} x "
            f"{self.policy.action_dim}, {self.policy.camera} camera ({image_topic}) at {self.policy.image_size} px")

    def load(self, path: Path) -> VLAPolicy:
        p = self.params
        return VLAPolicy.load(path, device=p.device, dtype=p.dtype, trust_remote_code=p.trust_remote_code)

    # -- episodes ------------------------------------------------------------------------------
    def on_start(self, arm: Arm, msg: EpisodeStart) -> None:
        replaced = self.serving.start_episode(arm.name, msg.episode_id, msg.instruction, msg.evaluation)
        if replaced is not None:
            self.unfinished[replaced.episode_id] = replaced
            if len(self.unfinished) > UNFINISHED_PER_ARM * len(self.arms):
                lost = self.unfinished.pop(next(iter(self.unfinished)))
                self.drops.drop("episode without a result", f"episode {lost.episode_id} never got its result")
        if arm.request is not None and arm.request.episode_id != msg.episode_id:
            arm.request = None
        self.serve()

    def on_result(self, arm: Arm, msg: EpisodeResult) -> None:
        self.close_episode(arm, msg)
        self.serve()  # a policy update waits for the end of an episode

    def close_episode(self, arm: Arm, msg: EpisodeResult) -> None:
        """Publish the ended episode's trajectory if the learner may use it."""
        log = self.serving.end_episode(arm.name, msg.episode_id) or self.unfinished.pop(msg.episode_id, None)
        if log is None:
            return
        if arm.request is not None and arm.request.episode_id == msg.episode_id:
            arm.request = None
        two_versions = self.gate.ended(msg.episode_id)
        if log.evaluation:
            return
        reason = withheld_reason(log, two_versions)
        if reason in WITHHELD_DROPS:
            cause, why = WITHHELD_DROPS[reason]
            self.drops.drop(cause, f"episode {log.episode_id}: {why.format(step=log.steps[0])}; its trajectory "
                            "is withheld from the learner")
        if reason:
            if msg.end_reason not in DISCARD_REASONS:  # the learner discards those episodes whole anyway
                arm.trajectory_pub.publish(withheld_msg(log, reason, self.params.temperature))
            return
        arm.trajectory_pub.publish(trajectory_msg(log, self.params.temperature, self.policy))

    # -- requests --------------------------------------------------------------------------------
    def on_request(self, arm: Arm, msg: ChunkRequest) -> None:
        arm.request, arm.ready_since = msg, None
        self.gate.request(arm.name, time.monotonic())
        self.serve()

    def on_image(self, arm: Arm, msg: Image) -> None:
        arm.image = msg
        if arm.request is not None:
            self.serve()

    def on_joints(self, arm: Arm, msg: JointState) -> None:
        arm.joints = msg
        if arm.request is not None:
            self.serve()

    def observation_ready(self, arm: Arm) -> bool:
        """The newest image and joint state are stamped no earlier than the request."""
        request = arm.request
        if request is None or arm.image is None or arm.joints is None:
            return False
        since = Time.from_msg(request.header.stamp)
        return Time.from_msg(arm.image.header.stamp) >= since and Time.from_msg(arm.joints.header.stamp) >= since

    def serve(self) -> None:
        self.window_timer.cancel()
        if self.gate.swap_due(time.monotonic()):
            self.apply_update(self.serving.pending_update)
        now = time.monotonic()
        ready = []
        for arm in self.arms.values():
            log = arm.request and self.gate.episode(arm.name, arm.request.episode_id)
            if arm.request and not log and self.gate.quiet_for(arm.name, now) > UNANNOUNCED_WAIT_S:
                self.drops.drop("request for an episode not running", f"{arm.name or '.'}: {arm.request.episode_id!r}")
                arm.request = None
            if log and self.serving.may_serve(log) and self.observation_ready(arm):
                arm.ready_since = arm.ready_since or now
                ready.append(arm)
        if not ready:
            return
        waiting = [a for a in self.arms.values() if a.request is not None and a not in ready]
        if waiting and len(ready) < self.params.max_batch and now - min(a.ready_since for a in ready) < \
                self.params.batch_window_s:
            self.window_timer.reset()  # give the other arms' requests a moment to join this forward pass
            return
        batches = [([a for a in ready if a.request.greedy == greedy][: self.params.max_batch], greedy)
                   for greedy in (True, False)]  # answering clears the requests: split first
        for batch, greedy in batches:
            if batch:
                self.answer(batch, greedy)

    def answer(self, batch: list[Arm], greedy: bool) -> None:
        rows = []
        for arm in batch:
            try:
                image = image_from_msg(arm.image)
                state = proprio_from_joint_state(self.robot, self.kinematics, arm.joints)
            except MessageError as exc:
                self.drops.drop("unusable observation", f"{arm.name or '.'}: {exc}")
                arm.image = None  # wait for the next one
                continue
            rows.append((arm, image, state))
        if not rows:
            return
        out = self.policy.act(np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                              [self.serving.episode(a.name, a.request.episode_id).instruction for a, _, _ in rows],
                              greedy=greedy, temperature=self.params.temperature, generator=self.generator)
        for i, (arm, _, state) in enumerate(rows):
            request = arm.request
            log = self.serving.episode(arm.name, request.episode_id)
            self.serving.record(log, arm.image, state, out.token_ids[i], out.log_probs[i], request.step,
                                greedy=greedy)
            chunk = ActionChunk(
                episode_id=request.episode_id, request_id=request.request_id, policy_version=log.policy_version,
                chunk_size=self.policy.chunk_size, action_dim=self.policy.action_dim,
                action_mode=self.params.action_mode, actions=out.actions[i].ravel().tolist(),
                token_ids=out.token_ids[i].astype(np.int32).tolist(), log_prob=float(out.log_probs[i]),
                greedy=greedy,
            )
            chunk.header.stamp = arm.image.header.stamp
            chunk.header.frame_id = "base_link"
            arm.chunk_pub.publish(chunk)
            arm.request = None

    # -- weights ---------------------------------------------------------------------------------
    def on_update(self, msg: PolicyUpdate) -> None:
        if not self.gate.wanted(msg.version, msg.digest):
            return
        self.serving.pending_update = msg
        self.get_logger().info(f"policy v{msg.version} announced; applying it between episodes")
        self.serve()

    def apply_update(self, msg: PolicyUpdate) -> None:
        try:
            verify_checkpoint(msg.checkpoint_dir, msg.digest)
            policy = self.load(Path(msg.checkpoint_dir))
            if (policy.chunk_size, policy.action_dim) != (self.policy.chunk_size, self.policy.action_dim):
                raise CheckpointError(f"chunk {policy.chunk_size} x {policy.action_dim} differs from the served "
                                      f"{self.policy.chunk_size} x {self.policy.action_dim}")
        except (CheckpointError, FileNotFoundError, OSError, ValueError) as exc:
            self.get_logger().error(f"policy v{msg.version} from {msg.checkpoint_dir} rejected, keeping "
                                    f"v{self.serving.version}: {exc}")
            self.serving.pending_update = None
            return
        self.policy = policy
        behind = self.gate.swapped(msg.version, msg.digest)
        self.get_logger().info(f"now serving policy v{msg.version}")
        for log in behind:
            self.get_logger().warning(
                f"did not wait for {log.arm or '.'}'s episode {log.episode_id}: no chunk request for "
                f"{self.gate.silent_after_s:.0f} s; if the arm asks again, the episode goes on with "
                f"v{msg.version} and its trajectory is withheld from the learner")


def trajectory_msg(log: EpisodeLog, temperature: float, policy: VLAPolicy) -> Trajectory:
    """An episode's log as the Trajectory for the learner (benchmarks/bench_traffic.py sizes these)."""
    return Trajectory(
        episode_id=log.episode_id, arm=log.arm, instruction=log.instruction, policy_version=log.policy_version,
        temperature=temperature, chunk_size=policy.chunk_size, action_dim=policy.action_dim, images=log.images,
        proprio_dim=int(log.states[0].shape[0]), proprio=np.concatenate(log.states).tolist(),
        token_ids=np.concatenate(log.token_ids).astype(np.int32).tolist(), log_probs=log.log_probs,
        steps=log.steps,
    )


def withheld_msg(log: EpisodeLog, reason: str, temperature: float) -> Trajectory:
    """The Trajectory of a training episode the learner must not learn from: no chunks, only why."""
    return Trajectory(episode_id=log.episode_id, arm=log.arm, instruction=log.instruction,
                      policy_version=log.policy_version, temperature=temperature, withheld=reason)


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args)
