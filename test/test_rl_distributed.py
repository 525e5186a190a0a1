"""The distributed learner: 2 CPU ranks over gloo, the model replicated or sharded (FSDP2), update the
tiny VLA as one process does."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from test_rl_vla import CFG, INSTRUCTIONS, make_policy, rollouts
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from vla_rl_ros.policy import VLAPolicy
from vla_rl_ros.rl import GRPOConfig, GRPOLearner
from vla_rl_ros.rl.distributed import DataParallel, Rank, WorkerSetup, serve
from vla_rl_ros.rl.learner import split_batch

WORLD = 2
# float32 all the way. The ranks sum each gradient in another order than one process (each rank's
# share, then the ranks), which changes its last bits; AdamW divides each gradient by its own running
# magnitude, so the weights differ by about lr x 1e-7 relative: at most 4.5e-8 absolute measured here,
# where every tensor moves by 0.01-0.02. 1e-6 is 20 times the measured difference and 1/3000 of one
# step (lr 3e-3); a rank weighing its share by its local mean instead of the mini-batch's moves weights
# by 0.016-0.024, a missed sync or another mini-batch order by a whole step.
ATOL, RTOL = 1e-6, 1e-5
SPAWN_TIMEOUT_S = 120  # both ranks, start-up (torch, transformers) included; about 15 s on 2 idle cores
METRICS = ("loss/policy", "grpo/clip_fraction", "grpo/approx_kl", "grpo/ratio_mean", "grpo/grad_norm",
           "policy/entropy", "grpo/advantage_abs_mean", "grpo/optimizer_steps")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_policy(device: str) -> VLAPolicy:
    """The tiny VLA as a rank > 0 builds it: rank 0's initial weights reach it only through the sync."""
    assert device == "cpu"
    return make_policy()


def starting_policy() -> VLAPolicy:
    """Rank 0's and the single process's policy: the tiny VLA, its LoRA weights moved off the
    initialisation that a worker's make_policy gives, so the test sees the start-up sync at work."""
    policy = make_policy()
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.01)
    return policy


def train(learner: GRPOLearner, updates: int) -> list[dict[str, float]]:
    """`updates` updates, a checkpoint before the last; then the weights published (a sharded learner
    gathers them into rank 0's whole policy)."""
    metrics = []
    for u in range(updates):
        if u == updates - 1:
            learner.save_checkpoint()
        metrics.append(learner.update(learner.buffer.pop_batch(u + 1)))
    learner.publish_policy()
    return metrics


