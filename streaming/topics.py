"""The Kafka topics FinStream uses, with their partitions and configs.

Names are the spec's. KAFKA_TOPIC_PREFIX (empty by default) isolates a set of
topics, e.g. per test run, without changing any code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

TRADES = "market.trades"
QUOTES = "market.quotes"
CANDLES = "market.candles"
ALERTS = "alerts"
# Messages a consumer could not decode or validate, with their origin in headers.
DEAD_LETTERS = "finstream.dead-letters"

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    base_name: str
    partitions: int | None  # None: KAFKA_TOPIC_PARTITIONS
    config: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return topic(self.base_name)

    @property
    def partition_count(self) -> int:
        return self.partitions or settings.KAFKA_TOPIC_PARTITIONS


TOPIC_SPECS = (
    # Keyed by symbol: one symbol's events stay ordered within one partition.
    TopicSpec(TRADES, None, {"retention.ms": str(7 * DAY_MS), "compression.type": "producer"}),
    TopicSpec(QUOTES, None, {"retention.ms": str(3 * DAY_MS), "compression.type": "producer"}),
    TopicSpec(CANDLES, None, {"retention.ms": str(7 * DAY_MS)}),
    TopicSpec(ALERTS, 1, {"retention.ms": str(90 * DAY_MS)}),
    TopicSpec(DEAD_LETTERS, 1, {"retention.ms": str(30 * DAY_MS)}),
)


def topic(base_name: str) -> str:
    return f"{settings.KAFKA_TOPIC_PREFIX}{base_name}"
