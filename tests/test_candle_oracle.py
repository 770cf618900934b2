"""The oracle test of candle exactness.

Over 200,000 simulated trades across several symbols and days are published
with duplicates, shuffled within and across batches, and consumed by the real
`manage.py build_candles` process, which is killed with SIGKILL at random
points and restarted several times. Afterwards every candle of every interval
must equal, field by field, a naive recomputation from the generated trades
(plain Python below, sharing no code with the pipeline), and the trade counts
must be exact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from confluent_kafka import Consumer, TopicPartition
from django.conf import settings
from django.db import connection

from market.domain.simulator import MarketSimulator
from streaming.kafka import EventPublisher, consumer_config
from streaming.schemas import Trade, encode
from streaming.testing import wait_for
from streaming.topics import TRADES, topic

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SYMBOLS = ("AAPL", "TSLA", "JNJ", "NVDA")
START = datetime(2026, 2, 26, 20, 0, tzinfo=UTC)  # spans a month end and several UTC days
TRADE_COUNT = 200_000
WIDTHS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}


def generated_trades() -> list[Trade]:
    # ~0.6 trades/s over the symbols: 200k trades cover about four days.
    simulator = MarketSimulator(symbols=SYMBOLS, seed=20260226, start=START, rate=0.6)
    trades = []
    for event in simulator.events():
        if type(event) is Trade:
            trades.append(event)
            if len(trades) == TRADE_COUNT:
                return trades
    raise AssertionError("unreachable")


def oracle(trades: list[Trade]) -> dict[tuple[str, str, datetime], tuple]:
    buckets: dict[tuple[str, str, int], list[Trade]] = defaultdict(list)
    for trade in trades:
        seconds = int(trade.ts.timestamp() // 1)
        for interval, width in WIDTHS.items():
            buckets[(trade.symbol, interval, seconds - seconds % width)].append(trade)
    expected = {}
    with localcontext() as context:
        context.prec = 80
        for (symbol, interval, start), members in buckets.items():
            members.sort(key=lambda t: (t.ts, t.seq, t.id))
            volume = sum(t.size for t in members)
            notional = sum(t.price * t.size for t in members)
            expected[(symbol, interval, datetime.fromtimestamp(start, UTC))] = (
                members[0].price, max(t.price for t in members), min(t.price for t in members), members[-1].price,
                volume, len(members), (notional / volume).quantize(Decimal("1e-8"), rounding=ROUND_HALF_EVEN),
                members[0].ts, members[-1].ts,
            )
    return expected


def stored_candles() -> dict[tuple[str, str, datetime], tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT symbol, interval, time, open, high, low, close, volume, trades, notional, "
                       "first_trade_time, last_trade_time FROM market_candle")
        rows = cursor.fetchall()
    with localcontext() as context:
        context.prec = 80
        return {
            (symbol, interval, time_): (
                open_, high, low, close, volume, trades,
                (notional / volume).quantize(Decimal("1e-8"), rounding=ROUND_HALF_EVEN), first, last,
            )
            for symbol, interval, time_, open_, high, low, close, volume, trades, notional, first, last in rows
        }


def publish_with_duplicates_shuffled(trades: list[Trade], rng: random.Random) -> int:
    deliveries = trades + rng.sample(trades, len(trades) // 10)
    rng.shuffle(deliveries)
    publisher = EventPublisher(name="oracle")
    for trade in deliveries:
        publisher.publish(topic(TRADES), trade.symbol, encode(trade))
    publisher.flush()
    return len(deliveries)


def consumer_env() -> dict[str, str]:
    database = settings.DATABASES["default"]
    return {
        **os.environ,
        "TIMESCALE_URL": (f"postgresql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
                          f"{database['PORT']}/{database['NAME']}"),
        "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
        "KAFKA_CONSUMER_GROUP_PREFIX": settings.KAFKA_CONSUMER_GROUP_PREFIX,
        # Small batches: many transactions, so that the kills land between and inside them.
        "CONSUMER_BATCH_SIZE": "2000",
        "METRICS_PORT": "0",
    }


def start_consumer() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "build_candles"], cwd=settings.BASE_DIR,
                            env=consumer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stored_offsets_total(group: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(next_offset), 0) FROM streaming_consumeroffset WHERE \"group\" = %s",
                       [group])
        return cursor.fetchone()[0]


def end_offsets_total() -> int:
    probe = Consumer(consumer_config("oracle-probe"))
    try:
        name = topic(TRADES)
        partitions = probe.list_topics(name, timeout=10).topics[name].partitions
        return sum(probe.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in partitions)
    finally:
        probe.close()


def test_candles_equal_a_naive_recomputation_after_duplicates_shuffles_and_kill_9(kafka_topics, redis_clean):
    rng = random.Random(7)
    trades = generated_trades()
    assert len({t.id for t in trades}) == TRADE_COUNT
    assert (trades[-1].ts - trades[0].ts) > timedelta(days=3)
    delivered = publish_with_duplicates_shuffled(trades, rng)
    assert end_offsets_total() == delivered
    group = f"{settings.KAFKA_CONSUMER_GROUP_PREFIX}.build_candles"

    kills = 0
    for _ in range(5):
        process = start_consumer()
        # Kill once it has made some progress, at a random moment after that.
        before = stored_offsets_total(group)
        wait_for(lambda: stored_offsets_total(group) > before or process.poll() is not None, timeout=120,
                 what="the consumer to commit a batch")
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is not None:
            pytest.fail(f"consumer exited early: {process.stderr.read().decode()[-2000:]}")
        if stored_offsets_total(group) >= delivered:
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1

    final = start_consumer()
    try:
        wait_for(lambda: stored_offsets_total(group) >= delivered, timeout=300, interval=0.5,
                 what="every delivered message consumed")
    finally:
        final.send_signal(signal.SIGTERM)
        assert final.wait(60) == 0, final.stderr.read().decode()[-2000:]

    assert kills >= 3, "the consumer finished before it could be killed often enough: raise TRADE_COUNT"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT trade_id) FROM market_trade")
        assert cursor.fetchone() == (TRADE_COUNT, TRADE_COUNT)
    expected = oracle(trades)
    actual = stored_candles()
    assert actual.keys() == expected.keys()
    mismatches = [(key, actual[key], expected[key]) for key in expected if actual[key] != expected[key]]
    assert not mismatches, f"{len(mismatches)} candles differ, e.g. {mismatches[:3]}"
    for interval in WIDTHS:
        assert sum(v[5] for k, v in actual.items() if k[1] == interval) == TRADE_COUNT
