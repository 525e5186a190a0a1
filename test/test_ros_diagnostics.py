"""/diagnostics pacing: a flood of rejected chunks gives about two reports a second, each counting the
rejections by cause since the previous one; a fault or e-stop appearing is still reported at once."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from vla_rl_ros.ros.diagnostics import DiagnosticsPacer

OK, WARN, ERROR = 0, 1, 2
PERIOD, MIN_INTERVAL = 1.0, 0.5  # the executor's defaults
TICK = 0.05  # the executor's timer calls it this often besides every event
RUNNING = (None, False)  # (hold, e-stop) as the executor reports them
ESTOP = ("estop", True)


def test_a_flood_of_rejections_gives_about_two_reports_a_second_with_counts_by_cause() -> None:
    pacer = DiagnosticsPacer(PERIOD, MIN_INTERVAL)
    assert pacer.due(-0.75, RUNNING, OK, {}) == {}  # the first call always reports
    rejections: Counter[str] = Counter()
    reports: list[tuple[float, dict[str, int]]] = []
    now = 0.0
    for i in range(3 * 270):  # 270 bad chunks a second for 3 s, the tick in between
        now = 0.01 + i / 270
        rejections["non_finite" if i % 9 else "bad_shape"] += 1
        for t in (now, now + 0.5 / 270):  # the chunk's event, then maybe a tick
            if (new := pacer.due(t, RUNNING, OK, rejections)) is not None:
                reports.append((t, new))
    for t in (now + TICK * k for k in range(1, 20)):  # the flood is over: its tail is reported once
        if (new := pacer.due(t, RUNNING, OK, rejections)) is not None:
            reports.append((t, new))
    times = [t for t, _ in reports]
    assert len(reports) <= 3 / MIN_INTERVAL + 1  # was one per rejection: 810
    assert all(b - a >= MIN_INTERVAL for a, b in pairwise(times))
    assert reports[0] == (0.01, {"bad_shape": 1})  # the first rejection after a quiet time: at once
    total = sum((Counter(new) for _, new in reports), Counter())
    assert total == rejections == {"non_finite": 720, "bad_shape": 90}  # every rejection in exactly one report
    assert all(new for _, new in reports)  # each report during the flood carries what came since the last


def test_a_fault_or_estop_appearing_is_reported_at_once_and_a_recovery_within_the_interval() -> None:
    pacer = DiagnosticsPacer(PERIOD, MIN_INTERVAL)
    pacer.due(0.0, RUNNING, OK, {})
    assert pacer.due(0.125, RUNNING, OK, {"non_finite": 1}) is None  # paced: just after the last report
    assert pacer.due(0.25, ("stale_image", False), WARN, {"non_finite": 1}) == {"non_finite": 1}  # at once
    assert pacer.due(0.375, ESTOP, ERROR, {"non_finite": 1}) == {}  # ERROR above WARN: at once again
    # The release (ERROR -> OK) is a change, not a fault: out within min_interval of the last report.
    assert pacer.due(0.5, RUNNING, OK, {"non_finite": 1}) is None
    assert pacer.due(0.875, RUNNING, OK, {"non_finite": 1}) == {}
    # A hold that changes at the same level is paced the same way.
    assert pacer.due(1.0, ("no_policy", False), OK, {"non_finite": 1}) is None
    assert pacer.due(1.375, ("no_policy", False), OK, {"non_finite": 1}) == {}
    # Nothing changes: every period.
    assert pacer.due(2.25, ("no_policy", False), OK, {"non_finite": 1}) is None
    assert pacer.due(2.375, ("no_policy", False), OK, {"non_finite": 1}) == {}


def test_a_state_flapping_as_fast_as_its_input_is_bounded_too() -> None:
    """A spoofed joint state in and out of the limits at 1 kHz: OK and ERROR alternate every message."""
    pacer = DiagnosticsPacer(PERIOD, MIN_INTERVAL)
    published = [t for i in range(2000) if pacer.due(t := i / 1000, *(
        (("joint_state_out_of_limits", False), ERROR) if i % 2 else (RUNNING, OK)), {}) is not None]
    assert 1 in [round(t * 1000) for t in published]  # the first ERROR at once
    assert len(published) <= 2 * 3 / MIN_INTERVAL  # an ERROR at once after each paced OK report, no more
