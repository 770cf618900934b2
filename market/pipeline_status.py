"""What the pipeline page shows: a read-only look at the whole pipeline.

- per topic and partition, Kafka's end offset, and each consumer group's
  committed offset and lag. The committed offsets are read from PostgreSQL
  (streaming_consumeroffset), which is the consumers' source of truth: Kafka's
  own copy is committed after the database's and only for lag tools;
- messages/s per topic (produced) and per group (consumed), from the last
  two samples of those offsets kept in Redis: any web process that renders the
  page adds a sample at most once a second, so the rate is the same for every
  viewer and needs no background job;
- the dead-letter topic: how many messages it retains and the newest ones,
  with the headers that say where each came from and why it failed;
- each long-running process's heartbeat, `/ready`'s report and the storage mode.

Kafka is asked with short timeouts: when it is away the page says so instead
of hanging (the rest of the page still renders).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition
from django.conf import settings
from django.db import connection
from redis.exceptions import RedisError

from finstream.readiness import readiness_report
from market import storage
from streaming import heartbeats
from streaming.dead_letters import HEADER_CONSUMER, HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC
from streaming.kafka import consumer_config
from streaming.topics import DEAD_LETTERS, TOPIC_SPECS, topic

log = logging.getLogger(__name__)

# Every long-running consumer, by the name it beats with (its pipeline's name).
PROCESSES = ("build_candles", "ingest_quotes", "detect_anomalies", "relay_streams")
# A beat older than this (they come about once a second) means the process is stuck or gone.
STALE_AFTER_SECONDS = 10.0
SAMPLES_KEY = "finstream:pipeline:samples:{}"  # the topic prefix: test runs keep their own
MIN_SAMPLE_SECONDS = 1.0
KAFKA_TIMEOUT_SECONDS = 2.0
DEAD_LETTER_PREVIEW_BYTES = 300


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end_offset: int
    committed: int | None  # next offset to read, as stored in PostgreSQL; None: never committed
    lag: int | None  # None: Kafka did not say where the partition ends


@dataclass(frozen=True)
class GroupLag:
    group: str
    consumer: str  # the group without KAFKA_CONSUMER_GROUP_PREFIX, e.g. "build_candles"
    partitions: list[PartitionLag]
    lag: int | None
    messages_per_second: float | None
    updated_at: datetime | None  # newest offset write: when the group last stored a batch


@dataclass(frozen=True)
class TopicStatus:
    name: str
    base_name: str
    end_offsets: dict[int, int]  # partition -> end offset (high watermark)
    messages_per_second: float | None
    groups: list[GroupLag] = field(default_factory=list)

    @property
    def end_total(self) -> int:
        return sum(self.end_offsets.values())


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    time: datetime | None
    key: str | None
    preview: str
    source_topic: str | None
    source_partition: str | None
    source_offset: str | None
    consumer: str | None
    error: str | None


@dataclass(frozen=True)
class ProcessState:
    name: str
    heartbeat_age: float | None
    required_by_ready: bool

    @property
    def state(self) -> str:
        if self.heartbeat_age is None:
            return "down"
        return "running" if self.heartbeat_age <= STALE_AFTER_SECONDS else "stale"


@dataclass(frozen=True)
class PipelineStatus:
    checked_at: datetime
    kafka_error: str | None
    topics: list[TopicStatus]
    dead_letter_topic: str
    dead_letter_count: int | None
    dead_letters: list[DeadLetter]
    processes: list[ProcessState]
    readiness: dict
    storage_mode: str | None
    partitions: dict[str, int]  # table -> partition count (partition mode only)
    redis_error: str | None = None  # Redis away: no rates, and the processes' heartbeats are unknown


def pipeline_status(*, dead_letter_limit: int = 10) -> PipelineStatus:
    """Everything the pipeline page shows. Blocks for at most about
    2 x KAFKA_TIMEOUT_SECONDS + readiness's deadline when services are away."""
    names = {spec.name: spec.base_name for spec in TOPIC_SPECS if spec.base_name != DEAD_LETTERS}
    dead_letter_topic = topic(DEAD_LETTERS)
    kafka_error = None
    ends: dict[str, dict[int, int]] = {}
    dead_count, dead_letters = None, []
    consumer = Consumer(consumer_config(f"finstream-pipeline-page-{uuid.uuid4().hex[:8]}", log_level=0))
    try:
        watermarks = _watermarks(consumer, [*names, dead_letter_topic])
        ends = {name: {p: high for p, (_low, high) in parts.items()} for name, parts in watermarks.items()
                if name in names}
        if dead_letter_topic in watermarks:
            dead_count = sum(high - low for low, high in watermarks[dead_letter_topic].values())
            dead_letters = _newest_dead_letters(consumer, dead_letter_topic, watermarks[dead_letter_topic],
                                                limit=dead_letter_limit)
    except KafkaException as error:
        # The page is public: addresses and the client's text go to the log only.
        log.warning("pipeline page: Kafka at %s did not answer: %s", settings.KAFKA_BOOTSTRAP_SERVERS,
                    error.args[0].str() if error.args else error)
        kafka_error = f"Kafka did not answer in {KAFKA_TIMEOUT_SECONDS:.0f} s: is it running? `make status`"
    finally:
        consumer.close()

    committed = _committed_offsets(list(names))
    redis_error, rates, processes = None, {}, []
    try:
        rates = _rates(ends, committed, now=time.time())
        ages = heartbeats.heartbeat_ages(list(dict.fromkeys([*PROCESSES, *settings.READY_CONSUMERS])))
        processes = [ProcessState(name, age, name in settings.READY_CONSUMERS) for name, age in ages.items()]
    except RedisError as error:
        log.warning("pipeline page: Redis did not answer: %s", error)
        redis_error = ("Redis did not answer: no rates, and the processes' heartbeats (kept there) are "
                       "unknown. Is it running? `make status`")
    topics = []
    for name, base in names.items():
        partitions = ends.get(name, {})
        groups = []
        for group in sorted({g for (g, t) in committed if t == name}):
            stored = committed[(group, name)]
            rows = []
            for partition in sorted(set(partitions) | set(stored["offsets"])):
                end = partitions.get(partition)
                next_offset = stored["offsets"].get(partition)
                if end is None:  # Kafka away: the committed offset alone
                    rows.append(PartitionLag(partition, -1, next_offset, None))
                    continue
                rows.append(PartitionLag(partition, end, next_offset, max(0, end - (next_offset or 0))))
            lags = [row.lag for row in rows]
            groups.append(GroupLag(
                group=group, consumer=_consumer_name(group), partitions=rows,
                lag=None if None in lags else sum(lags), messages_per_second=rates.get(f"{group}|{name}"),
                updated_at=stored["updated_at"],
            ))
        topics.append(TopicStatus(name=name, base_name=base, end_offsets=partitions,
                                  messages_per_second=rates.get(name), groups=groups))

    mode = storage.storage_mode()
    partition_counts = {}
    if mode == storage.PARTITIONS:
        partition_counts = {table.name: len(storage.partitions_list(table=table)) for table in storage.SERIES_TABLES}
    return PipelineStatus(
        checked_at=datetime.now(UTC), kafka_error=kafka_error, topics=topics, dead_letter_topic=dead_letter_topic,
        dead_letter_count=dead_count, dead_letters=dead_letters, processes=processes,
        readiness=readiness_report(), storage_mode=mode, partitions=partition_counts, redis_error=redis_error,
    )


