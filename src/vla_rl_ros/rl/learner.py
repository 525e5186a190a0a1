"""GRPOLearner: one GRPO update on a batch of kept groups, plus checkpoints that resume exactly.

Written to read top to bottom like CleanRL's ppo.py: advantages per group, old log-probs
recomputed by the learner (no grad) at the start of the update, then `epochs` passes of shuffled
mini-batches of trajectories, each one clipped AdamW step. GRPOLearner draws the batch and its
mini-batch orders and writes the metrics; GradientSteps runs the steps on a Share of the batch: all
of it in one process, a rank's part in a distributed learner (rl/distributed.py), whose all-reduced
gradients make each step the single process's. Tensors over the update's trajectories are prefixed
b_, over a rank's share s_, over a mini-batch mb_. Shapes: B trajectories, N chunks of a trajectory,
C chunk size, A action dim, T = N*C*A tokens of a trajectory (padded to the longest).

The policy is any object with
    token_log_probs(images (n,H,W,3) uint8 ndarray, state (n,P) float32 ndarray, instructions
        list[str] (n), token_ids (n, C*A) int64 tensor, *, temperature) -> (n, C*A) tensor
    trainable_parameters() -> iterable of torch.nn.Parameter
    save(path) -> None
where n counts chunks: the chunks of several trajectories go through one forward pass. Each trajectory
is scored at the temperature it was sampled at (TrajectoryRecord.temperature), so the ratio compares
like with like, as veRL does; trajectories of different temperatures go through separate passes.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pad_sequence

from vla_rl_ros.data.atomic import write_json
from vla_rl_ros.rl.buffer import BUCKETS, EpisodeBuffer, Group
from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.loss import clipped_policy_loss, group_advantages
from vla_rl_ros.rl.metrics import MetricsWriter
from vla_rl_ros.rl.records import TrajectoryRecord

if TYPE_CHECKING:
    from vla_rl_ros.rl.distributed import DataParallel, State

CHECKPOINTS_DIR = "checkpoints"
POLICIES_DIR = "policies"
BUFFER_DIR = "buffer"
LATEST_FILE = "latest"  # holds the name of the newest complete checkpoint
POLICY_SUBDIR = "policy"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
LEARNER_FILE = "learner.json"
KEEP_CHECKPOINTS = 3  # older ones are deleted; a policy node may still be loading the previous one


class TokenPolicy(Protocol):
    """What the learner needs of a policy (VLAPolicy satisfies it)."""

    def token_log_probs(self, images: np.ndarray, state: np.ndarray, instructions: list[str],
                        token_ids: torch.Tensor, *, temperature: float) -> torch.Tensor: ...

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter]: ...

    def sequence_length(self, instruction: str) -> int: ...

    def save(self, path: Path | str) -> None: ...


def trainable(policy: TokenPolicy) -> list[torch.nn.Parameter]:
    """The parameters an update trains (and a checkpoint and a rank's start-up sync carry)."""
    return [p for p in policy.trainable_parameters() if p.requires_grad]


class GRPOLearner:
    """Owns the optimiser, the episode buffer (journalled under run_dir/buffer) and the metrics CSV.

    Typical loop (the learner node does this from its callbacks):
        learner.buffer.add_trajectory(...); learner.buffer.add_result(...)
        metrics = learner.maybe_update()          # None until groups_per_update groups are ready
        if metrics: path = learner.publish_policy()  # -> PolicyUpdate(version, path)
        every K updates: learner.save_checkpoint()
    """

    def __init__(self, policy: TokenPolicy, config: GRPOConfig, run_dir: Path | str, *,
                 seed: int = 0, tensorboard: bool = True, parallel: DataParallel | None = None) -> None:
        self.policy = policy
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lost_versions: list[str] = []  # published policies of updates a resume lost (resume)
        # None: this process is the whole learner. Otherwise rank 0 of a process group whose other
        # ranks run rl.distributed.serve; they start from these weights. A sharded one steps on a
        # sharded copy, and `policy` stays whole: the weights are gathered into it to be saved.
        self.parallel = parallel
        self.steps = GradientSteps(policy, config) if parallel is None else parallel.prepare(policy)
        self.params = trainable(policy)  # of `policy`
        self.optimizer = self.steps.optimizer
        self.generator = torch.Generator().manual_seed(seed)  # mini-batch shuffling
        self.buffer = EpisodeBuffer(config, self.run_dir / BUFFER_DIR)
        self.metrics = MetricsWriter(self.run_dir, tensorboard=tensorboard)
        self.updates = 0  # completed updates
        self.policy_version = 0  # the weights' version; +1 per update
        self.optimizer_steps = 0
        self.trajectories_trained = 0
        self._mark(self.buffer.accounting())

    # --- the update ----------------------------------------------------------------------------

    def maybe_update(self) -> dict[str, float] | None:
        """Run one update if the buffer holds groups_per_update kept groups; log and return its metrics."""
        groups = self.buffer.pop_batch(self.updates + 1)
        if groups is None:
            return None
        return self.update(groups)

    def update(self, groups: Sequence[Group]) -> dict[str, float]:
        """One GRPO update on these groups; bumps policy_version and logs a CSV row."""
        start = time.perf_counter()
        cfg = self.config
        b_traj = [e.trajectory for g in groups for e in g.episodes]
        B = len(b_traj)
        # The batch, its orders and the metrics live on the CPU; each share's tensors go to the policy's device.
        b_adv = torch.cat([group_advantages(torch.from_numpy(g.rewards), cfg.adv_eps) for g in groups])  # (B,)
        # Every epoch's order is drawn here, on rank 0 only: all ranks then step through the same
        # mini-batches a single process would.
        orders = [torch.randperm(B, generator=self.generator, device="cpu").tolist() for _ in range(cfg.epochs)]
        if self.parallel is None:
            shares = split_batch(b_traj, b_adv, orders, 1)
            results = [self.steps.run(shares[0])]
        else:
            shares = split_batch(b_traj, b_adv, orders, self.parallel.world_size)
            results = self.parallel.run(shares, self.steps)
        b_logp_old: list[torch.Tensor] = [torch.empty(0)] * B  # B x (T_b,), back in batch order
        for share, result in zip(shares, results, strict=True):
            for i, logp in zip(share.indices, result.logp_old, strict=True):
                b_logp_old[i] = logp
        losses = [sum(step) for step in zip(*(r.losses for r in results), strict=True)]
        totals = {key: sum(r.totals.get(key, 0.0) for r in results)
                  for key in set().union(*(r.totals for r in results))}
        minimum = min(r.ratio_min for r in results)
        maximum = max(r.ratio_max for r in results)
        grad_norms = results[0].grad_norms  # of the all-reduced gradient: the same on every rank
        finite = [g for g in grad_norms if math.isfinite(g)]
        self.optimizer_steps += len(finite)

        self.updates += 1
        self.policy_version += 1
        self.trajectories_trained += B
        self.buffer.set_policy_version(self.policy_version)
        tokens = totals["tokens"]
        b_tokens = torch.cat(b_logp_old)
        # chunk log-probs the policy node reported vs the learner's: numeric drift or staleness
        b_chunk_gap = torch.cat([lp.reshape(t.num_chunks, -1).sum(1) - torch.from_numpy(t.log_probs)
                                 for lp, t in zip(b_logp_old, b_traj, strict=True)])  # (sum N,)
        metrics = {
            "loss/policy": float(np.mean(losses)),
            "grpo/clip_fraction": totals["clip_fraction"] / tokens,
            "grpo/clip_fraction_low": totals["clip_fraction_low"] / tokens,
            "grpo/clip_fraction_high": totals["clip_fraction_high"] / tokens,
            "grpo/ratio_mean": totals["ratio_mean"] / tokens,
            "grpo/ratio_min": minimum,
            "grpo/ratio_max": maximum,
            "grpo/approx_kl": totals["approx_kl"] / tokens,
            "grpo/grad_norm": float(np.mean(finite)) if finite else float("nan"),
            "grpo/skipped_steps": float(len(grad_norms) - len(finite)),  # non-finite gradients
            "grpo/advantage_abs_mean": float(b_adv.abs().mean()),
            "grpo/behaviour_logp_abs_diff": float(b_chunk_gap.abs().mean()),
            "grpo/trajectories": float(B),
            "grpo/groups": float(len(groups)),
            "grpo/optimizer_steps": float(len(finite)),
            # Monte-Carlo estimate from the sampled tokens: E[-log p] under the sampling policy,
            # which is its entropy at the rollout temperature (nats per token).
            "policy/entropy": float(-b_tokens.mean()),
            "policy/version": float(self.policy_version),
            "time/update_s": time.perf_counter() - start,
        }
        metrics.update(self._progress_metrics())
        self.metrics.log(self.updates, metrics)
        release_freed_memory()
        return metrics

    def _progress_metrics(self) -> dict[str, float]:
        """Rollout/eval success since the last update, kept-group fraction, episodes per second."""
        account = self.buffer.accounting()
        last_time, last_results, last_groups = self._last_mark
        delta = {k: v - last_groups.get(k, 0) for k, v in account.items() if k.startswith("groups/")}
        completed = sum(delta.values())
        out = self.buffer.drain_outcomes()
        if completed:
            out["grpo/kept_group_fraction"] = delta.get("groups/kept", 0) / completed
        out["time/episodes_per_s"] = (account["results"] - last_results) / max(time.monotonic() - last_time, 1e-9)
        for key in ("results", *BUCKETS, "pending"):
            out[f"buffer/{key}"] = float(account[key])
        self._mark(account)
        return out

    def _mark(self, account: dict[str, int]) -> None:
        """Remember time, results and group counts: the next update reports rates since now."""
        groups = {k: v for k, v in account.items() if k.startswith("groups/")}
        self._last_mark = (time.monotonic(), account["results"], groups)

    # --- publishing and checkpoints ------------------------------------------------------------

    def publish_policy(self) -> Path:
        """Save the current weights for the policy nodes as run_dir/policies/v<version>; returns it.
        Written under a temporary name and renamed, so a reader never sees half a checkpoint."""
        path = self.run_dir / POLICIES_DIR / f"v{self.policy_version:06d}"
        self._gather(optimizer=False)
        _atomic_dir(path, self.policy.save)
        _prune(path.parent, "v", KEEP_CHECKPOINTS)
        return path

    def save_checkpoint(self) -> Path:
        """Everything resume needs: policy weights (policy.save and the trainable tensors), optimiser
        state, counters, RNG states; then the buffer forgets the episodes this checkpoint covers."""
        root = self.run_dir / CHECKPOINTS_DIR
        path = root / f"update_{self.updates:06d}"
        gathered = self._gather(optimizer=True)
        optimizer = self.optimizer.state_dict() if gathered is None else gathered.optimizer

        def write(tmp: Path) -> None:
            self.policy.save(tmp / POLICY_SUBDIR)
            save_file({f"param_{i:05d}": p.detach().contiguous() for i, p in enumerate(self.params)},
                      str(tmp / TRAINABLE_FILE))
            torch.save({"optimizer": optimizer, "torch_rng": torch.get_rng_state(),
                        "generator": self.generator.get_state()}, tmp / OPTIMIZER_FILE)
            write_json(tmp / LEARNER_FILE, {
                "updates": self.updates, "policy_version": self.policy_version,
                "optimizer_steps": self.optimizer_steps, "trajectories_trained": self.trajectories_trained,
                "config": self.config.to_dict(), "buffer": self.buffer.accounting()})

        _atomic_dir(path, write)
        os.sync()  # the checkpoint's files reach the disk before `latest` points at them
        write_json(root / LATEST_FILE, {"checkpoint": path.name})
        self.buffer.commit(self.updates)
        _prune(root, "update_", KEEP_CHECKPOINTS)
        return path

    def resume(self, path: Path | str | None = None) -> Path | None:
        """Restore weights, optimiser, counters and RNG from a checkpoint directory (default: the run's
        latest) and put back in the queue the groups of updates the checkpoint does not cover. A run
        that stopped before its first checkpoint keeps the initial weights and requeues every group;
        returns None then.

        Updates after the checkpoint are lost, so the versions they published will be numbered again
        for different weights (PolicyUpdate's digest tells them apart): their folders are deleted
        (`lost_versions` names them; pruning would otherwise keep them as the newest and delete the
        restored one). Call publish_policy() after resuming, or when versions were lost, so that the
        policy nodes act with the restored weights. Episodes from those lost versions
        count as fresh (their version is ahead of the learner's), none is dropped. Their rows in
        metrics.csv are dropped: the updates done again log them anew."""
        if path is None:
            path = latest_checkpoint(self.run_dir)
            if path is None:
                self._restart(0)
                return None
        path = Path(path)
        if not (path / LEARNER_FILE).exists():
            raise FileNotFoundError(f"no learner checkpoint at {path}; pass a "
                                    f"{CHECKPOINTS_DIR}/update_NNNNNN directory of a run")
        state = json.loads((path / LEARNER_FILE).read_text())
        tensors = load_file(str(path / TRAINABLE_FILE))
        if len(tensors) != len(self.params):
            raise ValueError(f"{path}: checkpoint has {len(tensors)} trainable tensors, the policy has "
                             f"{len(self.params)}; resume with the same policy config (LoRA rank, targets)")
        with torch.no_grad():
            for i, p in enumerate(self.params):
                saved = tensors[f"param_{i:05d}"]
                if saved.shape != p.shape:
                    raise ValueError(f"{path}: trainable tensor {i} is {tuple(saved.shape)}, the policy's "
                                     f"is {tuple(p.shape)}; resume with the same policy config")
                p.copy_(saved)
        extra = torch.load(path / OPTIMIZER_FILE, weights_only=True)  # no pickle execution
        if self.parallel is None:
            self.optimizer.load_state_dict(extra["optimizer"])
        else:  # every rank steps on from the checkpoint's weights and optimiser state
            self.parallel.load_state([p.detach().cpu() for p in self.params], extra["optimizer"], self.steps)
        torch.set_rng_state(extra["torch_rng"])
        self.generator.set_state(extra["generator"])
        self.updates = state["updates"]
        self.policy_version = state["policy_version"]
        self.optimizer_steps = state["optimizer_steps"]
        self.trajectories_trained = state["trajectories_trained"]
        self._restart(self.updates)
        return path

    def _gather(self, optimizer: bool) -> State | None:
        """A sharded learner: the whole trained weights (and optimiser state) gathered from every rank,
        the weights copied into `policy`. None where this process's weights are whole already."""
        if self.parallel is None or not self.parallel.sharded:
            return None
        state = self.parallel.gather_state(self.steps, optimizer)
        with torch.no_grad():
            for p, value in zip(self.params, state.params, strict=True):
                p.copy_(value)
        return state

    def _restart(self, after_update: int) -> None:
        self.buffer.rollback(after_update)
        self.metrics.truncate(after_update)
        self.buffer.set_policy_version(self.policy_version)
        self._mark(self.buffer.accounting())
        self.lost_versions = _remove_versions_after(self.run_dir / POLICIES_DIR, self.policy_version)


@dataclass
class Share:
    """One rank's part of an update: the batch's trajectories it holds (their positions in the batch
    and advantages) and every epoch's order of the whole batch, which each rank follows so that the
    mini-batches are those of a single process."""

    indices: list[int]  # positions in the update's batch, ascending
    trajectories: list[TrajectoryRecord]
    advantages: torch.Tensor  # (len(indices),)
    orders: list[list[int]]  # per epoch, a permutation of range(B)


@dataclass
class ShareResult:
    """What a rank reports of its share after the update; rank 0 sums them into the metrics."""

    logp_old: list[torch.Tensor]  # per trajectory of the share, (T_b,), on the CPU
    losses: list[float]  # per optimiser step, this share's part of the mini-batch loss
    grad_norms: list[float]  # per optimiser step, of the gradient summed over ranks
    totals: dict[str, float]  # token-weighted sums of the loss statistics, and "tokens"
    ratio_min: float
    ratio_max: float


def split_batch(trajectories: list[TrajectoryRecord], advantages: torch.Tensor, orders: list[list[int]],
                world_size: int) -> list[Share]:
    """Deal trajectory i to rank i % world_size: a group's rollouts, next to each other in the batch,
    spread over the ranks. One rank gets the whole batch."""
    return [Share(list(range(rank, len(trajectories), world_size)), trajectories[rank::world_size],
                  advantages[rank::world_size], orders) for rank in range(world_size)]


class GradientSteps:
    """The optimiser and the part of an update every rank runs on its share: old log-probs (no grad),
    then `epochs` passes of clipped mini-batch steps. Each step's loss is the mean over the whole
    mini-batch, so a rank weighs its trajectories by 1 / (mini-batch size), and `reduce_grads` (an
    all-reduce sum over ranks; none in a single process) makes every rank's gradient the single
    process's before the clip and the step: the weights stay the same on every rank."""

    def __init__(self, policy: TokenPolicy, config: GRPOConfig, *,
                 reduce_grads: Callable[[list[torch.nn.Parameter]], None] | None = None, loss_scale: float = 1.0,
                 lockstep: Callable[[int], int] | None = None) -> None:
        self.policy = policy
        self.config = config
        # A replicated learner (rl/distributed.py): sums each mini-batch's gradients over the ranks.
        self.reduce_grads = reduce_grads
        # A sharded learner (rl/distributed.py): its backward averages the gradients over the ranks, so
        # each rank scales its loss by the number of ranks to make that average the sum.
        self.loss_scale = loss_scale
        # A sharded learner: every rank must run as many forward passes as the others (each gathers the
        # weights from all of them). local count -> the largest over the ranks; a rank short of it
        # runs one-chunk passes of its first trajectory with zero weight.
        self.lockstep = lockstep
        self.params = trainable(policy)
        if not self.params:
            raise ValueError("policy.trainable_parameters() has no parameter that requires grad; "
                             "enable LoRA or full fine-tuning in the policy config")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        # The policy measures what its model adds to a chunk's sequence with a forward pass: here,
        # where every rank of a sharded learner builds its steps at once (a forward pass is a collective).
        policy.sequence_length("")

    def run(self, share: Share) -> ShareResult:
        cfg = self.config
        s_traj = share.trajectories
        local = {i: k for k, i in enumerate(share.indices)}  # batch position -> position in the share
        device = self.params[0].device
        s_adv = share.advantages.to(device)  # (n,)
        # Old log-probs from the current weights (the policy node's are for reference only: another
        # process, possibly another numeric path). The ratio starts at exactly 1.
        with torch.no_grad():
            pieces_old: list[list[torch.Tensor]] = [[] for _ in s_traj]  # n x its pieces' (T_piece,), in order
            for part in self._passes(range(len(s_traj)), s_traj):
                for piece, logp in zip(part, self._forward(part, s_traj), strict=True):
                    if not piece.filler:
                        pieces_old[piece.index].append(logp)
            s_logp_old = [torch.cat(pieces) for pieces in pieces_old]  # n x (T_b,)

        totals: dict[str, float] = {}
        minimum, maximum = math.inf, -math.inf
        losses, grad_norms = [], []
        for b_inds in share.orders:
            for mb_start in range(0, len(b_inds), cfg.minibatch_size):
                mb_inds = b_inds[mb_start:mb_start + cfg.minibatch_size]
                self.optimizer.zero_grad(set_to_none=True)
                mb_loss = 0.0
                # Gradient accumulation over forward passes of at most forward_tokens positions. The
                # loss is a mean over trajectories of each one's token mean: a piece adds its token sum
                # over its whole trajectory's count, weighed 1 / len(mb_inds).
                for part in self._passes([local[i] for i in mb_inds if i in local], s_traj):
                    logp_new = self._forward(part, s_traj)  # b x (T_piece,)
                    if part[0].filler:  # the lockstep's filler: a gradient of zeros
                        (logp_new[0].sum() * 0.0).backward()
                        continue
                    mb_logp_new, mask = _pad(logp_new)  # (b, T)
                    mb_logp_old, _ = _pad([s_logp_old[p.index][p.tokens(s_traj)] for p in part])
                    whole = torch.tensor([len(s_logp_old[p.index]) for p in part], device=device)
                    loss, stats = clipped_policy_loss(mb_logp_new, mb_logp_old, s_adv[[p.index for p in part]], mask,
                                                      clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                                      trajectory_tokens=whole)
                    (loss * (len(part) / len(mb_inds) * self.loss_scale)).backward()
                    mb_loss += loss.item() * len(part) / len(mb_inds)
                    for key in ("clip_fraction", "clip_fraction_low", "clip_fraction_high",
                                "ratio_mean", "approx_kl"):
                        totals[key] = totals.get(key, 0.0) + stats[key] * stats["tokens"]
                    totals["tokens"] = totals.get("tokens", 0.0) + stats["tokens"]
                    minimum, maximum = min(minimum, stats["ratio_min"]), max(maximum, stats["ratio_max"])
                if self.reduce_grads is not None:
                    self.reduce_grads(self.params)
                grad_norms.append(_item(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)))
                if math.isfinite(grad_norms[-1]):  # the same on every rank: all step, or none
                    self.optimizer.step()  # a non-finite gradient would make every weight NaN: skipped
                losses.append(mb_loss)
        return ShareResult([lp.cpu() for lp in s_logp_old], losses, grad_norms, totals, minimum, maximum)

    def _passes(self, indices: Iterable[int], trajectories: list[TrajectoryRecord]) -> list[list[Piece]]:
        """Trajectory indices -> the forward passes that score them, each a list of pieces (runs of a
        trajectory's chunks) of one sampling temperature (each is scored at its own, as veRL does: one
        temperature in a normal run, where every policy node samples at the same), whose chunks times
        the longest chunk's sequence stay within forward_tokens (a chunk longer than that goes alone).
        In lockstep, one-filler passes pad the list to the ranks' longest."""
        budget = self.config.forward_tokens
        parts: list[list[Piece]] = []
        indices = list(indices)
        for temperature in sorted({trajectories[i].temperature for i in indices}):
            parts.append([])
            chunks = longest = 0
            for i in (i for i in indices if trajectories[i].temperature == temperature):
                length = self.policy.sequence_length(trajectories[i].instruction)
                start, end = 0, trajectories[i].num_chunks
                while start < end:
                    room = budget // max(longest, length) - chunks
                    if room < 1 and chunks:
                        parts.append([])
                        chunks = longest = 0
                        continue
                    stop = min(end, start + max(room, 1))
                    parts[-1].append(Piece(i, start, stop))
                    chunks, longest, start = chunks + stop - start, max(longest, length), stop
        if self.lockstep is not None:
            parts += [[FILLER] for _ in range(self.lockstep(len(parts)) - len(parts))]
        return parts

    def _forward(self, pieces: list[Piece], trajectories: list[TrajectoryRecord]) -> list[torch.Tensor]:
        """All chunks of these pieces (of one temperature) in one forward pass -> per piece (T_piece,)
        log-probs."""
        chosen = [(trajectories[p.index], slice(p.start, p.stop)) for p in pieces]
        temperature = chosen[0][0].temperature
        images = np.concatenate([t.images[s] for t, s in chosen])  # (sum N, H, W, 3)
        state = np.concatenate([t.state[s] for t, s in chosen])  # (sum N, P)
        instructions = [t.instruction for p in pieces for t in [trajectories[p.index]] * (p.stop - p.start)]
        token_ids = torch.from_numpy(np.concatenate([t.token_ids[s] for t, s in chosen]))  # (sum N, C*A)
        logp = self.policy.token_log_probs(images, state, instructions, token_ids,
                                           temperature=temperature).float()  # (sum N, C*A)
        if logp.shape != token_ids.shape:
            raise ValueError(f"policy.token_log_probs returned {tuple(logp.shape)}, expected "
                             f"{tuple(token_ids.shape)} (one log-prob per sampled token)")
        per_piece = torch.split(logp, [p.stop - p.start for p in pieces])  # b x (N_b, C*A)
        return [lp.reshape(-1) for lp in per_piece]  # b x (T_piece,)


