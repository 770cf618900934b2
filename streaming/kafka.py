"""Kafka clients: the one producer configuration, consumer and admin factories.

Everything that talks to the broker is built here, so that tuning (batching,
compression, idempotence, timeouts) is decided once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

from finstream import tracing
from streaming import metrics
from streaming.topics import TOPIC_SPECS, TopicSpec

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The broker did not answer: the message says where and what to do."""


def _base_config() -> dict[str, object]:
    return {"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "client.id": "finstream", "log_level": 4}


def producer_config(**overrides: object) -> dict[str, object]:
    return {
        **_base_config(),
        # Idempotence: a retried batch is written once and in order per partition.
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": settings.KAFKA_PRODUCER_LINGER_MS,
        "batch.size": 512 * 1024,
        # The local queue is the bounded buffer between us and the broker; when
        # it is full, publish() waits for deliveries instead of dropping.
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        **overrides,
    }


def consumer_config(group_id: str, **overrides: object) -> dict[str, object]:
    return {
        **_base_config(),
        "group.id": group_id,
        # Offsets live in PostgreSQL; Kafka's copy is committed after each
        # database commit only so that lag tools see progress.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Eager rebalancing: the runner seeks every assigned partition to the
        # offset PostgreSQL holds, which assign() in on_assign does in one call.
        "partition.assignment.strategy": "range",
        # A consumer killed without leaving (kill -9, a lost host) holds its partitions until the broker
        # misses its heartbeats for this long: 45 s by default, a minute and more of no ingest after each
        # crash. librdkafka heartbeats from its own thread, so a long batch does not count against it.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
        "queued.max.messages.kbytes": 64 * 1024,
        **overrides,
    }


def admin_client(**overrides: object) -> AdminClient:
    return AdminClient({**_base_config(), **overrides})


def unreachable_message(timeout: float) -> str:
    return (
        f"Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS} did not answer in {timeout:.0f} s: "
        "is it running? (`make status`)"
    )


def kafka_cluster_reachable(*, timeout: float) -> int:
    """Number of brokers in the cluster; raises KafkaUnavailable when none answers."""
    try:
        # Quiet: the caller turns "unreachable" into one clear line of its own.
        metadata = admin_client(log_level=0).list_topics(timeout=timeout)
    except KafkaException as error:
        raise KafkaUnavailable(unreachable_message(timeout)) from error
    return len(metadata.brokers)


def topics_ensure(specs: Sequence[TopicSpec] = TOPIC_SPECS, *, timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    admin = admin_client()
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as error:
        raise KafkaUnavailable(unreachable_message(timeout)) from error
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(spec.name, num_partitions=spec.partition_count, replication_factor=1, config=spec.config)
         for spec in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _leaders_wait(admin, [spec.name for spec in missing], timeout=timeout)
    return created


def topics_delete(*prefixes: str, timeout: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with one of `prefixes`, a test's or a benchmark's own, so
    that runs against a long-lived broker leave nothing behind; returns the names deleted.

    Each prefix ends in a separator (".", "-" or "_"), so run 12's cannot take run 123's, and none may
    cover a topic of the stack itself. Clean-up is best effort: a broker that does not answer is
    logged, not raised, so that it cannot hide the outcome of the run that is cleaning up."""
    for prefix in prefixes:
        if (len(prefix) < 6 or prefix[-1] not in ".-_" or prefix.startswith("__")
                or any(spec.base_name.startswith(prefix) for spec in TOPIC_SPECS)):
            raise ValueError(f"{prefix!r} could match topics that are not this run's: use its unique prefix, "
                             "ending in '.', '-' or '_'")
    admin = admin_client()  # held: its futures fail once the client is collected
    try:
        names = sorted(name for name in admin.list_topics(timeout=timeout).topics if name.startswith(prefixes))
        if names:
            for future in admin.delete_topics(names, operation_timeout=timeout).values():
                try:
                    future.result(timeout=timeout)
                except KafkaException as error:
                    if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # gone already
                        raise
    except (KafkaException, TimeoutError) as error:
        log.warning("could not delete the topics %s*: %s", "*, ".join(prefixes), error)
        return []
    return names


def _leaders_wait(admin: AdminClient, names: list[str], *, timeout: float) -> None:
    """Return once every partition of `names` has a leader: a topic is created before its
    partitions are, and a client that asks for offsets in between is told NOT_LEADER."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].error is None and topics[name].partitions
               and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
               for name in names):
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"topics {', '.join(names)} have no leader for every partition after "
                                   f"{timeout:.0f} s: is the broker healthy?")
        time.sleep(0.1)


class DeliveryFailed(RuntimeError):
    """The broker refused or timed out a message the producer had accepted."""


class EventPublisher:
    """The shared producer: publish() never drops and never spins.

    When librdkafka's local queue is full, publish() serves delivery reports
    until there is room again (back-pressure). Only failed deliveries are
    reported back to Python (a callback per delivered message would cost more
    than producing it); a failure is counted and re-raised from the next
    publish() or publish_many() call (a batch already being published
    finishes first) or from flush(), so a producer never exits 0 having lost
    something it accepted.
    """

    def __init__(self, *, name: str, **config_overrides: object) -> None:
        self.name = name
        # One callback for the producer rather than one per message: passing on_delivery= to every
        # produce() costs a tenth of the call.
        self._producer = Producer(producer_config(**{"delivery.report.only.error": True,
                                                     "on_delivery": self._on_failure, **config_overrides}))
        self._failure: KafkaError | None = None
        self._accepted = 0
        self._failed = 0
        self._delivered_reported = 0
        self._delivered_metric = metrics.MESSAGES_PRODUCED.labels(producer=name, outcome="delivered")
        self._failed_metric = metrics.MESSAGES_PRODUCED.labels(producer=name, outcome="failed")
        self._produce = self._producer.produce

    def _on_failure(self, error: KafkaError | None, _message) -> None:
        if error is not None:
            self._failed += 1
            self._failed_metric.inc()
            self._failure = self._failure or error

    def publish(self, topic: str, key: bytes | str | None, value: bytes, headers: list | None = None,
                timestamp_ms: int = 0) -> None:
        self.publish_many(((topic, key, value, timestamp_ms),), headers)

    def publish_many(self, messages: Iterable[tuple[str, bytes | str | None, bytes, int]],
                     headers: list | None = None) -> int:
        """Publish each (topic, key, value, timestamp_ms) of ``messages``, all with ``headers``; returns how
        many. A batch at a time, a feed pays for the checks and look-ups once, not per message."""
        if self._failure is not None:
            raise DeliveryFailed(f"delivery to Kafka failed: {self._failure}")
        if headers is None and tracing.tracer() is not None:
            headers = tracing.current_headers()  # what a consumer publishes continues its batch's traces
        produce = self._produce
        accepted = 0
        try:
            for topic, key, value, timestamp_ms in messages:
                while True:
                    try:
                        # Positional: topic, value, key, partition (-1: by key), callback and its alias
                        # on_delivery (None: the producer's), timestamp, headers. Keywords cost the C
                        # extension a dictionary per call.
                        produce(topic, value, key, -1, None, None, timestamp_ms, headers)
                        break
                    except BufferError:
                        self._producer.poll(0.05)  # the local queue is full: serve deliveries until there is room
                accepted += 1
        finally:
            self._accepted += accepted
        return accepted

    @property
    def delivered(self) -> int:
        """Messages the broker has acknowledged so far."""
        return self._accepted - self._failed - len(self._producer)

    def _report_delivered(self) -> None:
        # len(producer) also counts librdkafka's pending events, so this
        # estimate can dip for a moment; the counter only ever moves up.
        delivered = self.delivered
        if delivered > self._delivered_reported:
            self._delivered_metric.inc(delivered - self._delivered_reported)
            self._delivered_reported = delivered

    def poll(self, timeout: float = 0.0) -> int:
        served = self._producer.poll(timeout)
        self._report_delivered()
        return served

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every accepted message is delivered; raises if one was not."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        self._report_delivered()
        if remaining:
            raise DeliveryFailed(f"{remaining} messages still undelivered after {timeout:.0f} s: "
                                 f"{unreachable_message(timeout)}")
        if self._failure is not None:
            raise DeliveryFailed(f"delivery to Kafka failed: {self._failure}")

    def __len__(self) -> int:
        return len(self._producer)
