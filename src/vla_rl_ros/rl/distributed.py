"""A data-parallel GRPO update over torch.distributed: rank 0 owns the batch, every rank a share of it.

Rank 0 is the whole learner (the ROS node: buffer, checkpoints, PolicyUpdate, metrics) and holds a
DataParallel; ranks > 0 run `serve`, a plain loop without ROS. For each update rank 0 scatters one
Share per rank (trajectory i to rank i % world_size, with every epoch's mini-batch order); each rank
runs GradientSteps on its share, and each mini-batch's gradients are summed over the ranks. A rank
weighs its trajectories by 1 / (the whole mini-batch's size), so the sum is the single process's
gradient; the clip and the AdamW step then run on the same gradient on every rank (the test compares
the weights with a single process's).

Two ways to hold the model, the same update:
- replicated (default): every rank holds the whole model; after each mini-batch's backward the
  gradients are all-reduced in one flat buffer (`all_reduce_grads`).
- sharded (`fsdp`): torch's FSDP2 (`fully_shard`) splits the weights, gradients and optimiser state
  over the ranks, for a model that does not fit one device: each transformer block (the model's
  `_no_split_modules`, as transformers' own FSDP wrapping picks them) gathers its weights for each
  forward and backward and reduce-scatters its gradients. Every rank must then run as many forward
  passes as the others (a rank short of them runs zero-weighted one-chunk passes), and rank 0 keeps a
  whole copy of the policy on the CPU, into which it gathers the trained weights to publish a policy
  and (with the optimiser state) to write a checkpoint; resuming loads a checkpoint's whole tensors
  into every rank's shards. Checkpoints are the same files either way.

Why not torch's DistributedDataParallel: DDP hooks a module's forward and expects every rank to run
the same number of backward passes per step, but a mini-batch may hold none of a rank's trajectories
and the policy is not called through one module forward (token_log_probs); the explicit all-reduce
needs neither.

Objects (shares, results, the weights at start and after a resume) travel over a gloo group, as
CPU pickles; gradients go over the `backend` group: gloo on CPU, nccl on CUDA GPUs.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.learner import GradientSteps, Share, ShareResult, TokenPolicy, release_freed_memory, trainable

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
    backend: str  # of the gradient reduction
    threads: int  # torch CPU threads; 0: torch's default
    fsdp: bool = False  # shard the weights, gradients and optimiser state over the ranks


@dataclass
class State:
    """Whole trainable weights and, unless None, the optimiser state, on the CPU: what rank 0 sends the
    other ranks and writes to a checkpoint."""

    params: list[torch.Tensor]
    optimizer: dict[str, Any] | None

    @classmethod
    def of(cls, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer | None) -> State:
        """A collective where the weights are sharded: every rank calls it, in the same order."""
        return cls([_whole(p) for p in params], None if optimizer is None else _whole(optimizer.state_dict()))

    def load_into(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Copy into these parameters (a sharded one takes its own shard: no communication) and optimiser."""
        with torch.no_grad():
            for p, value in zip(params, self.params, strict=True):
                p.copy_(_like(value, p))
        if optimizer is not None and self.optimizer is not None:
            state = {i: {k: _like(v, params[i]) if v.shape == params[i].shape else v for k, v in entry.items()}
                     for i, entry in self.optimizer["state"].items()}
            optimizer.load_state_dict({**self.optimizer, "state": state})  # moves it to each parameter's device


@dataclass(frozen=True)
class Gather:
    """Rank 0's message: every rank joins in gathering the whole weights (and the optimiser state)."""

    optimizer: bool


