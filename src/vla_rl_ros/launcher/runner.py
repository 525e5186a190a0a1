"""Run a launch description's processes: one process group each, prefixed output, clean shutdown.

Each child gets its own session so that one signal stops it and everything it started; the
launcher forwards SIGINT, SIGTERM (unlike `ros2 launch`, where SIGTERM orphans the nodes) and SIGHUP
(a closed terminal or ssh session: the children, in sessions of their own, would not get it) and
escalates to SIGTERM, then SIGKILL, for children that do not stop in time. On Linux each child also
gets SIGTERM from the kernel if the launcher itself dies without a word (SIGKILL, the OOM killer):
an orphaned executor would otherwise go on commanding its arm.

A `respawn` process is started again after it exits, as `ros2 launch` does. A required one
(`on_exit: shutdown`) with `respawn` is started again only after a crash (a signal, or a status other
than 0 and REFUSED_START): its clean exit ends the launch, so a learner that dies resumes while one
that has done its updates ends the run. `ros2 launch` cannot say this: it runs on_exit's shutdown on
every exit, a crash included, before the respawn delay is over, so there such a node ends the launch
whichever way it exits (what it did here before).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vla_rl_ros.launcher.description import ProcessSpec

POLL_S = 0.05
SIGINT_TIMEOUT_S = 5.0    # launch's default sigterm_timeout: time to exit after SIGINT
SIGTERM_TIMEOUT_S = 5.0   # launch's default sigkill_timeout
# A node's status when it refuses its parameters (vla_rl_ros.ros.node_main.run_node): started again
# with the same ones it would refuse them again, so a required node's refusal ends the launch.
REFUSED_START = 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Run before each child's command: the kernel sends it SIGTERM when the launcher's main thread (which
# forks every child) exits, then the command is exec'd in place (same pid); PR_SET_PDEATHSIG (1) survives
# exec. A separate interpreter (-I -S: no PYTHON* variables, no site) rather than Popen's preexec_fn, which is
# unsafe in a process with threads (the output pumps).
_LIFELINE = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
             "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execvp(sys.argv[2], sys.argv[2:])")


def lifeline() -> list[str]:
    """The prefix that ties a child's life to the calling thread (empty where the kernel has no
    PR_SET_PDEATHSIG): the test graphs use it too, so a killed test run leaves no node behind."""
    return [sys.executable, "-I", "-S", "-c", _LIFELINE, str(os.getpid())] if sys.platform == "linux" else []


@dataclass
class _Running:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    reader: threading.Thread
    restart_at: float | None = None
    done: bool = False


class Runner:
    """Starts every process, watches them, and stops them all on a signal or a required exit."""

    def __init__(self, specs: list[ProcessSpec], log_dir: Path, out: TextIO = sys.stdout) -> None:
        self.specs = specs
        self.log_dir = log_dir
        self.out = out
        self.lock = threading.Lock()
        self.stop_signal: int | None = None
        self.running: list[_Running] = []

    def say(self, text: str) -> None:
        with self.lock, contextlib.suppress(OSError):  # a closed terminal must not stop the shutdown
            self.out.write(f"[vla-rl launch] {text}\n")
            self.out.flush()

    def start(self, spec: ProcessSpec) -> _Running:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        proc = subprocess.Popen(
            [*lifeline(), *spec.cmd], env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        reader = threading.Thread(target=self.pump, args=(spec, proc), daemon=True)
        reader.start()
        self.say(f"started {spec.label} [pid {proc.pid}]")
        return _Running(spec, proc, reader)

    def pump(self, spec: ProcessSpec, proc: subprocess.Popen[bytes]) -> None:
        """Copy a child's output to the terminal (prefixed) and/or its log file, line by line."""
        assert proc.stdout is not None
        to_log, to_screen = spec.output in ("log", "both"), spec.output in ("screen", "both")
        with open(self.log_dir / f"{spec.label}.log", "ab") if to_log else contextlib.nullcontext() as log:
            for raw in iter(proc.stdout.readline, b""):
                if to_log:
                    log.write(raw)
                    log.flush()
                if to_screen:
                    with self.lock, contextlib.suppress(OSError):  # keep draining the pipe: the child must not block
                        self.out.write(f"[{spec.label}] {raw.decode(errors='replace').rstrip()}\n")
                        self.out.flush()

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum

    def run(self) -> int:
        """Run until every process has exited, a required one exits, or a STOP_SIGNALS one. Returns the status."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        previous = {s: signal.signal(s, self.on_signal) for s in STOP_SIGNALS}
        status = 0
        failed: list[str] = []
        try:
            self.running = [self.start(spec) for spec in self.specs]
            while self.stop_signal is None and not all(item.done for item in self.running):
                for item in self.running:
                    if item.done:
                        continue
                    if item.restart_at is not None:
                        if time.monotonic() >= item.restart_at:
                            fresh = self.start(item.spec)
                            item.proc, item.reader, item.restart_at = fresh.proc, fresh.reader, None
                        continue
                    code = item.proc.poll()
                    if code is None:
                        continue
                    item.reader.join(timeout=1.0)
                    self.say(f"{item.spec.label} exited with code {code}")
                    if item.spec.required and (not item.spec.respawn or code in (0, REFUSED_START)):
                        if code != 0:
                            self.say(f"required process {item.spec.label} failed (exit code {code}); "
                                     "stopping the graph")
                            return code if code > 0 else 1
                        self.say(f"required process {item.spec.label} finished; stopping the graph")
                        return 0
                    if code != 0:
                        failed.append(f"{item.spec.label} (exit code {code})")
                    if item.spec.respawn:
                        item.restart_at = time.monotonic() + item.spec.respawn_delay
                    else:
                        item.done = True
                time.sleep(POLL_S)
            if self.stop_signal is not None:
                self.say(f"received {signal.Signals(self.stop_signal).name}; stopping every process")
                status = 128 + self.stop_signal
            elif failed:
                self.say("process(es) failed: " + ", ".join(failed))
                status = 1
            return status
        finally:
            self.stop_all()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop_all(self) -> None:
        """SIGINT to every process group, then SIGTERM, then SIGKILL, each after its timeout."""
        live = [r for r in self.running if r.proc.poll() is None]
        for sig, timeout in ((signal.SIGINT, SIGINT_TIMEOUT_S), (signal.SIGTERM, SIGTERM_TIMEOUT_S),
                             (signal.SIGKILL, None)):
            for item in live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item.proc.pid, sig)
            deadline = time.monotonic() + (timeout or SIGTERM_TIMEOUT_S)
            while time.monotonic() < deadline and any(r.proc.poll() is None for r in live):
                time.sleep(POLL_S)
            stopped = [r for r in live if r.proc.poll() is not None]
            for item in stopped:
                item.reader.join(timeout=1.0)
                self.say(f"stopped {item.spec.label} ({signal.Signals(sig).name}, exit code {item.proc.returncode})")
            live = [r for r in live if r.proc.poll() is None]
            if not live:
                break
        for item in self.running:  # a group may outlive its leader: make sure nothing stays behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(item.proc.pid, signal.SIGKILL)
