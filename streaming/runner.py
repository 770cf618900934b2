"""The one consumer runner every long-running Kafka consumer is built on.

A pipeline says which topics it reads and what to do with a decoded batch; the
runner does the rest, one `step()` at a time:

1. consume a batch: what the broker gathered for CONSUMER_BATCH_WAIT_MS, up to
   CONSUMER_BATCH_SIZE messages (see "Batches" below);
2. decode each message with its topic's schema; what fails is poison;
3. send poison to the dead-letter topic and flush (many in a row: stop);
4. `pipeline.prepare(events)` outside any transaction (e.g. create partitions);
   `events.event_time` says how far every partition has got in event time;
5. in ONE transaction: `pipeline.store(events)` and the next offsets;
6. after the commit: `pipeline.after_commit(result)` (publish what was
   stored; the relay, which stores nothing, publishes in store()), then
   commit the offsets to Kafka too, for lag tools only.

PostgreSQL holds the offsets: on assignment the runner seeks each partition to
the offset stored with the data. A crash anywhere re-reads exactly the
messages whose effect was not committed.

Batches: the broker gathers them. The consumer asks it to hold each fetch
until the batch wait has passed (fetch.wait.max.ms), unless FETCH_MIN_BYTES
are there sooner. The runner waits for a fetch's first message (up to
IDLE_POLL_SECONDS) and takes the rest of it within GATHER_SECONDS. With
librdkafka's fetch.min.bytes=1, the broker answers a fetch for every producer
request that reaches it (~200 a second at 10k trades/s, for each consumer):
with the stack's four consumers that was a third of the broker's CPU, and a
sixth of the store consumers' own (bench/RESULTS.md, issue 7). While a fetch
is held, other requests on its connection wait behind it (a broker answers a
connection's requests in order): hence the wait is bounded at 10 s. With
several brokers, each answers on its own cycle and a batch holds what one
answered.

Failures: poison is dead-lettered; a database that is away is retried with
bounded back-off and then the runner exits non-zero with the batch's offsets
unmoved (the supervisor restarts it); a batch that found the partition it
writes to dropped by retention is stored again (prepare() and store() both,
so that it sees the days retired); anything else is a bug and propagates.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec
from confluent_kafka import OFFSET_BEGINNING, OFFSET_STORED, Consumer, KafkaError, KafkaException, TopicPartition
from django.conf import settings
from django.db import IntegrityError, OperationalError, close_old_connections, connection, transaction
from psycopg.errors import CheckViolation
from redis.exceptions import RedisError

from finstream import tracing
from finstream.errors import DATABASE_AWAY
from streaming import heartbeats, metrics
from streaming.dead_letters import Poison, dead_letters_send
from streaming.event_time import EventTimeWatermark
from streaming.kafka import EventPublisher, KafkaUnavailable, consumer_config, kafka_cluster_reachable
from streaming.offsets import offsets_load, offsets_save
from streaming.redis import REDIS_AWAY, RedisRetry, redis_client
from streaming.schemas import TOPIC_SCHEMAS, decoder_for
from streaming.topics import QUOTES, TRADES, topic

log = logging.getLogger(__name__)



class Events(dict[str, list[Any]]):
    """A decoded batch: base topic name -> messages, in partition order.

    ``event_time``: base topic name -> its watermark, an event time that every
    assigned partition of the topic has reached (streaming/event_time.py);
    a topic whose watermark is not known yet is absent.
    """

    __slots__ = ("event_time",)

    def __init__(self, *args: Any, event_time: dict[str, datetime] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_time = event_time if event_time is not None else {}


class Pipeline(Protocol):
    """What one consumer does with its batches. See market/pipelines.py."""

    name: str
    topics: tuple[str, ...]  # base topic names, e.g. ("market.trades",)
    # Whether it cannot work without Redis (the relay's channel layer). The others start and run
    # while Redis is away: only their heartbeats and what they keep in Redis wait for it.
    requires_redis: bool

    def prepare(self, events: Events) -> None:
        """Work that must happen outside the batch's transaction (idempotent)."""

    def store(self, events: Events) -> Any:
        """Write the batch; runs inside the transaction that also stores offsets."""

    def after_commit(self, result: Any) -> None:
        """Publish what the committed batch produced. Must not write to PostgreSQL."""

    def close(self) -> None:
        """Flush what after_commit published; called once when the runner stops."""


