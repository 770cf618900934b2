"""The engine's memory is bounded per symbol, whatever the trade rate or the time it runs."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from alerts.domain.detectors import DEFAULT_RULES, AnomalyEngine
from streaming.schemas import Trade

from .factories import T0, quote

# Per symbol: the latest-trade entry, price_spike's symbol entry and two deques of at most
# window + 1 = 61 per-second entries, volume's symbol entry and 30 baseline buckets, stale's entry.
TRADE_BOUND = 1 + (1 + 2 * 61) + (1 + 30) + 1


def burst(count: int, seconds: float):
    """``count`` trades of one symbol in ``seconds``: prices fall for the first half and rise for
    the second, the worst case for the monotonic deques (every trade a new extreme)."""
    one = Decimal(1)
    step = seconds * 1_000_000 / count
    half = count // 2
    for i in range(count):
        ticks = 2_000_000 - i if i < half else 1_000_000 + i
        yield Trade(id=f"b{i}", symbol="AAPL", ts=T0 + timedelta(microseconds=int(i * step)), seq=i,
                    price=Decimal(ticks).scaleb(-4), size=one, side="buy")


def test_a_million_trades_in_two_minutes_keep_the_state_bounded():
    engine = AnomalyEngine(DEFAULT_RULES)
    trades, largest = burst(1_000_000, 120), 0
    while batch := [t for _, t in zip(range(10_000), trades, strict=False)]:
        engine.on_trades(batch)
        engine.advance(batch[-1].ts)
        largest = max(largest, engine.state_size())
    assert largest <= TRADE_BOUND
    assert largest >= 61  # a deque was full (61 falling or rising seconds): the bound is reached


def test_hours_of_quotes_keep_one_sample_per_second_of_the_window():
    engine = AnomalyEngine(DEFAULT_RULES)
    for hour in range(3):
        engine.on_quotes(
            quote("AAPL", hour * 3600 + s + i / 4, "99.99", "100.01") for s in range(3600) for i in range(4)
        )
    # latest-quote entry, spread's symbol entry and 300 samples, crossed's episode (none yet)
    assert engine.state_size() == 1 + 1 + 300


def test_state_grows_with_symbols_not_with_time():
    engine = AnomalyEngine(DEFAULT_RULES)
    one, sizes = Decimal(1), {}
    for minute in range(240):
        batch = [
            Trade(id=f"{s}-{minute}", symbol=f"S{s}", ts=T0 + timedelta(minutes=minute, seconds=s), seq=minute,
                  price=Decimal(100 + minute % 7), size=one, side="buy")
            for s in range(20)
        ]
        engine.on_trades(batch)
        engine.advance(batch[-1].ts)
        sizes[minute] = engine.state_size()
    assert sizes[239] == sizes[120] <= 20 * TRADE_BOUND
