"""learner: GRPO on the episodes of every arm; publishes new weights (one learner per graph).

ROS surface; per arm `a` in the `arms` parameter (relative names)
  subscribes  a/trajectory      vla_rl_interfaces/Trajectory     reliable, depth 100 (from policy_node)
              a/episode_result  vla_rl_interfaces/EpisodeResult  reliable, depth 100 (from episode_manager)
  publishes   /policy_update    vla_rl_interfaces/PolicyUpdate   reliable, transient local
  parameters  see Params below: every GRPOConfig field (vla_rl_ros/rl/config.py) plus the node's own
              (config/learner.yaml)

Messages are queued by the subscription callbacks and handed to the learner core by one worker
thread, which also runs the updates, so a slow update never blocks reception. The run directory
holds the episode buffer (journalled), checkpoints, the published policies, metrics.csv and
success.png. Groups close at the size their episode manager scheduled (EpisodeResult.group_size) and
are scored at the temperature their policy node sampled at (Trajectory.temperature); a group sampled
at several temperatures is refused and logged. On start the learner resumes from the run directory's
latest checkpoint, if any.
The node exits (status 0) after max_updates updates or max_wall_time_s, ending a train_sim launch;
a failed update ends it with status 1, after which `vla-rl launch train_sim` respawns it to resume.

Distributed (torchrun --nproc_per_node=N <this executable> --ros-args ...): rank 0 is this node, and
every update's gradients are computed by all N ranks (vla_rl_ros/rl/distributed.py); ranks > 0 run
no ROS at all: they take the policy, the config and each update's share from rank 0, and end with it.
With fsdp:=true the ranks shard the model (FSDP2) instead of each holding it whole.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from pathlib import Path

import rclpy
import torch
import transformers
from rclpy.node import Node
from vla_rl_interfaces.msg import EpisodeResult, PolicyUpdate, Trajectory

from vla_rl_ros.digest import checkpoint_digest
from vla_rl_ros.paths import default_checkpoint
from vla_rl_ros.policy import CheckpointError, FinetuneConfig
from vla_rl_ros.policy.vla_policy import load_trainable
from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.distributed import DataParallel, Rank, WorkerSetup, default_backend, rank_device, serve
from vla_rl_ros.rl.learner import GRPOLearner
from vla_rl_ros.rl.plot import plot_run
from vla_rl_ros.ros.causes import DropLog
from vla_rl_ros.ros.convert import MessageError, result_from_msg, trajectory_from_msg
from vla_rl_ros.ros.names import EPISODE_RESULT_TOPIC, POLICY_UPDATE_TOPIC, TRAJECTORY_TOPIC
from vla_rl_ros.ros.node_main import run_node
from vla_rl_ros.ros.params import ParameterError, declare, param, threads_param
from vla_rl_ros.ros.qos import EPISODES, LATCHED

IDLE_S = 0.05  # the worker's wait for new messages


@dataclasses.dataclass(frozen=True)
class Params(GRPOConfig):
    run_dir: str = param("runs/train_sim", "where buffer, checkpoints, policies, metrics.csv and the plot go")
    checkpoint: str = param("", "initial policy checkpoint; empty: the embedded default")
    trust_remote_code: bool = param(False, "allow the checkpoint's own Python code to run (transformers auto_map, "
                                    "e.g. an OpenVLA-style checkpoint), as the policy node's parameter does")
    device: str = param("cpu", "torch device, e.g. cpu or cuda:0")
    threads: int = threads_param()
    # No float16: AdamW's eps (1e-8) is 0 in float16, so one step makes untouched weights NaN (0/0);
    # bfloat16 has float32's range. The policy node may serve float16.
    dtype: str = param("float32", "weights dtype", choices=("float32", "bfloat16"))
    finetune: str = param("full", "train every weight (full) or LoRA adapters (lora)", choices=("full", "lora"))
    lora_rank: int = param(8, "LoRA rank r (finetune: lora)", low=1, high=1024)
    activation_checkpointing: bool = param(False, "recompute each transformer block's activations in the "
                                           "backward pass: less memory for about one more forward pass")
    arms: list[str] = param(["arm0"], "arm namespaces whose episodes are learned from")
    max_updates: int = param(0, "exit after this many updates; 0: no limit", low=0, high=10**9)
    max_wall_time_s: float = param(0.0, "exit after this much wall time; 0: no limit", unit="s", low=0.0,
                                   high=10**9)
    checkpoint_every: int = param(5, "updates between learner checkpoints", low=1, high=10**6)
    seed: int = param(0, "seed of mini-batch shuffling", low=0, high=2**31 - 1)
    backend: str = param("", "gradient all-reduce of a distributed learner (run under torchrun); empty: "
                         "nccl on a CUDA device, gloo otherwise", choices=("", "gloo", "nccl"))
    fsdp: bool = param(False, "distributed learner: shard the weights, gradients and optimiser state over "
                       "the ranks (FSDP2), for a model that does not fit one device; rank 0 keeps a whole "
                       "copy on the CPU to save")

    def grpo(self) -> GRPOConfig:
        return GRPOConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GRPOConfig)})


class Learner(Node):
    def __init__(self) -> None:
        super().__init__("learner")
        self.params = p = declare(self, Params)
        if p.threads:
            torch.set_num_threads(p.threads)
        transformers.logging.disable_progress_bar()  # per-shard bars would flood the launch output
        self.drops = DropLog(self.get_logger())
        self.run_dir = Path(p.run_dir).resolve()
        checkpoint = Path(p.checkpoint) if p.checkpoint else default_checkpoint()
        make_policy = functools.partial(load_trainable, checkpoint,
                                        FinetuneConfig(mode=p.finetune, lora_rank=p.lora_rank,
                                                       activation_checkpointing=p.activation_checkpointing),
                                        p.dtype, trust_remote_code=p.trust_remote_code)
        rank = Rank.from_env()  # None: one process, the whole learner
        if p.fsdp and rank is None:
            raise ParameterError("fsdp:=true shards over the ranks of a distributed learner: run the "
                                 "learner under torchrun (README, 'Distributed learner')")
        try:
            device = rank_device(p.device, rank.local_rank) if rank else p.device
            policy = make_policy("cpu" if p.fsdp else device)  # sharded: each rank's shards go to its device
            parallel = None if rank is None else DataParallel(rank, WorkerSetup(
                make_policy, p.device, p.grpo(), p.backend or default_backend(p.device), p.threads, p.fsdp))
            self.core = GRPOLearner(policy, p.grpo(), self.run_dir, seed=p.seed, parallel=parallel)
            resumed = self.core.resume()
        except (CheckpointError, FileNotFoundError, OSError, ValueError) as exc:
            raise ParameterError(f"cannot start the learner: {exc}") from exc
        self.checkpointed = self.core.updates  # the updates the newest checkpoint covers
        self.update_pub = self.create_publisher(PolicyUpdate, POLICY_UPDATE_TOPIC, LATCHED)
        if resumed is not None:
            self.get_logger().info(f"resumed from {resumed} at update {self.core.updates}")
        if self.core.lost_versions:
            self.get_logger().warning(f"policies {self.core.lost_versions} of updates after the last checkpoint are "
                                      "lost; their versions are numbered again")
        if resumed is not None or self.core.lost_versions:
            self.publish_policy()  # the policy nodes must act with the restored weights
        self.inbox: queue.SimpleQueue[Trajectory | EpisodeResult] = queue.SimpleQueue()
        for arm in p.arms:
            prefix = f"{arm.rstrip('/')}/" if arm else ""
            self.create_subscription(Trajectory, prefix + TRAJECTORY_TOPIC, self.inbox.put, EPISODES)
            self.create_subscription(EpisodeResult, prefix + EPISODE_RESULT_TOPIC, self.inbox.put, EPISODES)
        self.started = time.monotonic()
        self.exit_status = 0  # run_node's: 1 after a failure, so that a launcher respawns this node
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self.work, name="learner-worker", daemon=True)
        self.worker.start()
        ranks = f" on {rank.world_size} ranks" if rank else ""
        self.get_logger().info(f"learning from {p.arms} into {self.run_dir}: {p.groups_per_update} groups per "
                               f"update, {p.epochs} epochs, mini-batches of {p.minibatch_size}{ranks}")

    def ingest(self) -> None:
        """Move the messages queued so far into the buffer (only this thread touches the learner core).
        Not until the queue is empty: episodes arriving as fast as they are journalled (many arms, a loaded
        machine) kept that loop from ever returning, and the ready groups from ever being trained on."""
        for _ in range(self.inbox.qsize()):  # this thread alone takes from the inbox: they are all there
            msg = self.inbox.get_nowait()
            try:
                if isinstance(msg, Trajectory):
                    record = trajectory_from_msg(msg)
                    self.core.policy.check_tokens(record.token_ids, record.state)  # this model can score it
                    self.core.buffer.add_trajectory(record)
                else:
                    self.core.buffer.add_result(result_from_msg(msg))
            except (MessageError, ValueError) as exc:
                self.drops.drop(f"malformed {type(msg).__name__}", str(exc))
            for refusal in self.core.buffer.take_refusals():
                self.get_logger().warning(f"refused {refusal}")

    def work(self) -> None:
        p = self.params
        try:
            while not self.stop.is_set():
                # Checked before every update, not only when idle: a backlog of ready groups must not
                # carry a run past its wall time.
                if p.max_wall_time_s and time.monotonic() - self.started > p.max_wall_time_s:
                    self.finish(f"wall time of {p.max_wall_time_s:.0f} s reached")
                    return
                self.ingest()
                metrics = self.core.maybe_update()
                if metrics is None:
                    self.stop.wait(IDLE_S)
                    continue
                self.publish_policy()
                self.report(metrics)
                if self.core.updates % p.checkpoint_every == 0:
                    self.checkpoint()
                if p.max_updates and self.core.updates >= p.max_updates:
                    self.finish(f"{p.max_updates} updates done")
                    return
        except Exception as exc:  # the worker must not die silently: stop the node with the reason
            self.get_logger().fatal(f"learner failed: {exc!r}")
            self.exit_status = 1
            rclpy.try_shutdown(context=self.context)
            raise

    def publish_policy(self) -> None:
        path = self.core.publish_policy()
        msg = PolicyUpdate(version=self.core.policy_version, checkpoint_dir=str(path), digest=checkpoint_digest(path))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.update_pub.publish(msg)

    def report(self, m: dict[str, float]) -> None:
        limit = f"/{self.params.max_updates}" if self.params.max_updates else ""

        def show(key: str, fmt: str = ".2f") -> str:
            return format(m[key], fmt) if key in m else "-"

        self.get_logger().info(
            f"update {self.core.updates}{limit} | episodes {int(m.get('buffer/results', 0))} "
            f"({show('time/episodes_per_s')}/s) | rollout success {show('rollout/success_rate')} | "
            f"eval success {show('eval/success_rate')} | kept groups {show('grpo/kept_group_fraction')} | "
            f"loss {show('loss/policy', '.4f')} | clip {show('grpo/clip_fraction', '.3f')} | "
            f"{show('time/update_s', '.1f')} s")

    def checkpoint(self) -> None:
        self.core.save_checkpoint()
        self.checkpointed = self.core.updates

    def finish(self, why: str) -> None:
        self.checkpoint()
        try:
            plotted = f", {plot_run(self.run_dir, self.run_dir / 'success.png').name}"
        except (FileNotFoundError, ValueError) as exc:  # no update yet: nothing to draw
            plotted = f" (no plot: {exc})"
        self.get_logger().info(f"{why}; checkpoint and metrics{plotted} in {self.run_dir}")
        rclpy.try_shutdown(context=self.context)

    def close(self) -> None:
        """Stop the worker; after a clean stop (Ctrl-C between updates) checkpoint the updates since the last
        checkpoint, which a resume would otherwise do again. One stopped mid-update is killed by the launcher
        before it ends (5 s + 5 s): the resume redoes that update and those before it since the checkpoint."""
        self.stop.set()
        if self.worker.is_alive() and threading.current_thread() is not self.worker:
            self.worker.join(timeout=60)
        if self.exit_status == 0 and not self.worker.is_alive() and self.core.updates > self.checkpointed:
            self.checkpoint()
            self.get_logger().info(f"stopped: checkpoint of update {self.core.updates} in {self.run_dir}")
        # The other ranks wait for the next update: tell them to end. Not after a failure or with an
        # update still running (they may be inside its collectives): then this process's exit
        # closes their connections, and torchrun stops them.
        if self.core.parallel is not None and self.exit_status == 0 and not self.worker.is_alive():
            self.core.parallel.stop()


def main(args: list[str] | None = None) -> int:
    rank = Rank.from_env()
    if rank is not None and rank.rank > 0:
        serve(rank)  # no ROS: rank 0's node sends the policy, each update's share and the stop signal
        return 0
    return run_node(Learner, args)
