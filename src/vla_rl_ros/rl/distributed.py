"""A data-parallel GRPO update over torch.distributed: rank 0 owns the batch, every rank a share of it.

Rank 0 is the whole learner (the ROS node: buffer, checkpoints, PolicyUpdate, metrics) and holds a
DataParallel; ranks > 0 run `serve`, a plain loop without ROS. For each update rank 0 scatters one
Share per rank (trajectory i to rank i % world_size, with every epoch's mini-batch order); each rank
runs GradientSteps on its share, and after each mini-batch's backward the gradients are summed over
the ranks. A rank weighs its trajectories by 1 / (the whole mini-batch's size), so the sum is the
single process's gradient; the clip and the AdamW step then run on the same gradient on every rank,
and the weights stay the same everywhere (the test compares them with a single process's).

Why an explicit all-reduce and not torch's DistributedDataParallel: DDP hooks a module's forward and
expects every rank to run the same number of backward passes per step, but a mini-batch may hold
none of a rank's trajectories (a rank with no gradient still joins the sum, with zeros), and the
policy is not called through one module forward (token_log_probs). FSDP is not offered: see
docs/architecture.md, "Distributed learner".

Objects (shares, results, the weights at start and after a resume) travel over a gloo group, as
CPU pickles; gradients go over the `backend` group: gloo on CPU, nccl on CUDA GPUs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.learner import GradientSteps, Share, ShareResult, TokenPolicy, release_freed_memory

BACKENDS = ("gloo", "nccl")
# How long a rank waits for the others in one collective. Ranks > 0 wait for rank 0's next update,
# which comes only when enough groups are ready (minutes on a real arm with an operator): the
# default 30 minutes would end a slow run. A dead rank 0 closes its connections and ends the
# others' waits at once; torchrun also stops them all when one fails.
WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class Rank:
    """Where this process sits in the learner's process group (torchrun's environment variables)."""

    rank: int
    world_size: int
    local_rank: int  # among the processes of this machine: its GPU

    @classmethod
    def from_env(cls) -> Rank | None:
        """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; None without them or for one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return None
        rank = int(os.environ["RANK"])
        return cls(rank, world_size, int(os.environ.get("LOCAL_RANK", rank)))


def default_backend(device: str) -> str:
    """nccl for CUDA devices, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: str, local_rank: int) -> str:
    """A rank's own device: the local_rank-th GPU for a CUDA device (torchrun's convention, one GPU per
    process; the device's index is ignored), the device itself otherwise."""
    if torch.device(device).type != "cuda":
        return device
    torch.cuda.set_device(local_rank)  # nccl's collectives run on the current device
    return f"cuda:{local_rank}"


@dataclass(frozen=True)
class WorkerSetup:
    """What ranks > 0 need from rank 0 to build their copy of the trainable policy."""

    make_policy: Callable[[str], TokenPolicy]  # device -> the policy with its trainable parameters
    device: str  # rank 0's device setting; each rank puts it on its own GPU (rank_device)
    config: GRPOConfig
    backend: str  # of the gradient all-reduce
    threads: int  # torch CPU threads; 0: torch's default


@dataclass
class State:
    """The trainable weights and the optimiser state, on the CPU: rank 0's, for every other rank."""

    params: list[torch.Tensor]
    optimizer: dict[str, Any]

    @classmethod
    def of(cls, steps: GradientSteps) -> State:
        return cls([p.detach().cpu() for p in steps.params], _to_cpu(steps.optimizer.state_dict()))

    def load_into(self, steps: GradientSteps) -> None:
        with torch.no_grad():
            for p, value in zip(steps.params, self.params, strict=True):
                p.copy_(value)
        steps.optimizer.load_state_dict(self.optimizer)  # moves the state to each parameter's device


