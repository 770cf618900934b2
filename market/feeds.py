"""Moving generated or recorded events onto Kafka: the producing edge shared
by `simulate` and `replay`.

Events are paced by event time (see market/domain/pacing.py) or sent as fast
as the producer takes them. Waiting is done inside the producer's poll(), so
delivery reports are served while we wait and the pacing stays smooth.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.core.management.base import CommandError

from finstream import tracing
from market.domain.pacing import Pacer
from streaming import metrics
from streaming.kafka import EventPublisher
from streaming.schemas import Quote, Trade, encode
from streaming.topics import QUOTES, TRADES, topic


def positive_or_max(text: str, *, option: str, meaning: str) -> float | None:
    """A command's --rate/--speed value: a positive number, or None for 'max'."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{option} {text!r}: give {meaning} or 'max'") from None
    if not value > 0:
        raise CommandError(f"{option} {text!r} must be positive")
    return value


def stop_on_signals() -> Callable[[], bool]:
    """First SIGTERM/SIGINT asks the feed to stop (it then flushes); a second exits at once.
    Returns the function feed_publish polls."""
    requested = []

    def handle(signum, _frame):
        if requested:
            raise SystemExit(128 + signum)
        requested.append(signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return lambda: bool(requested)


@dataclass
class FeedStats:
    trades: int = 0
    quotes: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def events(self) -> int:
        return self.trades + self.quotes

    def rate(self, now: float) -> float:
        return self.events / max(now - self.started, 1e-9)


def feed_publish(
    *,
    events: Iterable[Trade | Quote],
    publisher: EventPublisher,
    pacer: Pacer | None,
    should_stop: Callable[[], bool],
    on_progress: Callable[[FeedStats], None] | None = None,
    progress_every: int = 50_000,
) -> FeedStats:
    """Publish `events` (keyed by symbol) until they end or `should_stop()`;
    flushes before returning, so every event it accepted is on the broker.
    Raises DeliveryFailed if the broker lost one."""
    stats = FeedStats()
    trades_topic, quotes_topic = topic(TRADES), topic(QUOTES)
    trade_counter = metrics.SIMULATOR_EVENTS.labels(kind="trade")
    quote_counter = metrics.SIMULATOR_EVENTS.labels(kind="quote")
    counted = [0, 0]

    def count() -> None:
        # Counted in steps: a metric update per event would cost as much as producing it.
        trade_counter.inc(stats.trades - counted[0])
        quote_counter.inc(stats.quotes - counted[1])
        counted[:] = stats.trades, stats.quotes
    publish = publisher.publish
    monotonic = time.monotonic
    spans = tracing.PublishSpans(f"{publisher.name} publish", attributes={"messaging.system": "kafka"}) \
        if tracing.tracer() is not None else None
    headers = None
    next_progress = progress_every
    try:
        for event in events:
            if pacer is not None:
                wait = pacer.seconds_to_wait(event.ts, monotonic())
                if wait > 0:
                    count()
                while wait > 0:
                    publisher.poll(min(wait, 0.25))
                    if should_stop():
                        break
                    wait = pacer.seconds_to_wait(event.ts, monotonic())
            if should_stop():
                break
            timestamp_ms = int(event.ts.timestamp() * 1000)
            if spans is not None:
                headers = spans.headers()
            if type(event) is Trade:
                publish(trades_topic, event.symbol, encode(event), headers, timestamp_ms)
                stats.trades += 1
            else:
                publish(quotes_topic, event.symbol, encode(event), headers, timestamp_ms)
                stats.quotes += 1
            if stats.events >= next_progress:
                publisher.poll(0)
                count()
                next_progress += progress_every
                if on_progress:
                    on_progress(stats)
    finally:
        if spans is not None:
            spans.close()  # its last span is exported even when a delivery failed
    publisher.flush()
    count()
    return stats