def _consumer_name(group: str) -> str:
    prefix = f"{settings.KAFKA_CONSUMER_GROUP_PREFIX}."
    return group[len(prefix):] if group.startswith(prefix) else group


def _watermarks(consumer: Consumer, names: list[str]) -> dict[str, dict[int, tuple[int, int]]]:
    """(low, high) offsets of every partition of those of `names` that exist."""
    metadata = consumer.list_topics(timeout=KAFKA_TIMEOUT_SECONDS)
    result = {}
    for name in names:
        described = metadata.topics.get(name)
        if described is None or described.error is not None:
            continue
        result[name] = {
            partition: consumer.get_watermark_offsets(TopicPartition(name, partition),
                                                      timeout=KAFKA_TIMEOUT_SECONDS)
            for partition in sorted(described.partitions)
        }
    return result


def _newest_dead_letters(consumer: Consumer, name: str, watermarks: dict[int, tuple[int, int]], *,
                         limit: int) -> list[DeadLetter]:
    """The newest `limit` messages of each partition of the dead-letter topic,
    newest first overall. Reads by assignment: no group, nothing committed."""
    wanted = {p: (max(low, high - limit), high) for p, (low, high) in watermarks.items() if high > low}
    if not wanted:
        return []
    consumer.assign([TopicPartition(name, p, start) for p, (start, _high) in wanted.items()])
    remaining = set(wanted)
    letters = []
    deadline = time.monotonic() + KAFKA_TIMEOUT_SECONDS
    while remaining and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.2):
            if message.error() is not None:
                continue
            letters.append(_dead_letter(message))
            if message.offset() + 1 >= wanted[message.partition()][1]:
                remaining.discard(message.partition())
    letters.sort(key=lambda letter: (letter.time or datetime.min.replace(tzinfo=UTC), letter.offset), reverse=True)
    return letters[:limit]


