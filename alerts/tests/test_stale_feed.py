"""stale_feed: a symbol silent for more than gap_seconds while the market trades (docs/alerts.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alerts.domain.signals import alert_id
from streaming.schemas import Candle

from .factories import at, consumer_order, engine, feed, rule, steady, trade


def stale(cooldown: int = 300, **params):
    return engine(rule("stale_feed", cooldown_seconds=cooldown, **params))


def test_a_symbol_silent_while_the_market_trades_alerts_once():
    eng = stale()
    tape = steady("AAPL", 0, 100) + steady("MSFT", 0, 600)
    signals = feed(eng, sorted(tape, key=lambda t: t.ts), batch=10, advance=True)
    assert len(signals) == 1
    [signal] = signals
    assert (signal.symbol, signal.severity, signal.type) == ("AAPL", "high", "stale_feed")
    assert signal.ts == signal.episode_start == at(99 + 120)  # the instant it became stale
    assert signal.id == alert_id("stale-feed", "AAPL", at(219))
    assert signal.message == "AAPL has not traded for more than 120 s since 14:01:39 UTC while the market kept trading"
    assert signal.observed == {"silent_since": "2024-01-02T14:01:39.000000Z", "gap_seconds": 120,
                               "last_trade_ts": "2024-01-02T14:01:39.000000Z"}


def test_the_gap_is_strictly_more_than_gap_seconds():
    eng = stale()
    feed(eng, steady("AAPL", 0, 100) + steady("MSFT", 0, 220), batch=1000)
    assert eng.advance(at(219)) == []
    assert [s.symbol for s in eng.advance(at(219.000001))] == ["AAPL"]


def test_the_alert_is_the_same_whichever_advance_notices_it():
    early, late = stale(), stale()
    tape = steady("AAPL", 0, 100) + steady("MSFT", 0, 500)
    feed(early, tape, batch=len(tape))
    feed(late, tape, batch=len(tape))
    assert early.advance(at(230)) == late.advance(at(499)) != []


def test_nothing_is_stale_while_the_whole_market_is_silent():
    eng = stale()
    feed(eng, steady("AAPL", 0, 100) + steady("MSFT", 0, 100), batch=50, advance=True)
    assert eng.advance(at(3600)) == []  # nobody trades: a close or a halt, not a stale feed


def test_after_a_market_wide_silence_gaps_count_from_the_resumption():
    eng = stale()
    feed(eng, steady("AAPL", 0, 100) + steady("MSFT", 0, 100), batch=50, advance=True)
    # The market reopens at 5000 s with MSFT; AAPL opens 50 s later: no alert.
    reopen = steady("MSFT", 5000, 5300)
    signals = feed(eng, reopen[:50], batch=10, advance=True)
    signals += feed(eng, sorted(steady("AAPL", 5050, 5300) + reopen[50:], key=lambda t: t.ts), batch=10, advance=True)
    assert signals == []


def test_a_symbol_that_does_not_reopen_is_stale_counted_from_the_resumption():
    eng = stale()
    feed(eng, steady("AAPL", 0, 100) + steady("MSFT", 0, 100), batch=50, advance=True)
    [signal] = feed(eng, steady("MSFT", 5000, 5300), batch=10, advance=True)
    assert signal.ts == at(5120)
    assert "since the market resumed at 15:23:20 UTC" in signal.message


@pytest.mark.parametrize(("cooldown", "alerts"), [(300, 1), (100, 2)])
def test_one_alert_per_silence_and_the_cooldown_between_silences(cooldown, alerts):
    eng = stale(cooldown=cooldown)
    # AAPL silent 100..300 (stale at 219), trades 300..310, silent again (stale at 429).
    aapl = steady("AAPL", 0, 100) + steady("AAPL", 300, 310)
    signals = feed(eng, sorted(aapl + steady("MSFT", 0, 700), key=lambda t: t.ts), batch=10, advance=True)
    # The second silence is stale 429 - 300 = 129 s after the first one ended.
    assert [s.ts for s in signals] == [at(219), at(429)][:alerts]


def test_a_per_symbol_gap_applies():
    eng = stale(symbol_overrides={"ILLQ": {"gap_seconds": 600}})
    tape = steady("AAPL", 0, 10) + steady("ILLQ", 0, 10) + steady("MSFT", 0, 800)
    signals = feed(eng, sorted(tape, key=lambda t: t.ts), batch=10, advance=True)
    assert [(s.symbol, s.ts) for s in signals] == [("AAPL", at(129)), ("ILLQ", at(609))]


def test_a_silence_that_ends_before_the_next_advance_is_not_reported():
    # Documented limitation: staleness is only decided in advance().
    eng = stale()
    tape = steady("AAPL", 0, 10) + steady("MSFT", 0, 400) + steady("AAPL", 300, 400)
    assert feed(eng, sorted(tape, key=lambda t: t.ts), batch=len(tape), advance=True) == []


def test_late_trades_do_not_end_a_silence():
    eng = stale()
    feed(eng, steady("AAPL", 0, 100) + steady("MSFT", 0, 200), batch=1000)
    eng.on_trades(steady("AAPL", 50, 60))  # late: AAPL already traded at 99
    assert [s.ts for s in eng.advance(at(220))] == [at(219)]


def test_a_symbol_still_silent_after_a_market_wide_silence_is_a_new_silence():
    eng = stale()
    tape = sorted(steady("AAPL", 0, 100) + steady("MSFT", 0, 300), key=lambda t: t.ts)
    assert [s.ts for s in feed(eng, tape, batch=10, advance=True)] == [at(219)]
    # The market is silent from 300 s to 5000 s; MSFT reopens, AAPL does not.
    signals = feed(eng, steady("MSFT", 5000, 5300), batch=10, advance=True)
    assert [(s.symbol, s.ts, s.episode_start) for s in signals] == [("AAPL", at(5120), at(5120))]


def test_a_symbol_that_only_came_as_history_beside_the_live_market_is_never_stale():
    eng = stale()
    live = steady("MSFT", 0, 900)
    signals = feed(eng, live[:300], batch=10, advance=True)
    # Last week's BRK.A trades, replayed while MSFT trades live; then a newcomer in the present.
    signals += feed(eng, steady("BRK.A", -7 * 86400, -7 * 86400 + 60) + [trade("NVDA", 300.5, "500.00")], batch=100)
    signals += feed(eng, live[300:], batch=10, advance=True)
    assert [(s.symbol, s.ts) for s in signals] == [("NVDA", at(300.5 + 120))]


def test_a_symbol_on_a_partition_being_caught_up_is_watched():
    # After a restart MSFT's partition is read to 600 s while NVDA's lags: the watermark, the
    # earliest of the partitions' latest, holds at NVDA's. NVDA then falls silent at 330 s.
    eng = stale()
    signals = eng.on_trades(consumer_order(steady("MSFT", 0, 600))) + eng.advance(at(300))
    signals += eng.on_trades(consumer_order(steady("NVDA", 300, 330))) + eng.advance(at(330))
    signals += feed(eng, steady("MSFT", 600, 1200), batch=10, advance=True)
    assert [(s.symbol, s.ts) for s in signals] == [("NVDA", at(329 + 120))]


@pytest.mark.parametrize(("last_trade", "settled_at", "stale_at"), [
    (100, 300, None),  # last trade at 99 s, silent 201 s > 120 s where the run before had got to: noticed then
    (250, 300, 249 + 120),  # last trade at 249 s, silent 51 s there: this run's to alert
])
def test_warm_settles_a_silence_already_longer_than_the_gap(last_trade, settled_at, stale_at):
    eng = stale()
    eng.warm(trades=steady("AAPL", 0, last_trade) + steady("MSFT", 0, settled_at), settled_at={"AAPL": at(settled_at)})
    signals = feed(eng, steady("MSFT", settled_at, 900), batch=10, advance=True)
    assert [(s.symbol, s.ts) for s in signals] == ([("AAPL", at(stale_at))] if stale_at else [])


WEEK_AGO = -7 * 86400


def last_week_candle(symbol: str) -> Candle:
    """A 1-minute candle of last week whose last trade is at WEEK_AGO + 59 s."""
    price = Decimal("10")
    return Candle(symbol=symbol, interval="1m", start=at(WEEK_AGO), open=price, high=price, low=price, close=price,
                  volume=Decimal(1), trades=1, vwap=price, first_trade_ts=at(WEEK_AGO + 59),
                  last_trade_ts=at(WEEK_AGO + 59))


@pytest.mark.parametrize(("watched", "alerted"), [
    ((), []),  # replayed files' symbols: their history was never the market's present
    (("BRK.A", "TSLA"), ["BRK.A", "TSLA"]),  # the engine before watched them: this one does
])
def test_warm_leaves_history_beside_the_present_unwatched_unless_watched_before(watched, alerted):
    # A new engine (a rules change) warmed with MSFT's live trades, BRK.A's trades and TSLA's
    # candle of last week.
    eng = stale()
    eng.warm(trades=steady("BRK.A", WEEK_AGO, WEEK_AGO + 60) + steady("MSFT", 0, 300),
             candles=[last_week_candle("TSLA")], present=at(300), watched=watched)
    signals = feed(eng, steady("MSFT", 300, 900), batch=10, advance=True)
    assert sorted(s.symbol for s in signals) == alerted


def test_what_the_engine_before_watched_counts_for_the_warm_up_only():
    # NFLX was watched before the rebuild but has no history here; last week's NFLX trades replayed
    # later are history beside the live market, as for any symbol.
    eng = stale()
    eng.warm(trades=steady("MSFT", 0, 300), present=at(300), watched=("NFLX",))
    signals = feed(eng, steady("MSFT", 300, 400), batch=10, advance=True)
    signals += feed(eng, steady("NFLX", WEEK_AGO, WEEK_AGO + 60), batch=100)
    signals += feed(eng, steady("MSFT", 400, 900), batch=10, advance=True)
    assert signals == []