class DataParallel:
    """Rank 0's side of the process group: starts it, sends the workers their setup, their state and
    each update's shares, and stops them."""

    def __init__(self, rank: Rank, setup: WorkerSetup) -> None:
        if rank.rank != 0:
            raise ValueError(f"DataParallel runs on rank 0; rank {rank.rank} runs serve()")
        if setup.backend not in BACKENDS:
            raise ValueError(f"backend {setup.backend!r}: one of {list(BACKENDS)}")
        self.world_size = rank.world_size
        _init(rank)
        _send([setup] * self.world_size)
        self.grads = _gradient_group(setup.backend)

    def sync_state(self, steps: GradientSteps) -> None:
        """Give every rank these weights and optimiser state (at start: a LoRA adapter's random
        initialisation differs by process; after a resume: the checkpoint's)."""
        _send([State.of(steps)] * self.world_size)

    def run(self, shares: list[Share], steps: GradientSteps) -> list[ShareResult]:
        """One update: scatter the shares, run rank 0's, gather every rank's result (in rank order)."""
        _send(shares)
        return _gather(steps.run(shares[0], self.reduce_grads))

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        all_reduce_grads(params, self.grads)

    def stop(self) -> None:
        """The stop signal: every worker leaves its loop; then the process group ends."""
        _send([None] * self.world_size)
        dist.destroy_process_group()


def serve(rank: Rank) -> None:
    """Ranks > 0: build the policy rank 0 describes, then run each update's share until the stop signal."""
    _init(rank)
    setup: WorkerSetup = _receive()
    grads = _gradient_group(setup.backend)
    if setup.threads:
        torch.set_num_threads(setup.threads)
    steps = GradientSteps(setup.make_policy(rank_device(setup.device, rank.local_rank)), setup.config)
    while (message := _receive()) is not None:
        if isinstance(message, State):
            message.load_into(steps)
            continue
        _gather(steps.run(message, lambda params: all_reduce_grads(params, grads)))
        release_freed_memory()
    dist.destroy_process_group()


def all_reduce_grads(params: list[torch.nn.Parameter], group: dist.ProcessGroup | None = None) -> None:
    """Sum the gradients over the ranks, in one flat buffer. A parameter that no rank gave a gradient
    keeps none, as in a single process (AdamW skips it: no step, no weight decay); one that some rank
    did gets the sum, a rank without one counting zeros."""
    had = [p.grad is not None for p in params]
    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
                     + [torch.tensor(had, dtype=params[0].dtype, device=params[0].device)])
    dist.all_reduce(flat, group=group)
    offset = 0
    for p, anyone_had in zip(params, flat[-len(params):].tolist(), strict=True):
        p.grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype) if anyone_had else None
        offset += p.numel()


def _init(rank: Rank) -> None:
    """The gloo group every rank joins first (MASTER_ADDR and MASTER_PORT from the environment)."""
    dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size, timeout=WAIT)


def _gradient_group(backend: str) -> dist.ProcessGroup | None:
    """gloo: the first group (None); nccl: a group of its own, created on every rank alike."""
    return None if backend == "gloo" else dist.new_group(backend=backend, timeout=WAIT)


def _send(objects: list[Any]) -> None:
    """Rank 0: objects[r] to rank r (r > 0); rank 0's own is not pickled."""
    dist.scatter_object_list([None], [None, *objects[1:]], src=0)


def _receive() -> Any:
    out: list[Any] = [None]
    dist.scatter_object_list(out, None, src=0)
    return out[0]


def _gather(result: ShareResult) -> list[ShareResult]:
    """Every rank's result on rank 0 (in rank order; its own as it is), nothing elsewhere."""
    if dist.get_rank() != 0:
        dist.gather_object(dataclasses.replace(result, logp_old=[lp.cpu() for lp in result.logp_old]), dst=0)
        return []
    results: list[Any] = [None] * dist.get_world_size()
    dist.gather_object(None, results, dst=0)
    results[0] = result
    return results


def _to_cpu(value: Any) -> Any:
    """A state dict's tensors on the CPU: a CUDA tensor pickled on one rank would come back on that
    rank's GPU in another process."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
