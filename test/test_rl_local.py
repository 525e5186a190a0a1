"""`vla-rl grpo-local` through the project's command line: the in-process GRPO loop on the tiny policy."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vla_rl_ros.cli import main as vla_rl
from vla_rl_ros.sim import TASKS
from vla_rl_ros.sim.tasks.reach import ReachConfig

WEIGHTS = "model.safetensors"


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """The command sets torch's thread count (--threads) for this whole process; later tests get it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def easy_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    """reach cut to 8 steps (2 chunks) with a 0.5 m success radius, about the arm's start distance:
    the untrained policy's sampled groups then mix successes and failures, so groups are kept
    after the first rollouts instead of being filtered for many minutes."""
    config = ReachConfig(max_steps=8, hold_steps=1, tolerance=0.5)
    monkeypatch.setitem(TASKS, "reach", dataclasses.replace(TASKS["reach"], config=config))


def run_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["grpo-local", "--checkpoint", str(checkpoint), "--tasks", "reach", "--updates", "2", "--groups", "1",
            "--minibatch", "8", "--temperature", "1.0", "--lr", "1e-3", "--eval", "2", "--out", str(out), *extra]


def changed_tensors(before: Path, after: Path) -> list[str]:
    old, new = load_file(str(before / WEIGHTS)), load_file(str(after / WEIGHTS))
    assert old.keys() == new.keys()
    return [name for name in old if not torch.equal(old[name], new[name])]


def test_grpo_local_trains_evaluates_and_writes_each_update(tiny_checkpoint: Path, tmp_path: Path, easy_reach: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe"
    out.mkdir()
    (out / "probe.json").write_text("[]\n")  # an earlier run's folder is replaced
    (out / "stale").write_text("")
    assert vla_rl(run_args(tiny_checkpoint, out, "--eval-every", "1", "--sampled-eval")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["v0", "u1", "u2"]  # one line per update

    log = json.loads((out / "probe.json").read_text())
    assert [row["update"] for row in log] == [0, 1, 2]
    for row in log:
        assert set(row["eval"]) == {"reach", "reach@T"} and all(0 <= v <= 1 for v in row["eval"].values())
    for row in log[1:]:
        assert row["grpo/kept_group_fraction"] > 0 and row["episodes"] % 16 == 0 and row["grpo/approx_kl"] >= 0
    assert log[1]["episodes"] <= log[2]["episodes"] and not (out / "stale").exists()
    assert changed_tensors(tiny_checkpoint, out / "policy_u1")  # an update on kept groups moved the weights
    assert changed_tensors(out / "policy_u1", out / "policy_u2")
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # the learner's header + one row per update


def test_grpo_local_saves_the_final_policy_without_evaluation(tiny_checkpoint: Path, tmp_path: Path,
                                                              easy_reach: None) -> None:
    out = tmp_path / "probe"
    assert vla_rl([*run_args(tiny_checkpoint, out, "--eval", "0", "--eval-every", "4"), "--updates", "1"]) == 0
    log = json.loads((out / "probe.json").read_text())
    assert [row["update"] for row in log] == [1] and "eval" not in log[0]
    assert sorted(p.name for p in out.glob("policy_u*")) == ["policy_u1"]  # the last update's, eval or not


@pytest.mark.parametrize(("extra", "message"), [
    (["--tasks", "reach,fly"], "unknown task 'fly'"),
    (["--updates", "0"], "--updates must be at least 1, got 0"),
    (["--groups", "-1"], "--groups must be at least 1, got -1"),
    (["--eval", "-3"], "--eval must be >= 0"),
    (["--eval", "5000"], "held-out seeds; asked for 5000 episodes"),
    (["--minibatch", "64"], "--minibatch 64 exceeds the 8 trajectories"),
    (["--temperature", "0"], "--temperature=0.0: must be > 0"),
    (["--group-size", "1"], "--group-size must be at least 2"),
    (["--checkpoint", "/nonexistent/policy"], "checkpoint directory /nonexistent/policy does not exist"),
], ids=["task", "updates", "groups", "eval", "eval-seeds", "minibatch", "temperature", "group-size", "checkpoint"])
def test_grpo_local_refuses_bad_arguments_before_touching_out(tiny_checkpoint: Path, tmp_path: Path, extra: list[str],
                                                              message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe"
    with pytest.raises(SystemExit) as exit_:
        vla_rl([*run_args(tiny_checkpoint, out), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "vla-rl grpo-local: error:" in err and message in err, err
    assert not out.exists()


def test_grpo_local_does_not_replace_a_folder_it_did_not_write(tiny_checkpoint: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("update\n")  # e.g. a train_sim run directory
    with pytest.raises(SystemExit) as exit_:
        vla_rl(run_args(tiny_checkpoint, out))
    assert exit_.value.code == 2 and "is not replaced" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == "update\n"