class TooMuchPoison(RuntimeError):
    pass


# More than a batch wait brings at the simulator's 10k trades/s (trades and quotes: ~600 kB in the
# stores' 200 ms), so that the wait ends a fetch (at higher rates this does, sooner: still a few
# fetches a second); no more than a broker counts from one partition (librdkafka's
# max.partition.fetch.bytes), so that a backlog ends it at once.
FETCH_MIN_BYTES = 1024 * 1024
# How long an idle step() waits for a fetch to bring messages. It returns as soon as one is in;
# longer only delays a stop request, shorter costs empty wake-ups.
IDLE_POLL_SECONDS = 0.1
# Once a fetch's first message is in, how long the runner waits for the rest of that fetch: the
# client hands over a response's partitions one after another, microseconds apart.
GATHER_SECONDS = 0.001


# How long a consumer starting waits for PostgreSQL, Redis and Kafka before it gives up (and its supervisor
# starts it again): longer than supervisord's startsecs, so that an outage of any length ends in a restart.
PREFLIGHT_WAIT_SECONDS = 60.0


class DatabaseUnavailable(RuntimeError):
    pass


@dataclass
class RunnerOptions:
    batch_size: int = field(default_factory=lambda: settings.CONSUMER_BATCH_SIZE)
    batch_wait: float = field(default_factory=lambda: settings.CONSUMER_BATCH_WAIT_MS / 1000)
    max_consecutive_poison: int = field(default_factory=lambda: settings.CONSUMER_MAX_CONSECUTIVE_POISON)
    database_retries: int = 5
    group_id: str | None = None


