"""The event-time watermark: pure rules, then the runner computing it from a real broker's
partitions read unevenly."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from django.conf import settings
from hypothesis import given
from hypothesis import strategies as st

from streaming.event_time import EventTimeWatermark
from streaming.kafka import consumer_config, producer_config
from streaming.models import ConsumerOffset
from streaming.runner import ConsumerRunner, Events, RunnerOptions
from streaming.schemas import Trade, encode
from streaming.testing import wait_for
from streaming.topics import TRADES, topic

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- pure ---------------------------------------------------------------------------------------

def test_the_partition_behind_holds_the_watermark_back():
    watermark = EventTimeWatermark()
    watermark.observe(0, at(600))
    watermark.observe(1, at(60))
    assert watermark.advance(pending=[0, 1]) == at(60)
    assert watermark.advance(pending=[0]) == at(600)  # partition 1 is read to its end


def test_a_partition_with_messages_to_read_and_no_known_time_makes_it_unknown():
    watermark = EventTimeWatermark()
    watermark.observe(0, at(600))
    assert watermark.advance(pending=[0, 1]) is None
    assert watermark.advance(pending=[]) == at(600)
    watermark.observe(0, at(700))
    assert watermark.advance(pending=[0, 1]) == at(600)  # unknown again: it stays where it was


def test_nothing_read_means_no_watermark():
    assert EventTimeWatermark().advance(pending=[]) is None


def test_a_revoked_partition_no_longer_counts():
    watermark = EventTimeWatermark()
    watermark.observe(0, at(10))
    watermark.observe(1, at(20))
    watermark.forget([1])
    assert watermark.advance(pending=[]) == at(10)


reads = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.sets(st.integers(0, 3))), max_size=60)


@given(reads)
def test_the_watermark_never_goes_back_and_never_passes_a_partition_behind(steps):
    watermark = EventTimeWatermark()
    latest: dict[int, datetime] = {}
    previous = None
    for partition, seconds, pending in steps:
        watermark.observe(partition, at(seconds))
        latest[partition] = max(latest.get(partition, at(seconds)), at(seconds))
        now = watermark.advance(pending)
        if previous is not None:
            assert now is not None and now >= previous
        if now is not None and now != previous:  # it moved: bounded by every partition behind
            assert all(now <= latest[p] for p in pending)
            assert now <= max(latest.values())
        previous = now


# --- the runner on a real broker -----------------------------------------------------------------

class RecordingPipeline:
    """Records, per batch, the watermark and how far each symbol had been read before it."""

    name = "watermark_probe"
    topics = (TRADES,)

    def __init__(self) -> None:
        self.read: dict[str, int] = {}
        self.latest: dict[str, datetime] = {}
        self.batches: list[tuple[datetime | None, dict[str, int], dict[str, datetime]]] = []

    def prepare(self, events: Events) -> None:
        for trade in events.get(TRADES, ()):
            self.read[trade.symbol] = self.read.get(trade.symbol, 0) + 1
            self.latest[trade.symbol] = max(self.latest.get(trade.symbol, trade.ts), trade.ts)
        self.batches.append((events.event_time.get(TRADES), dict(self.read), dict(self.latest)))

    def store(self, events: Events) -> None:
        return None

    def after_commit(self, result: None) -> None:
        pass

    def close(self) -> None:
        pass


def produce(partition: int, symbol: str, seconds: list[float], prefix: str) -> None:
    """Trades of one symbol into one partition of the trades topic, in order."""
    producer = Producer(producer_config())
    for i, second in enumerate(seconds):
        trade = Trade(id=f"{prefix}-{i}", symbol=symbol, ts=at(second), seq=i + 1, price=Decimal("10.00"),
                      size=Decimal(1), side="buy")
        producer.produce(topic(TRADES), encode(trade), symbol.encode(), partition=partition)
    assert producer.flush(30) == 0


def run(pipeline: RecordingPipeline, total: int, batch_size: int = 40) -> ConsumerRunner:
    runner = ConsumerRunner(pipeline, RunnerOptions(batch_size=batch_size, batch_wait=0.2))
    runner.subscribe()
    wait_for(lambda: (runner.step(), sum(pipeline.read.values()) >= total)[1], timeout=60, interval=0,
             what=f"{total} trades read")
    return runner


@pytest.mark.django_db(transaction=True)
def test_the_runner_holds_the_watermark_at_the_partition_behind(kafka_topics):
    # Partition 0 runs ten minutes ahead of partition 1: reading them unevenly, no batch may
    # claim a time that partition 1 has not reached while it still has trades to read.
    produce(0, "AAPL", [i * 0.5 for i in range(1200)], "fast")
    produce(1, "MSFT", [i * 5.0 for i in range(60)], "slow")
    pipeline = RecordingPipeline()
    run(pipeline, 1260).close()
    for watermark, read, latest in pipeline.batches:
        if watermark is None:
            continue
        for symbol, total in (("AAPL", 1200), ("MSFT", 60)):
            if read.get(symbol, 0) < total:
                assert symbol in latest and watermark <= latest[symbol], (watermark, read, latest)
    assert pipeline.batches[-1][0] == at(599.5)


@pytest.mark.django_db(transaction=True)
def test_an_empty_partition_does_not_hold_the_watermark(kafka_topics):
    produce(0, "AAPL", [float(i) for i in range(100)], "only")
    pipeline = RecordingPipeline()
    run(pipeline, 100).close()
    assert pipeline.batches[-1][0] == at(99)


def read_both_partitions_to_their_end() -> ConsumerRunner:
    """50 trades in each partition, read by a runner that is then closed."""
    produce(0, "AAPL", [float(i) for i in range(50)], "first")
    produce(1, "MSFT", [float(i) for i in range(50)], "first")
    first = run(RecordingPipeline(), 100)
    first.close()
    return first


def assert_restarted_watermark_follows_partition_0() -> None:
    """A restarted runner gets trades on partition 0 only: the watermark must follow them, since
    partition 1 has nothing to read. (Partition 1's end is known once a fetch of it answers, so
    trades go on until then.)"""
    produce(0, "AAPL", [float(i) for i in range(50, 60)], "second")
    second = RecordingPipeline()
    runner = run(second, 10)
    more = iter(range(60, 600))

    def caught_up() -> bool:
        second_ = float(next(more))
        produce(0, "AAPL", [second_], f"more-{second_}")
        runner.step()
        return second.batches[-1][0] == second.latest["AAPL"]

    wait_for(caught_up, timeout=30, interval=0.1, what="the watermark to follow partition 0")
    runner.close()
    assert set(second.read) == {"AAPL"}


@pytest.mark.django_db(transaction=True)
def test_a_partition_read_to_its_end_before_postgres_held_offsets_does_not_hold_it(kafka_topics):
    # The group's offsets are in Kafka but not in PostgreSQL (its database was restored): the
    # runner reads from Kafka's offsets, and partition 1, read to its end, must not count as behind.
    first = read_both_partitions_to_their_end()
    group = Consumer(consumer_config(first.group_id))
    group.commit(offsets=[TopicPartition(topic(TRADES), p, 50) for p in (0, 1)], asynchronous=False)
    group.close()
    ConsumerOffset.objects.all().delete()
    assert_restarted_watermark_follows_partition_0()


@pytest.mark.django_db(transaction=True)
def test_a_stored_offset_that_retention_deleted_does_not_hold_it(kafka_topics):
    # Partition 1's messages were deleted (retention) up to its end while the consumer was away,
    # and the offset PostgreSQL holds is below what is left: reading resumes at the partition's
    # start, where there is nothing to read, so it must not count as behind.
    from confluent_kafka.admin import AdminClient

    read_both_partitions_to_their_end()
    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    for future in admin.delete_records([TopicPartition(topic(TRADES), 1, 50)]).values():
        future.result(timeout=30)
    ConsumerOffset.objects.filter(partition=1).update(next_offset=10)
    assert_restarted_watermark_follows_partition_0()
