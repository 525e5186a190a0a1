"""The distributed learner: 2 CPU ranks over gloo update the tiny VLA as one process does."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_rl_vla import CFG, make_policy, rollouts

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
    return [learner.update(learner.buffer.pop_batch(u + 1)) for u in range(updates)]


def rank_main(rank: int, port: int, out: Path, cfg: GRPOConfig, groups: int, size: int, updates: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    where = Rank(rank, WORLD, rank)
    if rank > 0:
        serve(where)
        return
    policy = starting_policy()
    parallel = DataParallel(where, WorkerSetup(worker_policy, "cpu", cfg, "gloo", threads=1))
    learner = GRPOLearner(policy, cfg, out / "run", tensorboard=False, parallel=parallel)
    rollouts(policy, learner.buffer, groups * updates, size)
    metrics = train(learner, updates)
    torch.save({"params": [p.detach() for p in learner.params], "metrics": metrics}, out / "rank0.pt")
    parallel.stop()


def distributed_and_single(tmp_path: Path, cfg: GRPOConfig, groups: int, size: int, updates: int):
    ranks = mp.spawn(rank_main, args=(free_port(), tmp_path, cfg, groups, size, updates), nprocs=WORLD,
                     join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ranks.join(timeout=1):  # raises if a rank failed; True once all have exited
            assert time.monotonic() < deadline, "the ranks did not finish: a worker missed the stop signal?"
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


def assert_same_update(distributed, single: GRPOLearner, metrics) -> None:
    moved = 0
    for got, want, start in zip(distributed["params"], single.params, starting_policy().trainable_parameters(),
                                strict=True):
        torch.testing.assert_close(got, want.detach(), atol=ATOL, rtol=RTOL)
        moved += int((want.detach() - start.detach()).abs().max() > 100 * ATOL)
    assert moved == len(single.params)  # the update moved every tensor: the comparison means something
    for got, want in zip(distributed["metrics"], metrics, strict=True):
        for key in METRICS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_two_ranks_give_the_single_process_update(tmp_path):
    """Two updates of 2 groups x 4 rollouts, mini-batches of 4: the second update also checks that
    rank 1 ended the first with rank 0's weights and optimiser state."""
    distributed, single, metrics = distributed_and_single(tmp_path, CFG, CFG.groups_per_update, 4, updates=2)
    assert_same_update(distributed, single, metrics)


def test_an_uneven_split_gives_the_single_process_update(tmp_path):
    """3 groups x 3 rollouts = 9 trajectories on 2 ranks (5 and 4), mini-batches of 4 (the last holds
    one trajectory, so one rank has none in it) and forward passes of one trajectory."""
    cfg = GRPOConfig(groups_per_update=3, epochs=2, minibatch_size=4, lr=3e-3, forward_chunks=3)
    distributed, single, metrics = distributed_and_single(tmp_path, cfg, 3, 3, updates=1)
    assert_same_update(distributed, single, metrics)


def test_split_batch_deals_round_robin_and_keeps_the_orders():
    shares = split_batch(list("abcde"), torch.arange(5.0), [[4, 0, 1, 2, 3]], 2)
    assert [s.indices for s in shares] == [[0, 2, 4], [1, 3]]
    assert [s.trajectories for s in shares] == [list("ace"), list("bd")]
    assert shares[1].advantages.tolist() == [1.0, 3.0] and shares[1].orders == [[4, 0, 1, 2, 3]]
    assert [s.indices for s in split_batch(list("ab"), torch.zeros(2), [[0, 1]], 3)] == [[0], [1], []]