class DataParallel:
    """Rank 0's side of the process group: starts it, sends the workers their setup, their state and
    each update's shares, and stops them."""

    def __init__(self, rank: Rank, setup: WorkerSetup) -> None:
        if rank.rank != 0:
            raise ValueError(f"DataParallel runs on rank 0; rank {rank.rank} runs serve()")
        if setup.backend not in BACKENDS:
            raise ValueError(f"backend {setup.backend!r}: one of {list(BACKENDS)}")
        self.world_size = rank.world_size
        self.setup = setup
        _init(rank)
        _send([setup] * self.world_size)
        self.grads = _gradient_group(setup.backend)

    @property
    def sharded(self) -> bool:
        return self.setup.fsdp

    def prepare(self, policy: TokenPolicy) -> GradientSteps:
        """Rank 0's GradientSteps. Every rank starts from these weights (a LoRA adapter's random
        initialisation differs by process); sharded, the steps run on a sharded copy and `policy` stays
        whole (on the CPU), to be saved."""
        _send([State.of(trainable(policy), None)] * self.world_size)
        return _steps(copy.deepcopy(policy) if self.sharded else policy, self.setup, self.grads)

    def gather_state(self, steps: GradientSteps, optimizer: bool) -> State:
        """The whole weights (and optimiser state), gathered from every rank's shards."""
        _send([Gather(optimizer)] * self.world_size)
        return State.of(steps.params, steps.optimizer if optimizer else None)

    def load_state(self, params: list[torch.Tensor], optimizer: dict[str, Any], steps: GradientSteps) -> None:
        """Every rank, this one too, steps on from these whole weights and optimiser state (a resume)."""
        state = State(params, optimizer)
        _send([state] * self.world_size)
        state.load_into(steps.params, steps.optimizer)

    def run(self, shares: list[Share], steps: GradientSteps) -> list[ShareResult]:
        """One update: scatter the shares, run rank 0's, gather every rank's result (in rank order)."""
        if self.sharded and not all(share.indices for share in shares):
            raise ValueError(f"a sharded update needs a trajectory on every rank: "
                             f"{sum(len(share.indices) for share in shares)} trajectories on {self.world_size} ranks")
        _send(shares)
        return _gather(steps.run(shares[0]))

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
    device = rank_device(setup.device, rank.local_rank)
    policy = setup.make_policy("cpu" if setup.fsdp else device)  # sharding moves each shard to its device
    start: State = _receive()
    start.load_into(trainable(policy))
    steps = _steps(policy, setup, grads)
    while (message := _receive()) is not None:
        if isinstance(message, State):
            message.load_into(steps.params, steps.optimizer)
        elif isinstance(message, Gather):
            State.of(steps.params, steps.optimizer if message.optimizer else None)
        else:
            _gather(steps.run(message))
            release_freed_memory()
    dist.destroy_process_group()


def shard(policy: TokenPolicy, group: dist.ProcessGroup, device: str) -> None:
    """FSDP2 over the ranks of `group`: each transformer block (the classes in
    the model's `_no_split_modules`) a unit of its own, bottom-up, then the rest of the model. Moves
    each rank's shards to `device`'s type (the rank's current GPU on CUDA)."""
    mesh = DeviceMesh.from_group(group, torch.device(device).type)
    model = policy.model
    blocks = set(getattr(policy.base_model, "_no_split_modules", None) or ())
    for module in reversed(list(model.modules())):
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _steps(policy: TokenPolicy, setup: WorkerSetup, grads: dist.ProcessGroup) -> GradientSteps:
    """Every rank's GradientSteps: on the whole policy with its gradients all-reduced, or sharded with its
    losses scaled to a sum (the backward averages over the ranks) and its forward passes in lockstep."""
    if not setup.fsdp:
        return GradientSteps(policy, setup.config, reduce_grads=functools.partial(all_reduce_grads, group=grads))
    shard(policy, grads, setup.device)
    return GradientSteps(policy, setup.config, loss_scale=dist.get_world_size(), lockstep=_most)


def _most(count: int) -> int:
    """The largest count over the ranks, over the first (gloo) group: a CPU tensor, which nccl refuses."""
    value = torch.tensor([count], device="cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value)


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


def _gradient_group(backend: str) -> dist.ProcessGroup:
    """The group of the gradients and of FSDP's gathers: one of its own, created on every rank alike, so
    that the first group carries CPU objects only (rank 0's messages, the lockstep's counts) and nothing
    but torch's registry refers to it.
    Then `destroy_process_group` frees it at once and joins its gloo threads; a thread still freeing the
    stop signal's scatter (its tensors made in Python: freeing them takes the GIL) as the interpreter
    exits aborts the process, which happened while FSDP's mesh kept the first group alive."""
    return dist.new_group(backend=backend, timeout=WAIT)


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
        dist.gather_object(result, dst=0)
        return []
    results: list[Any] = [None] * dist.get_world_size()
    dist.gather_object(None, results, dst=0)
    results[0] = result
    return results


def _whole(value: Any) -> Any:
    """Tensors of a state (a parameter, a state dict) whole and on the CPU, detached: a sharded tensor
    gathered from every rank (a collective), a CUDA one moved (pickled, it would come back on that
    rank's GPU in another process)."""
    if isinstance(value, DTensor):
        value = value.full_tensor()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor as `param` holds it: this rank's shard of it where the parameter is sharded."""
    if isinstance(param, DTensor):
        return distribute_tensor(value.detach(), param.device_mesh, param.placements, src_data_rank=None)
    return value
