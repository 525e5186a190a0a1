"""The operator tool's and the operator backend's plain parts: keys from a terminal (a real pty, termios
cbreak) and from a pipe, and which labels the operator backend accepts."""

from __future__ import annotations

import io
import os
import signal
import termios
import threading

import pytest

from vla_rl_ros.operator.keys import KEYS, read_keys
from vla_rl_ros.success import OPERATOR, LabelError, OperatorLabels


def test_keys_from_a_pipe_are_one_per_line() -> None:
    assert list(read_keys(io.StringIO("s\n\n  f \nxyz\nq\n"))) == ["s", "f", "xyz", "q"]
    assert set(KEYS) == {"s", "f", "r", "a", "q"}


def test_keys_from_a_terminal_act_at_once_and_the_terminal_is_restored() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "r", closefd=False) as stream:
            before = termios.tcgetattr(slave)
            # Typed once the tool reads (entering cbreak mode discards type-ahead), with no newline:
            # a terminal in cbreak mode delivers each key as it is pressed.
            typing = threading.Timer(0.5, os.write, (master, b"s r"))
            typing.start()
            signal.alarm(20)  # never hang the suite if a key is lost
            keys = read_keys(stream)
            assert next(keys) == "s"
            during = termios.tcgetattr(slave)
            assert not during[3] & termios.ICANON and not during[3] & termios.ECHO
            assert next(keys) == "r"  # the space is skipped
            keys.close()
            assert termios.tcgetattr(slave) == before
    finally:
        signal.alarm(0)
        os.close(master)
        os.close(slave)


def test_operator_labels_only_the_running_episode_once() -> None:
    labels = OperatorLabels()
    assert labels.source == OPERATOR and labels.hold_steps("any task") == 1
    with pytest.raises(LabelError, match="no episode is running"):
        labels.label("", True)
    labels.start("ep-1")
    with pytest.raises(LabelError, match="'ep-0' is not the running episode 'ep-1'"):
        labels.label("ep-0", True)
    assert labels.label("", False) == "ep-1"  # empty id: the running one
    with pytest.raises(LabelError, match="already labelled success=False"):
        labels.label("ep-1", True)
    labels.end("ep-1")
    with pytest.raises(LabelError, match="no episode is running"):
        labels.label("ep-1", True)
    labels.start("ep-2")
    assert labels.label("ep-2", True) == "ep-2"
