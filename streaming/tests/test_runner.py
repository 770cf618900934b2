"""The consumer runner against the real broker and database: batches stored
with their offsets, duplicates counted once, restarts resuming from the offsets
PostgreSQL holds, poison dead-lettered."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition
from django.db import connection, transaction

from finstream.logs import JsonFormatter
from market.models import Candle, Trade as TradeRow
from market import storage
from market.models import RetiredTradeDay
from market.pipelines import TradesPipeline
from streaming import runner as runner_module
from streaming.dead_letters import HEADER_ERROR, HEADER_OFFSET, HEADER_TOPIC
from streaming.kafka import EventPublisher, consumer_config
from streaming.models import ConsumerOffset
from streaming.runner import ConsumerRunner, RunnerOptions, TooMuchPoison
from streaming.schemas import Trade, encode
from streaming.testing import IdlePipeline, consume_until, read_topic, until_a_transaction_waits_for_a_lock, wait_for
from streaming.topics import DEAD_LETTERS, TRADES, topic

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_trades(count: int, *, symbols=("AAPL", "MSFT"), prefix="t") -> list[Trade]:
    return [
        Trade(id=f"{prefix}-{i}", symbol=symbols[i % len(symbols)], ts=START + timedelta(milliseconds=700 * i),
              seq=i + 1, price=Decimal("100.00") + Decimal(i % 17) / 100, size=Decimal(100 + i % 3),
              side="buy" if i % 2 else "sell")
        for i in range(count)
    ]


def publish(payloads: list[tuple[str, bytes]]) -> None:
    publisher = EventPublisher(name="test")
    for key, value in payloads:
        publisher.publish(topic(TRADES), key, value)
    publisher.flush()


def publish_trades(trades: list[Trade]) -> None:
    publish([(t.symbol, encode(t)) for t in trades])


def make_runner(**options) -> ConsumerRunner:
    runner = ConsumerRunner(TradesPipeline(), RunnerOptions(batch_size=options.pop("batch_size", 50),
                                                            batch_wait=0.2, **options))
    runner.subscribe()
    return runner


def candle_trade_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for interval, trades in Candle.objects.values_list("interval", "trades"):
        counts[interval] = counts.get(interval, 0) + trades
    return counts


def test_a_batch_is_stored_with_the_offsets_it_came_from(kafka_topics, redis_clean):
    publish_trades(make_trades(120))
    runner = make_runner()
    consume_until(runner, 120)
    runner.close()
    assert TradeRow.objects.count() == 120
    offsets = ConsumerOffset.objects.filter(topic=topic(TRADES))
    assert sum(o.next_offset for o in offsets) == 120
    assert candle_trade_counts() == {i: 120 for i in ("1m", "5m", "15m", "1h", "4h", "1d")}


def test_a_duplicated_trade_counts_once_in_the_table_and_every_candle(kafka_topics, redis_clean):
    trades = make_trades(60)
    publish_trades(trades + trades[:25] + trades[40:])
    runner = make_runner()
    consume_until(runner, 60 + 25 + 20)
    runner.close()
    assert TradeRow.objects.count() == 60
    assert candle_trade_counts() == {i: 60 for i in ("1m", "5m", "15m", "1h", "4h", "1d")}
    total_volume = sum(t.size for t in trades)
    assert sum(Candle.objects.filter(interval="1d").values_list("volume", flat=True)) == total_volume


def test_a_restart_resumes_from_the_offsets_in_postgres_not_kafka(kafka_topics, redis_clean):
    publish_trades(make_trades(80))
    first = make_runner()
    consume_until(first, 80)
    first.close()
    # Rewind the group's offsets in Kafka, as if the crash came between the
    # database commit and Kafka's commit: PostgreSQL's offsets must win.
    rewind = Consumer(consumer_config(first.group_id))
    rewind.commit(offsets=[TopicPartition(topic(TRADES), p, 0) for p in range(2)], asynchronous=False)
    rewind.close()
    publish_trades(make_trades(30, prefix="late"))
    second = make_runner()
    assert consume_until(second, 30) == 30
    second.close()
    assert TradeRow.objects.count() == 110
    assert candle_trade_counts()["1m"] == 110


def test_poison_goes_to_the_dead_letter_topic_and_the_consumer_carries_on(kafka_topics, redis_clean, caplog):
    good = make_trades(10)
    publish([(t.symbol, encode(t)) for t in good[:5]] + [("AAPL", b"{not json"), ("AAPL", b'{"id": "x"}')]
            + [(t.symbol, encode(t)) for t in good[5:]])
    runner = make_runner()
    consume_until(runner, 12)
    runner.close()
    assert TradeRow.objects.count() == 10
    dead = read_topic(topic(DEAD_LETTERS))
    assert sorted(m.value() for m in dead) == [b'{"id": "x"}', b"{not json"]
    headers = dict(dead[0].headers())
    assert headers[HEADER_TOPIC] == topic(TRADES).encode()
    assert int(headers[HEADER_OFFSET]) >= 0
    assert headers[HEADER_ERROR]
    # Each is logged with where it came from, as fields a JSON log line carries.
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records if "dead-lettering" in r.getMessage()]
    assert len(logged) == 2
    assert {(line["consumer"], line["topic"], line["offset"]) for line in logged} \
        == {("build_candles", topic(TRADES), int(dict(m.headers())[HEADER_OFFSET])) for m in dead}


def test_a_trade_from_too_far_ahead_of_the_clock_is_dead_lettered(kafka_topics, redis_clean, settings):
    settings.EVENT_TIME_MAX_AHEAD_SECONDS = 60
    now = datetime.now(UTC)
    ahead = [Trade(id=f"ahead-{s}", symbol="AAPL", ts=now + timedelta(seconds=s), seq=1, price=Decimal(1),
                   size=Decimal(1), side="buy") for s in (30, 600, 10**9)]
    publish_trades(make_trades(3) + ahead)
    runner = make_runner()
    consume_until(runner, 6)
    runner.close()
    assert sorted(TradeRow.objects.values_list("trade_id", flat=True)) == ["ahead-30", "t-0", "t-1", "t-2"]
    dead = read_topic(topic(DEAD_LETTERS))
    assert sorted(json.loads(m.value())["id"] for m in dead) == ["ahead-1000000000", "ahead-600"]
    assert all(b"ahead of this consumer's clock by more than EVENT_TIME_MAX_AHEAD_SECONDS (60 s)"
               in dict(m.headers())[HEADER_ERROR] for m in dead)


def test_a_day_retention_dropped_takes_no_more_trades_so_a_replay_counts_nothing_twice(
        kafka_topics, redis_clean, settings):
    from market import tasks
    from market.models import RetiredTradeDay
    from streaming.metrics import TRADES_NOT_STORED

    settings.TRADES_RETENTION_DAYS, settings.FINE_CANDLES_RETENTION_DAYS = 30, 90
    trades = make_trades(40)  # of 2026-03-02: older than both retentions
    publish_trades(trades)
    runner = make_runner()
    consume_until(runner, 40)
    tasks.retention_apply.apply().get()
    assert set(RetiredTradeDay.objects.values_list("symbol", "day")) == {("AAPL", START.date()), ("MSFT", START.date())}
    coarse = {"15m": 40, "1h": 40, "4h": 40, "1d": 40}  # the day's 1m and 5m candles went with the fine retention
    assert candle_trade_counts() == coarse
    not_stored = TRADES_NOT_STORED.labels(reason="retired_day")._value.get()

    # The same file again, and a symbol of that day never stored before: its day is not retired.
    first_of_nvda = Trade(id="n-1", symbol="NVDA", ts=START, seq=1, price=Decimal(5), size=Decimal(1), side="buy")
    publish_trades(trades + [first_of_nvda])
    consume_until(runner, 41)
    runner.close()
    assert list(TradeRow.objects.values_list("trade_id", flat=True)) == ["n-1"]  # its partition made again
    assert candle_trade_counts() == {**{interval: 41 for interval in coarse}, "1m": 1, "5m": 1}
    assert TRADES_NOT_STORED.labels(reason="retired_day")._value.get() == not_stored + 40


def in_a_thread(work, errors: list) -> threading.Thread:
    def run():
        try:
            work()
        except Exception as error:  # the test asserts there was none
            errors.append(error)
        finally:
            connection.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def retention_of_old_trades() -> list[str]:
    return storage.partitions_drop_older_than(table=storage.TRADES, cutoff=datetime.now(UTC) - timedelta(days=30))


def test_trades_a_replay_commits_while_retention_waits_to_drop_their_day_are_recorded_as_retired(
        kafka_topics, redis_clean):
    trades = make_trades(40)  # of 2026-03-02
    events = {TRADES: trades}
    stored, commit = threading.Event(), threading.Event()

    def replay_batch():
        pipeline = TradesPipeline()
        pipeline.prepare(events)
        with transaction.atomic():
            pipeline.store(events)
            stored.set()
            commit.wait(30)

    errors = []
    replay = in_a_thread(replay_batch, errors)
    assert stored.wait(30)
    retention = in_a_thread(retention_of_old_trades, errors)
    until_a_transaction_waits_for_a_lock()
    commit.set()
    replay.join()
    retention.join()
    assert not errors
    assert set(RetiredTradeDay.objects.values_list("symbol", "day")) == {("AAPL", START.date()), ("MSFT", START.date())}

    counts = candle_trade_counts()
    pipeline = TradesPipeline()
    pipeline.prepare(events)
    with transaction.atomic():
        again = pipeline.store(events)
    assert (again.trades, again.retired) == ([], 40)
    assert candle_trade_counts() == counts == {interval: 40 for interval in ("1m", "5m", "15m", "1h", "4h", "1d")}


def test_a_batch_whose_partition_retention_dropped_meanwhile_is_stored_again_without_the_retired_days(
        kafka_topics, redis_clean, caplog):
    from streaming.metrics import TRADES_NOT_STORED

    runner = make_runner()
    publish_trades(make_trades(40))
    consume_until(runner, 40)
    counts = candle_trade_counts()
    not_stored = TRADES_NOT_STORED.labels(reason="retired_day")._value.get()
    locked = threading.Event()

    def hold_the_lock_until_the_consumer_waits(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("LOCK TABLE"):
            locked.set()
            until_a_transaction_waits_for_a_lock()
        return result

    def retention_holding_the_lock():
        with connection.execute_wrapper(hold_the_lock_until_the_consumer_waits):
            retention_of_old_trades()

    errors = []
    retention = in_a_thread(retention_holding_the_lock, errors)
    assert locked.wait(30)
    # More of the same day, and NVDA's first trades of it: retention closes AAPL's and MSFT's day (they had
    # trades in the partition), not NVDA's, whose trades find the partition gone once it lets go.
    nvda = make_trades(5, symbols=("NVDA",), prefix="n")
    publish_trades(make_trades(40, prefix="more") + nvda)
    consume_until(runner, 45)
    runner.close()
    retention.join()
    assert not errors
    assert "retention dropped a partition this batch was writing to; storing the batch again" in caplog.text
    assert sorted(TradeRow.objects.values_list("trade_id", flat=True)) == sorted(t.id for t in nvda)
    assert candle_trade_counts() == {interval: trades + 5 for interval, trades in counts.items()}
    assert TRADES_NOT_STORED.labels(reason="retired_day")._value.get() == not_stored + 40


def test_a_replay_read_as_retention_drops_its_day_counts_nothing_twice_beside_another_member(
        kafka_topics, redis_clean):
    # The file was stored once. A member storing it again has read which days retention closed (none
    # yet) when retention comes; another member then makes the day's partition again for its batch.
    trades = make_trades(40)
    events = {TRADES: trades}
    pipeline = TradesPipeline()
    pipeline.prepare(events)
    with transaction.atomic():
        pipeline.store(events)
    counts = candle_trade_counts()
    read, carry_on = threading.Event(), threading.Event()

    def pause_once_the_days_are_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "market_retiredtradeday" in sql and not read.is_set():
            read.set()
            carry_on.wait(30)
        return result

    def store_again():
        again = TradesPipeline()
        again.prepare(events)
        with connection.execute_wrapper(pause_once_the_days_are_read), transaction.atomic():
            again.store(events)

    errors = []
    member = in_a_thread(store_again, errors)
    assert read.wait(30)
    retention = in_a_thread(retention_of_old_trades, errors)
    until_a_transaction_waits_for_a_lock(or_else=lambda: not retention.is_alive())
    if not retention.is_alive():
        TradesPipeline().prepare(events)  # the other member: the day's partition again
    carry_on.set()
    member.join()
    retention.join()
    assert not errors
    assert not TradeRow.objects.exists()
    assert candle_trade_counts() == counts


def test_a_stream_of_nothing_but_poison_stops_the_consumer(kafka_topics, redis_clean):
    publish([("AAPL", b"garbage %d" % i) for i in range(30)])
    runner = make_runner(max_consecutive_poison=20, batch_size=10)
    with pytest.raises(TooMuchPoison):
        consume_until(runner, 30)
    runner.close()
    assert TradeRow.objects.count() == 0


def test_each_changed_candle_is_published_once_per_batch_with_its_stored_state(kafka_topics, redis_clean):
    from django.db import transaction

    from streaming.schemas import Candle as CandleMessage
    from streaming.schemas import decoder_for
    from streaming.topics import CANDLES

    trades = make_trades(40, symbols=("AAPL",))
    pipeline = TradesPipeline()
    events = {TRADES: trades + trades[:10]}
    pipeline.prepare(events)
    with transaction.atomic():
        result = pipeline.store(events)
    pipeline.after_commit(result)
    pipeline.close()
    published = [decoder_for(CandleMessage).decode(m.value()) for m in read_topic(topic(CANDLES))]
    assert len(published) == len({c.id for c in published}) == Candle.objects.count()
    minutes = {t.ts.replace(second=0, microsecond=0) for t in trades}
    assert len([c for c in published if c.interval == "1m"]) == len(minutes)
    day = next(c for c in published if c.interval == "1d")
    assert day.trades == 40
    assert day.open == trades[0].price and day.close == trades[-1].price


def test_the_broker_gathers_a_batch_for_the_batch_wait(kafka_topics):
    # Ten small flushes 50 ms apart. The broker holds a runner's fetch for its whole batch wait
    # (2 s here), so they arrive in one batch, or two if a fetch's wait ends among them; with a
    # 1 ms wait each flush comes as it is sent.
    published = 0

    def batch_sizes(batch_wait: float, group: str) -> list[int]:
        nonlocal published
        runner = ConsumerRunner(IdlePipeline(name="batch_wait_probe", topics=(TRADES,)),
                                RunnerOptions(batch_size=1000, batch_wait=batch_wait, group_id=group))
        try:
            runner.subscribe()
            publish_trades(make_trades(1))  # once it is read, the runner is assigned and at the end
            published += 1
            consume_until(runner, published)

            def trickle() -> None:
                publisher = EventPublisher(name="test")
                for trade in make_trades(50):
                    publisher.publish(topic(TRADES), trade.symbol, encode(trade))
                    if trade.seq % 5 == 0:
                        publisher.flush()
                        time.sleep(0.05)

            publisher = threading.Thread(target=trickle)
            publisher.start()
            sizes: list[int] = []
            wait_for(lambda: (sizes.append(runner.step()), sum(sizes) >= 50)[1], timeout=30, interval=0,
                     what="the trickle read")
            publisher.join()
            published += 50
            return [size for size in sizes if size]
        finally:
            runner.close()

    assert len(batch_sizes(2.0, "batch-wait-probe-long")) <= 3
    assert len(batch_sizes(0.001, "batch-wait-probe-short")) >= 5


def test_a_rebalance_during_a_batch_gather_neither_loses_nor_repeats_a_message(kafka_topics, redis_clean,
                                                                                monkeypatch):
    # The runner takes a batch's first message, then gathers the rest. Stretched here to 6 s, the
    # gather spans a second runner's joining the group: the first message's partition is then
    # either revoked (the newcomer reads it) or sought back to where PostgreSQL has it (read
    # again in the gather). Either way it must be stored once.
    monkeypatch.setattr(runner_module, "GATHER_SECONDS", 6.0)
    stored: list[str] = []

    class RecordingPipeline(IdlePipeline):
        def store(self, events) -> None:
            stored.extend(trade.id for trade in events[TRADES])

    def make(group_member: str) -> ConsumerRunner:
        runner = ConsumerRunner(RecordingPipeline(name=f"rebalance_probe_{group_member}", topics=(TRADES,)),
                                RunnerOptions(batch_size=1000, batch_wait=0.05, group_id=f"{kafka_topics}rebalance"))
        runner.subscribe()
        return runner

    first = make("first")
    wait_for(lambda: (first.step(), bool(first._assigned))[1], timeout=30, interval=0, what="an assignment")
    trades = make_trades(40, symbols=("AAPL", "MSFT", "NVDA", "TSLA", "JPM", "V"))
    publish_trades(trades)
    stop = threading.Event()

    def second_member() -> None:
        time.sleep(1.0)  # the first runner is in its gather by then
        runner = make("second")
        try:
            while not stop.is_set():
                runner.step()
        finally:
            runner.close()
            connection.close()

    joining = threading.Thread(target=second_member)
    joining.start()
    try:
        rebalances = first._rebalances
        first.step()
        assert first._rebalances > rebalances, "the rebalance came after the gather: nothing was tested"
        wait_for(lambda: (first.step(), len(stored) >= len(trades))[1], timeout=60, interval=0,
                 what="every trade stored")
        time.sleep(1.0)  # anything stored twice would be by now
    finally:
        stop.set()
        joining.join()
        first.close()
    assert sorted(stored) == sorted(trade.id for trade in trades)


def test_the_trades_consumer_starts_and_stores_while_redis_is_away(kafka_topics, redis_clean, settings, caplog,
                                                                  monkeypatch):
    # Its heartbeat and the latest trade wait for Redis; the trades and candles do not. The relay,
    # whose channel layer is Redis, still waits for it to start.
    from streaming import redis as redis_module
    from streaming.testing import redis_refusing

    monkeypatch.setattr(redis_module, "RETRY_SECONDS", 0)
    publish_trades(make_trades(60))
    with redis_refusing(settings):
        runner_module.preflight(wait_seconds=0, redis=TradesPipeline.requires_redis)
        runner = make_runner()
        consume_until(runner, 60)
    assert TradeRow.objects.count() == 60
    assert candle_trade_counts()["1d"] == 60
    assert any("no heartbeats until it does" in record.getMessage() for record in caplog.records)
    publish_trades(make_trades(2, symbols=("NVDA",), prefix="n"))
    consume_until(runner, 2)  # Redis is back: the newest trade of each symbol, what waited included
    runner.close()
    assert {key.decode() for key in redis_clean.keys("finstream:latest:trade:*")} == {
        f"finstream:latest:trade:{symbol}" for symbol in ("AAPL", "MSFT", "NVDA")}
    assert redis_clean.exists("finstream:heartbeat:build_candles")


@pytest.mark.django_db
def test_a_consumer_starting_during_an_outage_waits_for_the_services(settings, caplog):
    # Redis comes back 2 s into the wait: the consumer goes on, where it used to exit at once (and
    # supervisord, after three quick exits, left it stopped for good).
    import socket
    import subprocess

    from django.core.management.base import CommandError

    from streaming.redis import redis_client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    redis_client.cache_clear()
    servers: list[subprocess.Popen] = []
    late = threading.Timer(2.0, lambda: servers.append(subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL)))
    try:
        late.start()
        started = time.monotonic()
        runner_module.preflight(wait_seconds=60)
        assert time.monotonic() - started >= 2
        assert any("waiting for the services" in r.getMessage() and f"127.0.0.1:{port}" in r.getMessage()
                   for r in caplog.records)
    finally:
        late.join()
        for server in servers:
            server.kill()
            server.wait(10)
        redis_client.cache_clear()
    # Still away when the wait ends: one line saying what.
    with pytest.raises(CommandError, match=f"Redis at redis://127.0.0.1:{port}/0 did not answer"):
        runner_module.preflight(wait_seconds=1)
    redis_client.cache_clear()


def test_a_file_replayed_again_is_not_refused_by_postgresql_batch_after_batch(kafka_topics, redis_clean):
    # A second replay of a file repeats every trade. Once a batch held repeats, the next ones go straight
    # to INSERT ... ON CONFLICT DO NOTHING: the plain INSERT tried first would be refused by the primary
    # key, which PostgreSQL logs as an ERROR, every batch. A batch of new trades goes back to it.
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    trades = make_trades(60)
    pipeline = TradesPipeline()

    def inserts(batch):
        events = {TRADES: batch}
        pipeline.prepare(events)
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            result = pipeline.store(events)
        pipeline.after_commit(result)
        kinds = ["upsert" if "ON CONFLICT" in q["sql"] else "plain" for q in queries.captured_queries
                 if "INSERT INTO market_trade" in q["sql"]]
        return kinds, len(result.trades)

    assert inserts(trades[:20]) == (["plain"], 20)
    assert inserts(trades[:20]) == (["plain", "upsert"], 0)  # refused: repeats
    assert inserts(trades[:20]) == (["upsert"], 0)
    assert inserts(trades[20:40]) == (["upsert"], 20)
    assert inserts(trades[40:]) == (["plain"], 20)
    # A trade twice in one batch, with other values the second time: the first is stored and counted,
    # on either path.
    first, second = make_trades(2, prefix="twice")
    assert inserts([first, msgspec.structs.replace(first, price=first.price + 1)]) == (["plain", "upsert"], 1)
    assert inserts([second, msgspec.structs.replace(second, size=second.size + 1)]) == (["upsert"], 1)
    pipeline.close()
    assert TradeRow.objects.count() == 62
    assert candle_trade_counts() == {i: 62 for i in ("1m", "5m", "15m", "1h", "4h", "1d")}
    assert {(row.trade_id, row.price, row.size) for row in TradeRow.objects.filter(trade_id__startswith="twice")} == {
        (first.id, first.price, first.size), (second.id, second.price, second.size)}
