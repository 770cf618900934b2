"""Beat's rollups against the real database: sealing repairs a candle that
differs from its trades, inserts a missing one, deletes a phantom; the 24-hour
statistics land in Redis."""

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction

from market import rollups
from market.domain.candles import bucket_start
from market.models import Candle
from market.pipelines import TradesPipeline
from streaming import metrics
from streaming.schemas import Trade
from streaming.topics import TRADES

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
LATER = START + timedelta(days=2)


def store(trades):
    pipeline = TradesPipeline()
    events = {TRADES: trades}
    pipeline.prepare(events)
    with transaction.atomic():
        pipeline.store(events)
    pipeline.close()


def trades(count=90):
    return [Trade(id=f"s-{i}", symbol="NVDA", ts=START + timedelta(seconds=2 * i), seq=i + 1,
                  price=Decimal("140.00") + Decimal(i % 7) / 100, size=Decimal(100), side="buy")
            for i in range(count)]


def snapshot(interval):
    return {c.pk: (c.open, c.high, c.low, c.close, c.volume, c.trades, c.notional, c.first_trade_id, c.last_trade_id)
            for c in Candle.objects.filter(interval=interval)}


def repairs(interval):
    return metrics.CANDLE_SEAL_REPAIRS.labels(interval=interval)._value.get()


def test_a_correct_candle_is_left_alone(kafka_topics, redis_clean):
    store(trades())
    before = snapshot("1m")
    assert rollups.candles_seal(interval="1m", since=START, now=LATER) == 0
    assert snapshot("1m") == before


def test_a_candle_that_differs_from_its_trades_is_repaired_and_counted(kafka_topics, redis_clean):
    store(trades())
    good = snapshot("1m")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE market_candle SET high = high + 1, trades = trades + 3 "
                       "WHERE interval = '1m' AND time = %s", [START])
    counted = repairs("1m")
    assert rollups.candles_seal(interval="1m", since=START, now=LATER) == 1
    assert snapshot("1m") == good
    assert repairs("1m") == counted + 1


def test_a_missing_candle_is_recreated_and_a_phantom_deleted(kafka_topics, redis_clean):
    store(trades())
    good = snapshot("5m")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO market_candle SELECT symbol, interval, time + interval '1 hour', open, high, low, "
                       "close, volume, trades, notional, first_trade_time, first_trade_seq, first_trade_id, "
                       "last_trade_time, last_trade_seq, last_trade_id, updated_at FROM market_candle "
                       "WHERE interval = '5m' AND time = %s", [START])
        cursor.execute("DELETE FROM market_candle WHERE interval = '5m' AND time = %s", [START])
    assert rollups.candles_seal(interval="5m", since=START, now=LATER) == 2
    assert snapshot("5m") == good


@pytest.mark.parametrize("interval", ["1m", "1h"])
def test_a_late_trade_stored_while_a_seal_runs_keeps_its_new_candle(kafka_topics, redis_clean, interval):
    """A consumer commits the first trade of a closed bucket (its candle row new, so not locked by the
    seal) after the seal computed what it expects: the seal must not take that candle for a phantom."""
    store(trades())
    late = Trade(id="late-1", symbol="NVDA", ts=START + timedelta(hours=5, seconds=7), seq=999,
                 price=Decimal("141.00"), size=Decimal(5), side="sell")

    def consumer_commits_after_the_expectation(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "CREATE TEMP TABLE seal_expected" in sql:
            committing = threading.Thread(target=lambda: (store([late]), connection.close()))
            committing.start()
            committing.join()
        return result

    with connection.execute_wrapper(consumer_commits_after_the_expectation):
        assert rollups.candles_seal(interval=interval, since=START, now=LATER) == 0
    kept = Candle.objects.get(symbol="NVDA", interval=interval, time=bucket_start(late.ts, interval))
    assert (kept.trades, kept.close, kept.last_trade_id) == (1, Decimal("141.00"), "late-1")
    assert rollups.candles_seal(interval=interval, since=START, now=LATER) == 0  # and it was right


@pytest.mark.parametrize("interval", ["1m", "1h"])
def test_trades_stored_in_a_new_candle_while_a_seal_runs_all_count(kafka_topics, redis_clean, interval):
    """A replay stores two batches of a closed bucket while the seal runs: the first creates its candle
    after the seal locked the rows, and is seen by the recompute; the second adds to that candle after
    the recompute. Writing the recompute back would lose the second batch's trade."""
    store(trades())
    bucket_trades = iter([
        Trade(id=f"late-{i}", symbol="NVDA", ts=START + timedelta(hours=5, seconds=7 + i), seq=990 + i,
              price=Decimal("141.00") + i, size=Decimal(5), side="sell")
        for i in range(2)
    ])

    def consumer_commits_after(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "CREATE TEMP TABLE seal_" in sql:  # after the lock, then after the recompute
            committing = threading.Thread(target=lambda: (store([next(bucket_trades)]), connection.close()))
            committing.start()
            committing.join()
        return result

    with connection.execute_wrapper(consumer_commits_after):
        rollups.candles_seal(interval=interval, since=START, now=LATER)
    candle = Candle.objects.get(symbol="NVDA", interval=interval, time=bucket_start(START + timedelta(hours=5), interval))
    assert (candle.trades, candle.volume, candle.close, candle.last_trade_id) == (2, 10, Decimal("142.00"), "late-1")
    assert rollups.candles_seal(interval=interval, since=START, now=LATER) == 0


def test_coarse_candles_are_sealed_from_the_minute_candles(kafka_topics, redis_clean):
    store(trades())
    good = snapshot("1h")
    Candle.objects.filter(interval="1h").update(close=Decimal("1.00"))
    assert rollups.candles_seal(interval="1h", since=START - timedelta(hours=1), now=LATER) == 1
    assert snapshot("1h") == good


def test_open_buckets_inside_the_grace_period_are_not_sealed(kafka_topics, redis_clean, settings):
    settings.CANDLE_SEAL_GRACE_SECONDS = 120
    store(trades())
    Candle.objects.filter(interval="1m").update(trades=999)
    # "now" is just after the last trade: every 1m bucket ended less than the grace period ago
    # except the first ones; only buckets ending before now - grace are touched.
    now = START + timedelta(seconds=180 + 120)
    repaired = rollups.candles_seal(interval="1m", since=START, now=now)
    assert repaired == 3
    assert Candle.objects.filter(interval="1m", trades=999).count() == Candle.objects.filter(interval="1m").count() - 3


def test_market_statistics_cover_the_last_24_hours(kafka_topics, redis_clean):
    store(trades())
    assert rollups.market_stats_refresh(now=START + timedelta(hours=1)) == 1
    stats = json.loads(redis_clean.get(rollups.STATS_KEY.format("NVDA")))
    prices = [t.price for t in trades()]
    assert Decimal(stats["open_24h"]) == prices[0]
    assert Decimal(stats["last"]) == prices[-1]
    assert Decimal(stats["high_24h"]) == max(prices) and Decimal(stats["low_24h"]) == min(prices)
    assert Decimal(stats["volume_24h"]) == 9000 and stats["trades_24h"] == 90


def test_market_statistics_write_decimals_as_the_api_does(kafka_topics, redis_clean):
    store(trades(2))  # 140.00 and 140.01: the VWAP is 140.005, computed to 8 places
    rollups.market_stats_refresh(now=START + timedelta(hours=1))
    stats = json.loads(redis_clean.get(rollups.STATS_KEY.format("NVDA")))
    assert (stats["vwap_24h"], stats["change_24h"], stats["volume_24h"]) == ("140.005", "0.01", "200")