@dataclass(frozen=True)
class Piece:
    """Chunks [start, stop) of the share's trajectory `index`: what a forward pass scores."""

    index: int
    start: int
    stop: int
    filler: bool = False  # a lockstep pass's: scored, weighed 0, its log-probs unused

    def tokens(self, trajectories: list[TrajectoryRecord]) -> slice:
        """This piece's positions in its trajectory's flat (T_b,) log-probs."""
        per_chunk = trajectories[self.index].token_ids.shape[1]
        return slice(self.start * per_chunk, self.stop * per_chunk)


# The lockstep's filler: the first chunk of a rank's first trajectory, the cheapest pass that joins
# the other ranks' gathers.
FILLER = Piece(0, 0, 1, filler=True)


def _item(value: torch.Tensor) -> float:
    """A scalar's value; a sharded learner's gradient norm is a DTensor, the same on every rank."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (the process's own symbols)


def release_freed_memory() -> None:
    """Give the heap memory an update freed back to the OS. glibc keeps it for reuse, but activations of
    a different size every update fragment it: without this a learner's RSS grew by about 250 MB per
    update (1.4 -> 3.0 GB in 8 updates, flat at 0.45-0.49 GB with it; 3.0 -> 3.8 GB over a 50-minute
    train_sim run). Other C libraries have no malloc_trim: nothing to do there."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    latest = Path(run_dir) / CHECKPOINTS_DIR / LATEST_FILE
    if not latest.exists():
        return None
    return latest.parent / json.loads(latest.read_text())["checkpoint"]


def _pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """b x (T_b,) -> values (b, T) zero-padded, mask (b, T) bool."""
    values = pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([len(s) for s in seqs], device=values.device)
    mask = torch.arange(values.shape[1], device=values.device).unsqueeze(0) < lengths.unsqueeze(1)
    return values, mask


def _atomic_dir(path: Path, write) -> None:
    """Fill a temporary sibling directory, then rename it to `path` (replacing an old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_versions_after(folder: Path, version: int) -> list[str]:
    """Delete the published policies newer than `version` (a lost run's); returns their names."""
    lost = sorted(p for p in folder.glob("v*") if p.is_dir() and p.name[1:].isdigit() and int(p.name[1:]) > version)
    for path in lost:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in lost]


def _prune(folder: Path, prefix: str, keep: int) -> None:
    for old in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
