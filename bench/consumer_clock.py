"""When a consumer first delivered messages: the start of a throughput bench's clock."""

from __future__ import annotations

import time


class FirstMessageClock:
    """Wraps a ConsumerRunner's Kafka consumer and remembers when poll() or consume() first returned
    a message (the runner awaits a batch's first message with poll(), then gathers the rest)."""

    def __init__(self, consumer) -> None:
        self._consumer = consumer
        self.first_message_at = 0.0

    def poll(self, *args, **kwargs):
        message = self._consumer.poll(*args, **kwargs)
        if message is not None:
            self._started()
        return message

    def consume(self, *args, **kwargs):
        messages = self._consumer.consume(*args, **kwargs)
        if messages:
            self._started()
        return messages

    def _started(self) -> None:
        if not self.first_message_at:
            self.first_message_at = time.monotonic()

    def __getattr__(self, name):
        return getattr(self._consumer, name)
