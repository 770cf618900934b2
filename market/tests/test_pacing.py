"""Pacing maps event time onto wall time: evenly, at any speed, never negative."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.domain.pacing import Pacer

T0 = 1_767_623_400_000  # 2026-01-05T14:30:00Z in epoch milliseconds
SECOND = 1000
HOUR = 3600 * SECOND


def test_as_fast_as_possible_never_waits():
    pacer = Pacer(wall_start=100.0, event_start_ms=T0, speed=None)
    assert pacer.seconds_to_wait(T0 + 5 * HOUR, now_monotonic=100.0) == 0.0
    assert pacer.seconds_behind(T0 + 5 * HOUR, now_monotonic=100.0) == 0.0


def test_speed_one_waits_until_the_event_time_has_come():
    pacer = Pacer(wall_start=1000.0, event_start_ms=T0, speed=1.0)
    assert pacer.seconds_to_wait(T0 + 2500, now_monotonic=1000.0) == pytest.approx(2.5)
    assert pacer.seconds_to_wait(T0 + 2500, now_monotonic=1002.0) == pytest.approx(0.5)
    assert pacer.seconds_to_wait(T0 + 2500, now_monotonic=1002.5) == 0.0


def test_speed_n_compresses_event_time():
    pacer = Pacer(wall_start=0.0, event_start_ms=T0, speed=60.0)
    # An hour of recorded trades plays in a minute.
    assert pacer.seconds_to_wait(T0 + HOUR, now_monotonic=0.0) == pytest.approx(60.0)
    slow = Pacer(wall_start=0.0, event_start_ms=T0, speed=0.5)
    assert slow.seconds_to_wait(T0 + SECOND, now_monotonic=0.0) == pytest.approx(2.0)


def test_late_and_early_events_are_due_now_and_behind_is_reported():
    pacer = Pacer(wall_start=10.0, event_start_ms=T0, speed=1.0)
    assert pacer.seconds_to_wait(T0 - 30 * SECOND, now_monotonic=10.0) == 0.0
    assert pacer.seconds_to_wait(T0 + SECOND, now_monotonic=15.0) == 0.0
    assert pacer.seconds_behind(T0 + SECOND, now_monotonic=15.0) == pytest.approx(4.0)
    assert pacer.seconds_behind(T0 + 9 * SECOND, now_monotonic=15.0) == 0.0


def test_a_hundred_events_a_second_are_spread_evenly_not_sent_in_a_burst():
    pacer = Pacer(wall_start=0.0, event_start_ms=T0, speed=1.0)
    events = [T0 + 10 * i for i in range(100)]
    # A sender that sends each event exactly when told: its send times are
    # 10 ms apart, not bunched at the start of the second.
    now = 0.0
    sent = []
    for ts in events:
        now += pacer.seconds_to_wait(ts, now)
        sent.append(now)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) == pytest.approx(0.01) and max(gaps) == pytest.approx(0.01)


def test_bad_speeds_are_refused():
    for speed in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="speed"):
            Pacer(wall_start=0.0, event_start_ms=T0, speed=speed)


@settings(max_examples=200, deadline=None)
@given(
    speed=st.one_of(st.none(), st.floats(min_value=0.01, max_value=1e4)),
    offsets=st.lists(st.integers(min_value=-10**6, max_value=10**8), min_size=2, max_size=20),
    now=st.floats(min_value=0.0, max_value=1e6),
)
def test_waits_are_never_negative_and_never_decrease_with_event_time(speed, offsets, now):
    pacer = Pacer(wall_start=500.0, event_start_ms=T0, speed=speed)
    waits = [pacer.seconds_to_wait(T0 + ms, now) for ms in sorted(offsets)]
    assert all(w >= 0.0 for w in waits)
    assert waits == sorted(waits)
    if speed is None:
        assert waits == [0.0] * len(waits)
        return
    for ms, wait in zip(sorted(offsets), waits):
        # Waiting as told lands on the due time (or now, if that has passed).
        due = pacer.wall_start + (ms / 1e3) / speed
        assert now + wait == pytest.approx(max(now, due), rel=1e-9, abs=1e-6)