def rank_main(rank: int, port: int, out: Path, cfg: GRPOConfig, groups: int, size: int, updates: int,
              fsdp: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    where = Rank(rank, WORLD, rank)
    if rank > 0:
        serve(where)
        return
    policy = starting_policy()
    parallel = DataParallel(where, WorkerSetup(worker_policy, "cpu", cfg, "gloo", threads=1, fsdp=fsdp))
    learner = GRPOLearner(policy, cfg, out / "run", tensorboard=False, parallel=parallel)
    rollouts(policy, learner.buffer, groups * updates, size)
    metrics = train(learner, updates)
    params = [p.detach().clone() for p in learner.params]
    model = learner.steps.policy.model
    layout = {"units": sum(isinstance(m, FSDPModule) for m in model.modules()),
              "blocks": sum(any(c.__name__ == "LlamaDecoderLayer" for c in type(m).__mro__) for m in model.modules()),
              "sharded": [isinstance(p, DTensor) for p in learner.steps.params]}
    # The last update again, after a resume from the checkpoint before it: every rank must restore
    # its weights (its shards) and optimiser state from the checkpoint's whole tensors.
    assert learner.resume() is not None
    redone = learner.maybe_update()
    learner.publish_policy()
    torch.save({"params": params, "metrics": metrics, "redone": [p.detach() for p in learner.params],
                "redone_metrics": redone, **layout}, out / "rank0.pt")
    parallel.stop()


def distributed_and_single(tmp_path: Path, cfg: GRPOConfig, groups: int, size: int, updates: int, fsdp: bool):
    ranks = mp.spawn(rank_main, args=(free_port(), tmp_path, cfg, groups, size, updates, fsdp), nprocs=WORLD,
                     join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ranks.join(timeout=1):  # raises if a rank failed; True once all have exited
            assert time.monotonic() < deadline, "the ranks did not finish: a collective that not every rank " \
                "joined, or a worker that missed the stop signal"
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.kill()
    distributed = torch.load(tmp_path / "rank0.pt", weights_only=True)
    policy = starting_policy()
    single = GRPOLearner(policy, cfg, tmp_path / "single", tensorboard=False)
    rollouts(policy, single.buffer, groups * updates, size)
    metrics = train(single, updates)
    return distributed, single, metrics


def assert_same_update(distributed, single: GRPOLearner, metrics, tmp_path: Path) -> None:
    moved = 0
    for got, again, want, start in zip(distributed["params"], distributed["redone"], single.params,
                                       starting_policy().trainable_parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(again, got, atol=ATOL, rtol=RTOL)
        moved += int((want.detach() - start.detach()).abs().max() > 100 * ATOL)
    assert moved == len(single.params)  # the update moved every tensor: the comparison means something
    for got, want in zip(distributed["metrics"], metrics, strict=True):
        for key in METRICS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    for key in METRICS:
        assert distributed["redone_metrics"][key] == pytest.approx(metrics[-1][key], rel=1e-4, abs=1e-6), key
    # What the policy nodes load: the published checkpoint (LoRA merged) holds the same weights.
    name = f"v{len(metrics):06d}"
    got = load_file(tmp_path / "run" / "policies" / name / "model.safetensors")
    want = load_file(tmp_path / "single" / "policies" / name / "model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=ATOL, rtol=RTOL)
    # The run's checkpoint (before its last update) resumes in one process (deleting the policy published
    # after it, which this resume's updates number again), and the last update done
    # there again gives the same weights: a checkpoint's files are whole tensors however the run held them.
    alone = GRPOLearner(starting_policy(), single.config, tmp_path / "run", tensorboard=False)
    assert alone.resume() is not None
    assert alone.maybe_update() is not None
    for got, want in zip(alone.params, distributed["params"], strict=True):
        torch.testing.assert_close(got.detach(), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "sharded"])
def test_two_ranks_give_the_single_process_update(tmp_path, fsdp):
    """Two updates of 2 groups x 4 rollouts, mini-batches of 4: the second update also checks that
    rank 1 ended the first with rank 0's weights and optimiser state, and is done again after a
    resume from the checkpoint before it."""
    distributed, single, metrics = distributed_and_single(tmp_path, CFG, CFG.groups_per_update, 4, 2, fsdp)
    assert_same_update(distributed, single, metrics, tmp_path)
    # sharded: every decoder block is an FSDP unit of its own, plus the root; every trained tensor sharded
    assert distributed["blocks"] >= 1
    assert distributed["units"] == (distributed["blocks"] + 1 if fsdp else 0)
    assert distributed["sharded"] == [fsdp] * len(single.params)


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "sharded"])
def test_an_uneven_split_gives_the_single_process_update(tmp_path, fsdp):
    """3 groups x 3 rollouts = 9 trajectories of 3 chunks on 2 ranks (5 and 4), mini-batches of 4 (the
    last holds one trajectory, so one rank has none in it) and forward passes of two chunks (so a
    trajectory spans two): sharded, the ranks run different numbers of passes of their own and must
    still join each other's."""
    two_chunks = 2 * max(make_policy().sequence_length(text) for text in INSTRUCTIONS)
    cfg = GRPOConfig(groups_per_update=3, epochs=2, minibatch_size=4, lr=3e-3, forward_tokens=two_chunks)
    distributed, single, metrics = distributed_and_single(tmp_path, cfg, 3, 3, 1, fsdp)
    assert_same_update(distributed, single, metrics, tmp_path)


def test_split_batch_deals_round_robin_and_keeps_the_orders():
    shares = split_batch(list("abcde"), torch.arange(5.0), [[4, 0, 1, 2, 3]], 2)
    assert [s.indices for s in shares] == [[0, 2, 4], [1, 3]]
    assert [s.trajectories for s in shares] == [list("ace"), list("bd")]
    assert shares[1].advantages.tolist() == [1.0, 3.0] and shares[1].orders == [[4, 0, 1, 2, 3]]
    assert [s.indices for s in split_batch(list("ab"), torch.zeros(2), [[0, 1]], 3)] == [[0], [1], []]

