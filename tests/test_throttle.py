"""Warnings throttled per kind (issue 14, defect 6: throttled per call site, a second kind
of bad input in the same period was never logged)."""

from d3p_ros.throttle import KindThrottle


def test_each_kind_has_its_own_clock():
    lines, now = [], [0.0]
    warn = KindThrottle(lines.append, period=5.0, clock=lambda: now[0])
    assert warn("invalid_non_finite", "NaN")
    assert not warn("invalid_non_finite", "NaN again")
    assert warn("invalid_wrong_joint_count", "16 joints")      # another kind: logged at once
    now[0] = 5.0
    assert warn("invalid_non_finite", "NaN later")
    assert lines == ["NaN", "16 joints", "NaN later (1 more like it since the last such warning)"]


def test_period_zero_logs_everything():
    lines = []
    warn = KindThrottle(lines.append, period=0.0)
    for _ in range(3):
        warn("x", "again")
    assert lines == ["again"] * 3