class ConsumerRunner:
    LATENCY_SAMPLES_PER_BATCH = 64

    def __init__(self, pipeline: Pipeline, options: RunnerOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or RunnerOptions()
        self.group_id = self.options.group_id or f"{settings.KAFKA_CONSUMER_GROUP_PREFIX}.{pipeline.name}"
        self._topic_base = {topic(base): base for base in pipeline.topics}
        self._decoders = {name: decoder_for(TOPIC_SCHEMAS[base]) for name, base in self._topic_base.items()}
        # Market events from producers: their event time is checked against the clock.
        self._timed_topics = {name for name, base in self._topic_base.items() if base in (TRADES, QUOTES)}
        self._max_ahead = timedelta(seconds=settings.EVENT_TIME_MAX_AHEAD_SECONDS)
        self._consumer = Consumer(consumer_config(self.group_id, **{
            "fetch.wait.max.ms": max(1, round(self.options.batch_wait * 1000)), "fetch.min.bytes": FETCH_MIN_BYTES}))
        self._log_context = {"consumer": pipeline.name, "consumer_group": self.group_id}  # JSON log fields
        self._dead_letters: EventPublisher | None = None
        self._stop_requested = False
        self._consecutive_poison = 0
        self._last_heartbeat = 0.0
        self._heartbeat_retry = RedisRetry()
        self._last_lag_update = 0.0
        # Each assigned partition and the offset reading starts at: PostgreSQL's, else the group's
        # in Kafka (None until asked), else OFFSET_BEGINNING.
        self._assigned: dict[tuple[str, int], int | None] = {}
        self._rebalances = 0  # assignments and revocations so far: step() checks none ran in its gather
        self._next_start_lookup = 0.0
        self._watermarks = {base: EventTimeWatermark() for base in pipeline.topics}
        self._processed = {
            (name, outcome): metrics.MESSAGES_PROCESSED.labels(consumer=pipeline.name, topic=base, outcome=outcome)
            for name, base in self._topic_base.items()
            for outcome in ("processed", "dead_lettered")
        }
        self._latency = metrics.PROCESSING_LATENCY.labels(consumer=pipeline.name)
        self._batch_size = metrics.BATCH_SIZE.labels(consumer=pipeline.name)

    # --- lifecycle -----------------------------------------------------------------
    def subscribe(self) -> None:
        self._consumer.subscribe(list(self._topic_base), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    def request_stop(self) -> None:
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: finish the batch and stop. A second: exit at once."""

        def handle(signum, _frame):
            if self._stop_requested:
                raise SystemExit(128 + signum)
            log.info("%s: stopping after the current batch (signal %d)", self.pipeline.name, signum,
                     extra=self._log_context)
            self._stop_requested = True

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> None:
        self.subscribe()
        log.info("%s: consuming %s as group %s", self.pipeline.name, ", ".join(self._topic_base), self.group_id,
                 extra=self._log_context)
        try:
            while not self._stop_requested:
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        self._consumer.close()
        self.pipeline.close()
        if self._dead_letters is not None:
            self._dead_letters.flush()

    # --- rebalance -----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        close_old_connections()
        stored = offsets_load(group=self.group_id, topics=[tp.topic for tp in partitions])
        for tp in partitions:
            start = stored.get((tp.topic, tp.partition))
            tp.offset = OFFSET_STORED if start is None else start
            self._assigned[(tp.topic, tp.partition)] = start
        self._next_start_lookup = 0.0
        consumer.assign(partitions)
        log.info("%s: assigned %s", self.pipeline.name,
                 ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions) or "nothing",
                 extra=self._log_context)

    def _start_from_kafka(self, keys: list[tuple[str, int]]) -> None:
        """Where partitions PostgreSQL holds no offset for start: the group's offset in Kafka, or
        their beginning. Only the event-time watermark needs it, to know whether such a partition
        has anything to read before it delivers a message; asked outside the rebalance callback,
        and again a few seconds later if Kafka does not answer."""
        try:
            committed = self._consumer.committed([TopicPartition(*key) for key in keys], timeout=2)
        except KafkaException as error:
            log.warning("%s: could not read committed offsets from Kafka (retrying): %s", self.pipeline.name,
                        error, extra=self._log_context)
            self._next_start_lookup = time.monotonic() + 5.0
            return
        for tp in committed:
            key = (tp.topic, tp.partition)
            if key in self._assigned:
                self._assigned[key] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing to flush: rebalance callbacks run inside poll() and consume(), and a batch is
        # committed before the next poll(). A callback during step()'s gather is handled there.
        self._rebalances += 1
        for tp in partitions:
            self._assigned.pop((tp.topic, tp.partition), None)
            self._watermarks[self._topic_base[tp.topic]].forget([(tp.topic, tp.partition)])
        consumer.unassign()

    # --- one iteration -------------------------------------------------------------
    def step(self) -> int:
        """Consume, store and publish one batch; returns how many messages it held (0 when no fetch
        brought any within IDLE_POLL_SECONDS)."""
        # consume() returns only once it has batch_size messages or its timeout has passed: the
        # first message is awaited on its own, so that a batch is taken the moment it is in.
        first = self._consumer.poll(IDLE_POLL_SECONDS)
        self._beat()
        if first is None:
            return 0
        messages = [first]
        if self.options.batch_size > 1:
            rebalances = self._rebalances
            gathered = self._consumer.consume(self.options.batch_size - 1, GATHER_SECONDS)
            if self._rebalances == rebalances:
                messages += gathered
            else:
                # The gather ran a rebalance. `first` may be from a partition revoked since (its new
                # owner reads it from PostgreSQL) or sought back to PostgreSQL's offset (and read
                # again in this gather): either way it is not this batch's. librdkafka has dropped
                # whatever else it had fetched for the old assignment.
                messages = gathered
                if not messages:
                    return 0
        batch: defaultdict[str, list[Any]] = defaultdict(list)
        poison: list[Poison] = []
        next_offsets: dict[tuple[str, int], int] = {}
        newest: dict[tuple[str, int], Any] = {}  # per partition, its last decoded message
        decoders, topic_base, timed = self._decoders, self._topic_base, self._timed_topics
        latest_allowed = datetime.now(UTC) + self._max_ahead
        # The per-message loop does only what each message needs: counts and
        # latency samples are taken from the results afterwards.
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            name = message.topic()
            key = (name, message.partition())
            next_offsets[key] = message.offset() + 1
            try:
                value = decoders[name].decode(message.value() or b"")
            except msgspec.DecodeError as decode_error:
                poison.append(Poison(name, message.partition(), message.offset(), message.key(), message.value(),
                                     str(decode_error)))
                continue
            if name in timed and value.ts > latest_allowed:
                poison.append(Poison(name, message.partition(), message.offset(), message.key(), message.value(),
                                     f"ts {value.ts.isoformat()} is ahead of this consumer's clock by more than "
                                     f"EVENT_TIME_MAX_AHEAD_SECONDS ({self._max_ahead.total_seconds():.0f} s): is the "
                                     "producer's clock wrong?"))
                continue
            batch[topic_base[name]].append(value)
            newest[key] = value
        events = Events(batch, event_time=self._event_time(newest))

        with tracing.consumed_batch(f"{self.pipeline.name} batch", self._traceparents(messages),
                                    {"messaging.system": "kafka", "messaging.consumer.group.name": self.group_id,
                                     "messaging.batch.message_count": len(messages)}):
            self._handle_poison(poison, good=len(messages) - len(poison))
            result = self._store_with_retries(events, next_offsets)
            with tracing.step("after_commit"):
                self.pipeline.after_commit(result)
        self._consumer.commit(
            offsets=[TopicPartition(name, partition, offset) for (name, partition), offset in next_offsets.items()],
            asynchronous=True,
        )
        self._record(len(messages), events, poison)
        return len(messages)

    @staticmethod
    def _traceparents(messages: list) -> list[bytes]:
        """Producers' trace contexts from a batch, read only when tracing is on, and only from
        evenly spaced messages: a batch span keeps MAX_LINKS links, and reading every
        message's headers would cost more than the span."""
        if tracing.tracer() is None:
            return []
        stride = max(1, len(messages) // (2 * tracing.MAX_LINKS))
        return [value for message in messages[::stride] for key, value in (message.headers() or ())
                if key == tracing.TRACEPARENT and value]

    def _event_time(self, newest: dict[tuple[str, int], Any]) -> dict[str, datetime]:
        for (name, partition), value in newest.items():
            self._watermarks[self._topic_base[name]].observe((name, partition), value.ts)
        pending: dict[str, list[tuple[str, int]]] = {base: [] for base in self._watermarks}
        assigned = [TopicPartition(name, partition) for name, partition in self._assigned]
        # All local: the position after the last message consumed (none yet: the offset the
        # partition was assigned at) and the offsets of the last fetch response.
        positions = self._consumer.position(assigned) if assigned else []
        unknown = [(tp.topic, tp.partition) for tp in positions
                   if tp.offset < 0 and self._assigned.get((tp.topic, tp.partition)) is None]
        if unknown and time.monotonic() >= self._next_start_lookup:
            self._start_from_kafka(unknown)
        for tp in positions:
            key = (tp.topic, tp.partition)
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = tp.offset if tp.offset >= 0 else self._assigned.get(key)
            if position == OFFSET_BEGINNING or (position is not None and 0 <= low <= high
                                                 and not low <= position <= high):
                position = low  # out of range: auto.offset.reset=earliest reads from the beginning
            if position is None or high < 0 or position < 0 or position < high:
                pending[self._topic_base[tp.topic]].append(key)  # behind, or not known to be read
        progress = {base: watermark.advance(pending[base]) for base, watermark in self._watermarks.items()}
        return {base: ts for base, ts in progress.items() if ts is not None}

    def _handle_poison(self, poison: list[Poison], *, good: int) -> None:
        if not poison:
            if good:
                self._consecutive_poison = 0
            return
        if self._dead_letters is None:
            self._dead_letters = EventPublisher(name=f"{self.pipeline.name}.dead_letters")
        for item in poison:
            log.warning("%s: dead-lettering %s[%d]@%d: %s", self.pipeline.name, item.topic, item.partition,
                        item.offset, item.error, extra={**self._log_context, "topic": item.topic,
                                                        "partition": item.partition, "offset": item.offset})
            metrics.DEAD_LETTERS.labels(consumer=self.pipeline.name, topic=self._topic_base[item.topic]).inc()
        dead_letters_send(publisher=self._dead_letters, consumer=self.pipeline.name, poison=poison)
        self._consecutive_poison = len(poison) if good else self._consecutive_poison + len(poison)
        if self._consecutive_poison >= self.options.max_consecutive_poison:
            raise TooMuchPoison(
                f"{self._consecutive_poison} undecodable messages in a row: stopping rather than dead-lettering "
                "the whole stream (is a producer on the wrong schema?). Their offsets are committed; inspect "
                "the dead-letter topic and restart."
            )

    def _store_with_retries(self, events: Events, next_offsets: dict[tuple[str, int], int]) -> Any:
        delay = 0.5
        for attempt in range(1, self.options.database_retries + 1):
            try:
                with tracing.step("prepare"):
                    self.pipeline.prepare(events)
                with tracing.step("store"), transaction.atomic():
                    result = self.pipeline.store(events)
                    offsets_save(group=self.group_id, offsets=next_offsets)
                return result
            except IntegrityError as error:
                if not _partition_dropped(error) or attempt == self.options.database_retries:
                    raise
                log.info("%s: retention dropped a partition this batch was writing to; storing the batch again",
                         self.pipeline.name, extra=self._log_context)
            except DATABASE_AWAY as error:
                # Away, restarting, or refusing this try (a deadlock, a serialization failure).
                log.warning("%s: PostgreSQL did not store the batch (attempt %d/%d): %s", self.pipeline.name,
                            attempt, self.options.database_retries, error, extra=self._log_context)
                connection.close()
                if attempt == self.options.database_retries:
                    raise DatabaseUnavailable(
                        f"PostgreSQL did not store the batch in {attempt} attempts: {error}".strip()
                    ) from error
                self._sleep_unless_stopped(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop_requested:
            time.sleep(0.05)

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= 1.0 and self._heartbeat_retry.due():
            self._last_heartbeat = now
            try:
                heartbeats.heartbeat(self.pipeline.name)
            except REDIS_AWAY as error:
                if not self._heartbeat_retry.away:
                    log.warning("%s: Redis did not answer (%s): no heartbeats until it does (/ready and the "
                                "pipeline page cannot tell this consumer is alive meanwhile)",
                                self.pipeline.name, error, extra=self._log_context)
                self._heartbeat_retry.failed()
            else:
                if self._heartbeat_retry.away:
                    log.info("%s: Redis answers again: heartbeats resumed", self.pipeline.name,
                             extra=self._log_context)
                self._heartbeat_retry.answered()
        if now - self._last_lag_update >= 5.0:
            self._last_lag_update = now
            self._update_lag()

    def _update_lag(self) -> None:
        partitions = [TopicPartition(name, partition) for name, partition in sorted(self._assigned)]
        if not partitions:
            return
        for tp in self._consumer.position(partitions):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                metrics.CONSUMER_LAG.labels(consumer=self.pipeline.name, topic=self._topic_base[tp.topic],
                                            partition=str(tp.partition)).set(max(0, high - tp.offset))

    def _record(self, size: int, events: Events, poison: list[Poison]) -> None:
        self._batch_size.observe(size)
        for name, base in self._topic_base.items():
            if events.get(base):
                self._processed[(name, "processed")].inc(len(events[base]))
        for item in poison:
            self._processed[(item.topic, "dead_lettered")].inc()
        # A sample of each batch: observing every message would cost more than
        # the rest of the bookkeeping at 100k messages/s.
        values = [value for batch in events.values() for value in batch]
        if values:
            now = time.time()
            step = max(1, len(values) // self.LATENCY_SAMPLES_PER_BATCH)
            for value in values[::step]:
                self._latency.observe(max(0.0, now - value.ts.timestamp()))


def _partition_dropped(error: IntegrityError) -> bool:
    """Whether a row found no partition (a check violation of no constraint, whatever the server's
    language): prepare() made them all, so retention dropped one since."""
    cause = error.__cause__
    return isinstance(cause, CheckViolation) and cause.diag.constraint_name is None


def _unreachable(*, redis: bool = True) -> str | None:
    """What of PostgreSQL, Redis (if `redis`) and Kafka cannot be reached, in one line; None when all
    answer."""
    try:
        connection.ensure_connection()
    except OperationalError as error:
        connection.close()
        database = settings.DATABASES["default"]
        return (f"PostgreSQL at {database['HOST']}:{database['PORT']}/{database['NAME']} refused the connection: "
                f"{str(error).strip().splitlines()[0]} (check TIMESCALE_URL; is it running? `make status`)")
    if redis:
        try:
            redis_client().ping()
        except RedisError as error:
            return (f"Redis at {settings.REDIS_URL} did not answer: {error} (check REDIS_URL; is it running? "
                    "`make status`)")
    try:
        kafka_cluster_reachable(timeout=10)
    except KafkaUnavailable as error:
        return str(error)
    return None


def preflight(*, wait_seconds: float = PREFLIGHT_WAIT_SECONDS, redis: bool = True) -> None:
    """Wait up to `wait_seconds` for PostgreSQL, Redis (if `redis`) and Kafka, saying what is missing, then
    fail in one line. A consumer that exited on an outage is restarted by its supervisor straight into this wait: were
    it to fail at once, supervisord would give up after three quick exits and leave it stopped for good."""
    from django.core.management.base import CommandError

    deadline = time.monotonic() + wait_seconds
    delay = 0.5
    while (problem := _unreachable(redis=redis)) is not None:
        if time.monotonic() + delay > deadline:
            raise CommandError(problem)
        log.warning("waiting for the services (up to %.0f s more): %s", deadline - time.monotonic(), problem)
        time.sleep(delay)
        delay = min(delay * 2, 8.0)


def run_pipeline(pipeline: Pipeline, *, on_start: Callable[[], None] | None = None,
                 options: RunnerOptions | None = None) -> None:
    """What a consumer command does: preflight, signals, metrics, then the loop until stopped."""
    preflight(redis=pipeline.requires_redis)
    tracing.configure(pipeline.name)
    runner = ConsumerRunner(pipeline, options)
    runner.install_signal_handlers()
    metrics.serve_metrics(settings.METRICS_PORT)
    if on_start:
        on_start()
    # What exists now (Django, settings, clients) lives as long as the process.
    # Frozen, the garbage collector stops rescanning it while every batch
    # allocates thousands of messages: ~1.8 us of ~10 us CPU per trade
    # (bench/candles_pipeline.py).
    gc.freeze()
    try:
        runner.run()
    except Exception:
        # In the log's own format (JSON lines where LOG_FORMAT=json), not only as the traceback the
        # command prints: a log shipper's level filter sees why the consumer stopped.
        log.exception("%s stopped on an error (its supervisor restarts it)", pipeline.name)
        raise
    finally:
        tracing.shutdown()
