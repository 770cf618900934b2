"""Helpers for tests and benchmarks that drive real Kafka: read a topic to its end,
wait for a condition with a deadline (tests never sleep for a fixed time) or for a
transaction to wait for a lock, sum a
metric in a /metrics scrape, a pipeline that does nothing (the runner's own
cost, as a baseline), Redis refusing connections for a while."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streaming.kafka import consumer_config

T = TypeVar("T")


@contextmanager
def redis_refusing(settings) -> Iterator[None]:
    """Within: the process's Redis client connects to a port where nothing listens, as when Redis is
    down; after: to the real one again. `settings` is pytest-django's fixture (or Django's)."""
    from streaming.redis import redis_client

    real_url = settings.REDIS_URL
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        settings.REDIS_URL = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
        redis_client.cache_clear()
        try:
            yield
        finally:
            settings.REDIS_URL = real_url
            redis_client.cache_clear()


@contextmanager
def database_refusing() -> Iterator[None]:
    """Within: this thread's PostgreSQL connection connects to a port where nothing listens, as
    when PostgreSQL is down; after: to the real one again. Not inside a test's transaction."""
    from django.db import connection

    real_port = connection.settings_dict["PORT"]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        connection.close()
        connection.settings_dict["PORT"] = str(closed.getsockname()[1])
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict["PORT"] = real_port


def wait_for(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def until_a_transaction_waits_for_a_lock(*, or_else=lambda: False) -> None:
    """Wait (on a connection of its own) until a transaction of this database waits for a lock, or
    until `or_else()`."""
    from django.db import connections

    watcher = connections.create_connection("default")
    try:
        def waiting() -> bool:
            with watcher.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND wait_event_type = 'Lock'")
                return cursor.fetchone()[0] > 0 or or_else()
        wait_for(waiting, what="a transaction waiting for a lock")
    finally:
        watcher.close()


def _end_offset(consumer: Consumer, partition: TopicPartition, *, timeout: float) -> int:
    """The partition's high watermark. A partition created a moment ago can answer NOT_LEADER for a
    while after the cluster's metadata names its leader, so that answer is asked again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=timeout)[1]
        except KafkaException as error:
            if error.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def read_topic(name: str, *, timeout: float = 30.0) -> list:
    """Every message now in `name`, from the beginning to the end offsets
    observed when called."""
    consumer = Consumer(consumer_config(f"reader-{uuid.uuid4().hex}"))
    try:
        metadata = consumer.list_topics(name, timeout=timeout)
        partitions = [TopicPartition(name, p) for p in metadata.topics[name].partitions]
        ends = {tp.partition: _end_offset(consumer, tp, timeout=timeout) for tp in partitions}
        consumer.assign([TopicPartition(name, p, 0) for p in ends])
        messages = []
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {name} to its end in {timeout:.0f} s")
            for message in consumer.consume(1000, 0.5):
                if message.error():
                    continue
                messages.append(message)
                if message.offset() + 1 >= ends[message.partition()]:
                    remaining.discard(message.partition())
        return messages
    finally:
        consumer.close()


def consume_until(runner, total: int, *, timeout: float = 60.0) -> int:
    """Step a ConsumerRunner until it has consumed at least `total` messages; returns how many."""
    seen = 0

    def step() -> bool:
        nonlocal seen
        seen += runner.step()
        return seen >= total

    wait_for(step, timeout=timeout, interval=0, what=f"{total} messages consumed by {runner.pipeline.name}")
    return seen


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` with the given labels in a Prometheus text
    exposition (0 when there are none)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


class IdlePipeline:
    """A runner pipeline that does nothing with its batches: what remains is the runner itself
    (consume, decode, store the offsets)."""

    requires_redis = False

    def __init__(self, *, name: str, topics: tuple[str, ...]) -> None:
        self.name = name
        self.topics = topics

    def prepare(self, events) -> None:
        pass

    def store(self, events) -> None:
        return None

    def after_commit(self, result) -> None:
        pass

    def close(self) -> None:
        pass