def _dead_letter(message) -> DeadLetter:
    headers = {key: (value or b"").decode("utf-8", "replace") for key, value in (message.headers() or [])}
    kind, stamp = message.timestamp()
    value = message.value() or b""
    preview = value[:DEAD_LETTER_PREVIEW_BYTES].decode("utf-8", "replace")
    if len(value) > DEAD_LETTER_PREVIEW_BYTES:
        preview += f"… ({len(value)} bytes)"
    return DeadLetter(
        partition=message.partition(), offset=message.offset(),
        time=datetime.fromtimestamp(stamp / 1000, UTC) if kind and stamp > 0 else None,
        key=message.key().decode("utf-8", "replace") if message.key() else None, preview=preview,
        source_topic=headers.get(HEADER_TOPIC), source_partition=headers.get(HEADER_PARTITION),
        source_offset=headers.get(HEADER_OFFSET), consumer=headers.get(HEADER_CONSUMER),
        error=headers.get(HEADER_ERROR),
    )


def _committed_offsets(names: list[str]) -> dict[tuple[str, str], dict]:
    """(group, topic) -> {"offsets": {partition: next offset}, "updated_at": newest write}."""
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT "group", topic, partition, next_offset, updated_at FROM streaming_consumeroffset '
            "WHERE topic = ANY(%s)",
            [names],
        )
        rows = cursor.fetchall()
    committed: dict[tuple[str, str], dict] = {}
    for group, name, partition, next_offset, updated_at in rows:
        entry = committed.setdefault((group, name), {"offsets": {}, "updated_at": None})
        entry["offsets"][partition] = next_offset
        if entry["updated_at"] is None or updated_at > entry["updated_at"]:
            entry["updated_at"] = updated_at
    return committed


def _rates(ends: dict[str, dict[int, int]], committed: dict[tuple[str, str], dict], *, now: float) -> dict:
    """Messages/s per topic ("name") and per group and topic ("group|name")
    between the last two samples kept in Redis.

    The current reading becomes a sample when the newest stored one is at
    least MIN_SAMPLE_SECONDS old; otherwise the stored pair gives the rates,
    so that a page refreshed twice in a second shows the same figures."""
    from streaming.redis import redis_client

    current = {"t": now, "totals": {name: sum(parts.values()) for name, parts in ends.items()}}
    for (group, name), entry in committed.items():
        current["totals"][f"{group}|{name}"] = sum(entry["offsets"].values())
    client = redis_client()
    key = SAMPLES_KEY.format(settings.KAFKA_TOPIC_PREFIX or "-")
    try:
        samples = json.loads(client.get(key) or b"[]")
    except ValueError:
        samples = []
    if not samples or now - samples[-1]["t"] >= MIN_SAMPLE_SECONDS:
        samples = [*samples, current][-2:]
        client.set(key, json.dumps(samples), ex=3600)
    if len(samples) < 2:
        return {}
    older, newer = samples
    elapsed = newer["t"] - older["t"]
    if elapsed <= 0:
        return {}
    return {
        name: max(0.0, (total - older["totals"][name]) / elapsed)
        for name, total in newer["totals"].items() if name in older["totals"]
    }
