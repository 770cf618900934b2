"""price_spike: more than threshold_pct away from the trailing window's low or high (docs/alerts.md)."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.domain.rules import PriceSpikeParams
from alerts.domain.signals import alert_id

from .factories import T0, at, engine, feed, rule, steady, trade


def spike(cooldown: int = 300, **params):
    return engine(rule("price_spike", cooldown_seconds=cooldown, **params))


def test_a_flat_market_raises_nothing():
    eng = spike()
    assert feed(eng, steady("AAPL", 0, 3 * 3600, every=0.5), batch=500) == []


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_random_walk_of_a_tenth_of_a_percent_a_minute_raises_nothing_for_hours(seed):
    rng = random.Random(seed)
    step = 0.001 / math.sqrt(60)  # per-second sigma of a walk with a 0.1% per-minute sigma
    price, trades = 100.0, []
    for second in range(4 * 3600):
        price *= 1 + rng.gauss(0, step)
        trades.append(trade("AAPL", second + rng.random() * 0.9, f"{price:.2f}", seq=second))
    assert feed(spike(), trades, batch=1000) == []


def test_a_rise_of_more_than_5_percent_raises_one_medium_alert_per_episode():
    trades = steady("AAPL", 0, 120) + [trade("AAPL", 161.5, "106.00")] + steady("AAPL", 162, 600, "106.00")
    signals = feed(spike(), trades, batch=50)
    assert len(signals) == 1
    signal = signals[0]
    assert signal.severity == "medium"
    assert signal.message == "AAPL rose 6.00% in 42 s (100 → 106)"
    assert signal.ts == at(161.5) == signal.episode_start
    assert signal.id == alert_id("price-spike", "AAPL", at(161.5))
    assert signal.observed["direction"] == "up"
    assert signal.observed["reference_price"] == "100"
    assert signal.observed["reference_ts"] == "2024-01-02T14:01:59.000000Z"
    assert signal.observed["move_pct"] == 6.0
    assert (signal.rule, signal.type, signal.symbol) == ("price-spike", "price_spike", "AAPL")


def test_a_fall_of_more_than_5_percent_raises_an_alert_too():
    trades = steady("AAPL", 0, 60) + [trade("AAPL", 60, "94.00")]
    [signal] = feed(spike(), trades)
    assert signal.message == "AAPL fell 6.00% in 1.0 s (100 → 94)"
    assert signal.observed["direction"] == "down"


@pytest.mark.parametrize(
    ("price", "severity"),
    [
        ("104.99", None),
        ("105.00", None),  # exactly 5%: "more than 5%" is strict
        ("105.01", "medium"),
        ("108.00", "medium"),
        ("108.01", "high"),
        ("112.00", "high"),
        ("112.01", "critical"),
        ("95.01", None),
        ("95.00", None),  # a fall of exactly 5% from the high
        ("94.99", "medium"),
        ("92.00", "medium"),
        ("91.99", "high"),
        ("88.00", "high"),
        ("87.99", "critical"),
    ],
)
def test_thresholds_are_strict_and_exact_at_the_boundaries(price, severity):
    signals = feed(spike(), [trade("AAPL", 0, "100.00"), trade("AAPL", 30, price)])
    assert [s.severity for s in signals] == ([severity] if severity else [])


def test_boundaries_are_exact_for_prices_a_float_cannot_represent():
    # 0.1 has no float; 0.105 is exactly 5% above it.
    assert feed(spike(), [trade("X", 0, "0.10000000"), trade("X", 1, "0.10500000")]) == []
    assert len(feed(spike(), [trade("X", 0, "0.10000000"), trade("X", 1, "0.10500001")])) == 1


def test_the_window_is_the_trades_second_and_the_60_whole_seconds_before_it():
    # The 100.00 trade is at 0.9 s, second 0. A trade in second 60 still sees it, one in second 61 does not.
    assert len(feed(spike(), [trade("AAPL", 0.9, "100.00"), trade("AAPL", 60.999, "106.00")])) == 1
    assert feed(spike(), [trade("AAPL", 0.9, "100.00"), trade("AAPL", 61.0, "106.00")]) == []


def test_a_custom_window_and_threshold_apply():
    eng = spike(window_seconds=10, threshold_pct=2, high_pct=3, critical_pct=4)
    assert feed(eng, [trade("A", 0, "100.00"), trade("A", 11, "103.00")]) == []
    [signal] = feed(eng, [trade("B", 0, "100.00"), trade("B", 10, "103.50")])
    assert signal.severity == "high"


@pytest.mark.parametrize(("when", "alerts"), [(456, 0), (457, 1)])
def test_the_episode_ends_after_cooldown_seconds_without_the_condition(when, alerts):
    eng = spike(cooldown=120)
    # Spike at 100 s. The last 100.00 is in second 99, so trades up to second 159 still see it.
    first = steady("AAPL", 0, 100) + steady("AAPL", 100, 200, "106.00")
    assert [s.ts for s in feed(eng, first)] == [at(100)]
    # Another spike at 278 s: 278 - 159 < 120, same episode and same severity, no alert. The last
    # 106.00 is in second 277, so this episode's condition holds until second 337.
    second = steady("AAPL", 200, 278, "106.00") + steady("AAPL", 278, 400, "112.00")
    assert feed(eng, second) == []
    # A third spike 120 s after 337 starts a new episode; one second earlier it does not.
    third = steady("AAPL", 400, when, "112.00") + [trade("AAPL", when, "118.00")]
    signals = feed(eng, third)
    assert [(s.ts, s.episode_start) for s in signals] == [(at(when), at(when))] * alerts


def test_a_growing_move_escalates_once_per_severity_with_distinct_ids():
    prices = ["100.00", "106.00", "107.00", "109.00", "110.00", "113.00", "114.00", "120.00"]
    trades = [trade("AAPL", i, price) for i, price in enumerate(prices)]
    signals = feed(spike(), trades)
    assert [(s.severity, s.ts) for s in signals] == [("medium", at(1)), ("high", at(3)), ("critical", at(5))]
    assert {s.episode_start for s in signals} == {at(1)}
    assert [s.id for s in signals] == [
        alert_id("price-spike", "AAPL", at(1)),
        alert_id("price-spike", "AAPL", at(1), "high"),
        alert_id("price-spike", "AAPL", at(1), "critical"),
    ]
    assert signals[1].message.endswith("(escalated to high)")
    assert signals[1].observed["escalated_to"] == "high"


def test_a_whipsaw_reports_the_larger_of_the_two_moves():
    trades = [trade("AAPL", 0, "100.00"), trade("AAPL", 1, "110.00"), trade("AAPL", 2, "103.00")]
    signals = feed(spike(), trades)
    assert [s.observed["direction"] for s in signals] == ["up"]  # 10% up at 1 s
    eng = spike()
    feed(eng, [trade("B", 0, "100.00"), trade("B", 1, "104.00")])
    [signal] = feed(eng, [trade("B", 2, "96.00")])  # 7.69% below the high of 104.00
    assert signal.observed["direction"] == "down"
    assert signal.observed["reference_price"] == "104"


def test_late_trades_are_ignored_by_the_spike_rule_and_counted():
    eng = spike()
    assert eng.on_trades([trade("AAPL", 10, "100.00"), trade("AAPL", 9, "150.00"), trade("AAPL", 11, "100.00")]) == []
    assert eng.counters().late_trades == 1
    # The late 150.00 is not in the window either: 106.00 is measured against 100.00 only.
    [signal] = eng.on_trades([trade("AAPL", 12, "106.00")])
    assert signal.observed["reference_price"] == "100"


@pytest.mark.parametrize("batch", [1, 2, 60])
def test_a_late_print_is_ignored_whether_or_not_it_shares_a_batch_with_what_it_is_late_for(batch):
    # A print 6% off, 3 s older than the last trade, comes after it: one batch or several, the
    # consumer feeds it where it came, so it is late and raises nothing.
    tape = steady("AAPL", 0, 40) + [trade("AAPL", 36.5, "106.00", seq=99)] + steady("AAPL", 40, 55)
    eng = spike()
    assert feed(eng, tape, batch=batch) == []
    assert eng.counters().late_trades == 1


def test_a_trade_with_the_same_timestamp_is_not_late():
    eng = spike()
    eng.on_trades([trade("AAPL", 10, "100.00", seq=1), trade("AAPL", 10, "106.00", seq=2)])
    assert eng.counters().late_trades == 0


def test_symbols_are_independent_and_overrides_apply_per_symbol():
    eng = spike(symbol_overrides={"TSLA": {"threshold_pct": 8, "high_pct": 10, "critical_pct": 15}})
    trades = [trade(s, 0, "100.00") for s in ("AAPL", "TSLA", "MSFT")]
    trades += [trade("AAPL", 5, "106.00"), trade("TSLA", 5, "106.00"), trade("MSFT", 5, "100.00")]
    assert [s.symbol for s in feed(eng, trades, batch=6)] == ["AAPL"]
    [signal] = feed(eng, [trade("TSLA", 6, "109.00")])
    assert (signal.symbol, signal.severity) == ("TSLA", "medium")


# The definition, implemented the slow and obvious way with exact fractions, to check the
# detector's deques, float screen and episode bookkeeping against.
def reference_signals(trades, params: PriceSpikeParams, cooldown: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    start, last_true, level = None, -math.inf, -1
    levels = [(Fraction(params.critical_pct) / 100, 3, "critical"), (Fraction(params.high_pct) / 100, 2, "high"),
              (Fraction(params.threshold_pct) / 100, 1, "medium")]
    for i, current in enumerate(trades):
        now = math.floor(current.ts.timestamp())
        oldest = now - params.window_seconds
        window = [Fraction(x.price) for x in trades[: i + 1] if math.floor(x.ts.timestamp()) >= oldest]
        price = Fraction(current.price)
        move = max(price / min(window) - 1, 1 - price / max(window))
        if move <= Fraction(params.threshold_pct) / 100:
            continue
        t = current.ts.timestamp()
        sev_level, severity = next((lv, sev) for bound, lv, sev in levels if move > bound)
        if start is None or t - last_true >= cooldown:
            start, last_true, level = current.ts, t, sev_level
            out.append((alert_id("price-spike", current.symbol, start), severity))
            continue
        last_true = max(last_true, t)
        if sev_level > level:
            level = sev_level
            out.append((alert_id("price-spike", current.symbol, start, severity), severity))
    return out


@st.composite
def jumpy_paths(draw):
    """Trades a few seconds apart whose price mostly drifts and sometimes jumps by up to 15%."""
    count = draw(st.integers(2, 80))
    cents, seconds, trades = 10_000, 0.0, []
    for seq in range(count):
        seconds += draw(st.sampled_from([0, 0.25, 1, 7, 30, 59.5, 61, 200]))
        if draw(st.booleans()):
            cents = max(1, cents + draw(st.integers(-1_500, 1_500)) * cents // 10_000)
        else:
            cents = max(1, cents + draw(st.integers(-30, 30)))
        trades.append(trade("AAPL", seconds, Decimal(cents).scaleb(-2), seq=seq))
    return trades


@settings(max_examples=300, deadline=None)
@given(trades=jumpy_paths(), cooldown=st.sampled_from([0, 30, 300]), window=st.sampled_from([5, 60]))
def test_signals_match_the_definition_computed_the_slow_way(trades, cooldown, window):
    params = PriceSpikeParams(window_seconds=window)
    eng = spike(cooldown=cooldown, window_seconds=window)
    got = [(s.id, s.severity) for s in feed(eng, trades, batch=7)]
    assert got == reference_signals(trades, params, cooldown)


def test_t0_is_on_a_minute_boundary():  # the tests above count seconds from it
    assert T0.timestamp() % 60 == 0
