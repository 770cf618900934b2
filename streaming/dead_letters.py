"""The dead-letter topic: messages no consumer could decode or validate.

Each keeps its original key and bytes, with its origin and the error in
headers, so that it can be inspected (`kcat -C -t finstream.dead-letters -J`)
and replayed once the cause is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming.kafka import EventPublisher
from streaming.topics import DEAD_LETTERS, topic

HEADER_TOPIC = "finstream.source.topic"
HEADER_PARTITION = "finstream.source.partition"
HEADER_OFFSET = "finstream.source.offset"
HEADER_ERROR = "finstream.error"
HEADER_CONSUMER = "finstream.consumer"


@dataclass(frozen=True)
class Poison:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


def dead_letters_send(*, publisher: EventPublisher, consumer: str, poison: list[Poison]) -> None:
    """Publish and flush: returns only once every dead letter is on the broker,
    so that the offsets that skip them can be committed."""
    for item in poison:
        publisher.publish(
            topic(DEAD_LETTERS),
            item.key,
            item.value or b"",
            headers=[
                (HEADER_TOPIC, item.topic.encode()),
                (HEADER_PARTITION, str(item.partition).encode()),
                (HEADER_OFFSET, str(item.offset).encode()),
                (HEADER_ERROR, item.error.encode()[:4000]),
                (HEADER_CONSUMER, consumer.encode()),
            ],
        )
    publisher.flush()
