"""spread_blowout and crossed_quote (docs/alerts.md)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.domain.signals import alert_id
from streaming.schemas import Quote

from .factories import at, engine, quote, rule


def spread(cooldown: int = 300, **params):
    return engine(rule("spread_blowout", cooldown_seconds=cooldown, **params))


def crossed(cooldown: int = 60, **params):
    return engine(rule("crossed_quote", cooldown_seconds=cooldown, **params))


def normal(symbol: str, start: int, end: int, per_second: int = 3) -> list:
    """Quotes 2 bps wide (99.99 / 100.01), ``per_second`` of them each second of [start, end)."""
    return [quote(symbol, s + i / per_second, "99.99", "100.01") for s in range(start, end) for i in range(per_second)]


def wide(symbol: str, seconds: float, half_width: str = "0.10") -> Quote:
    """A quote ``half_width`` either side of 100: 0.10 makes it 20 bps wide."""
    return quote(symbol, seconds, Decimal(100) - Decimal(half_width), Decimal(100) + Decimal(half_width))


def test_a_spread_more_than_5_times_its_median_alerts_after_warm_up():
    eng = spread()
    assert eng.on_quotes(normal("AAPL", 0, 59) + [wide("AAPL", 59.5)]) == []  # 59 samples: still warming up
    [signal] = eng.on_quotes([wide("AAPL", 60.5)])  # second 59 is the 60th sample
    assert signal.severity == "medium"  # 20 bps is 10x the median: more than 5x, not more than 10x
    assert signal.ts == signal.episode_start == at(60.5)
    assert signal.id == alert_id("spread-blowout", "AAPL", at(60.5))
    assert signal.observed["median_bps"] == 2.0
    assert signal.observed["samples"] == 60
    assert signal.message == (
        "AAPL spread 20.0 bps is 10.0× its median of 2.0 bps over the last 300 s (bid 99.90, ask 100.10)"
    )


def test_each_second_contributes_the_spread_standing_at_its_end():
    eng = spread(min_samples=60)
    # A blowout quote early in each second, replaced by a normal one: the samples are all 2 bps.
    tape = [q for s in range(60) for q in (wide("AAPL", s + 0.1, "0.01"), quote("AAPL", s + 0.5, "99.99", "100.01"))]
    eng.on_quotes(tape)
    [signal] = eng.on_quotes([wide("AAPL", 61)])
    assert signal.observed["median_bps"] == 2.0


@pytest.mark.parametrize(("half_width", "severity"), [("0.05", None), ("0.06", "medium"), ("0.11", "high"),
                                                      ("0.21", "critical")])
def test_severity_grows_with_the_multiple(half_width, severity):
    eng = spread()
    eng.on_quotes(normal("AAPL", 0, 60))
    signals = eng.on_quotes([wide("AAPL", 60.5, half_width)])  # 10, 12, 22, 42 bps against 2
    assert [s.severity for s in signals] == ([severity] if severity else [])


@pytest.mark.parametrize(("after", "alerts"), [(119, 0), (120, 1)])
def test_a_lasting_blowout_is_one_alert_per_episode(after, alerts):
    eng = spread(cooldown=120)
    eng.on_quotes(normal("AAPL", 0, 120))
    blowout = [wide("AAPL", s + 0.5) for s in range(120, 150)]
    assert len(eng.on_quotes(blowout)) == 1
    # Normal again, then another blowout: ``after`` seconds after the last wide quote (149.5).
    eng.on_quotes(normal("AAPL", 150, 149 + after))
    assert len(eng.on_quotes([wide("AAPL", 149.5 + after)])) == alerts


@pytest.mark.parametrize(("when", "alerts"), [(60.5, 1), (61.5, 0)])
def test_the_baseline_is_the_window_seconds_before_the_quotes_second(when, alerts):
    eng = spread(window_seconds=60, min_samples=60)
    eng.on_quotes(normal("AAPL", 0, 60))
    # In second 60 the window is seconds 0-59: 60 samples. In second 61 it is 1-60: 59, still warming up.
    assert len(eng.on_quotes([wide("AAPL", when)])) == alerts


def test_samples_older_than_the_window_are_forgotten():
    eng = spread(window_seconds=60, min_samples=30)
    eng.on_quotes(normal("AAPL", 0, 60))
    assert eng.on_quotes([wide("AAPL", 200)]) == []  # every sample is older than 140: warming up again


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_ordinary_spread_noise_raises_nothing(seed):
    rng = random.Random(seed)
    eng = spread()
    tape = []
    for s in range(3600):
        for i in range(rng.randint(0, 4)):
            half = rng.randint(1, 4)  # 2 to 8 bps around 100
            tape.append(quote("AAPL", s + i / 5, f"{100 - half / 100:.2f}", f"{100 + half / 100:.2f}"))
    assert eng.on_quotes(tape) == []


def test_a_crossed_quote_alerts_and_a_locked_one_too():
    eng = crossed()
    [signal] = eng.on_quotes([quote("AAPL", 0, "100.02", "100.01")])
    assert (signal.severity, signal.type, signal.rule) == ("high", "crossed_quote", "crossed-quote")
    assert signal.message == "AAPL quote crossed: bid 100.02 > ask 100.01"
    assert signal.observed["state"] == "crossed"
    [signal] = eng.on_quotes([quote("MSFT", 0, "300.00", "300.00")])
    assert (signal.severity, signal.message) == ("medium", "MSFT quote locked: bid 300 = ask 300")


def test_a_locked_book_that_crosses_escalates_once():
    eng = crossed()
    tape = [quote("AAPL", 0, "100.00", "100.00"), quote("AAPL", 1, "100.01", "100.00"),
            quote("AAPL", 2, "100.00", "100.00"), quote("AAPL", 3, "100.02", "100.00")]
    signals = eng.on_quotes(tape)
    assert [(s.severity, s.ts) for s in signals] == [("medium", at(0)), ("high", at(1))]
    assert signals[1].id == alert_id("crossed-quote", "AAPL", at(0), "high")


def test_locked_quotes_can_be_excluded():
    eng = crossed(include_locked=False)
    assert eng.on_quotes([quote("AAPL", 0, "100.00", "100.00")]) == []
    assert len(eng.on_quotes([quote("AAPL", 1, "100.01", "100.00")])) == 1


def test_a_crossed_book_alerts_again_only_after_cooldown():
    eng = crossed(cooldown=60)
    tape = [quote("AAPL", 0, "100.02", "100.01"), quote("AAPL", 10, "100.00", "100.01"),
            quote("AAPL", 30, "100.02", "100.01"), quote("AAPL", 40, "100.00", "100.01"),
            quote("AAPL", 89.999, "100.02", "100.01"), quote("AAPL", 95, "100.00", "100.01")]
    assert len(eng.on_quotes(tape)) == 1  # 89.999 - 30 < 60
    assert [s.ts for s in eng.on_quotes([quote("AAPL", 149.999, "100.02", "100.01")])] == [at(149.999)]


def test_crossed_quotes_are_not_spread_samples_and_do_not_blow_the_spread_rule():
    eng = engine(rule("spread_blowout"), rule("crossed_quote"))
    locked_then_crossed = [(quote("AAPL", s + 0.2, "100.00", "100.00"), quote("AAPL", s + 0.5, "100.05", "99.95"))
                           for s in range(60)]
    tape = [q for pair in locked_then_crossed for q in pair]
    signals = eng.on_quotes(tape)
    assert {s.type for s in signals} == {"crossed_quote"}
    assert eng.on_quotes([wide("AAPL", 61)]) == []  # no uncrossed sample yet: still warming up


def test_late_quotes_are_ignored_and_counted():
    eng = engine(rule("spread_blowout"), rule("crossed_quote"))
    eng.on_quotes([quote("AAPL", 10, "99.99", "100.01")])
    assert eng.on_quotes([quote("AAPL", 9, "100.02", "100.01")]) == []
    assert eng.counters().late_quotes == 1
