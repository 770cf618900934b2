"""Moving generated or recorded events onto Kafka: the producing edge shared
by `simulate` and `replay`.

Messages arrive ready to publish (``streaming.wire``): the simulator writes
them without building structs, and any other source of Trade/Quote structs
goes through ``wire_messages_of``. They are paced by event time (see
market/domain/pacing.py) or sent as fast as the producer takes them. Waiting
is done inside the producer's poll(), so delivery reports are served while we
wait and the pacing stays smooth.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.core.management.base import CommandError

from finstream import tracing
from market.domain.pacing import Pacer
from streaming import metrics
from streaming.kafka import EventPublisher
from streaming.schemas import Quote, Trade, encode
from streaming.topics import QUOTES, TRADES, topic
from streaming.wire import WireMessage, epoch_ms


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


def wire_messages_of(events: Iterable[Trade | Quote]) -> Iterator[WireMessage]:
    """Trade and Quote structs as the wire messages feed_publish takes, keyed by symbol."""
    trades_topic, quotes_topic = topic(TRADES), topic(QUOTES)
    for event in events:
        yield (trades_topic if type(event) is Trade else quotes_topic, event.symbol, encode(event),
               epoch_ms(event.ts))


def _paced(messages: Iterable[WireMessage], pacer: Pacer, publisher: EventPublisher,
           should_stop: Callable[[], bool]) -> Iterator[WireMessage]:
    """``messages``, each when the pacer says it is due; ends early when ``should_stop()``."""
    monotonic = time.monotonic
    for message in messages:
        wait = pacer.seconds_to_wait(message[3], monotonic())
        # Waiting inside poll() serves delivery reports meanwhile, and the pacing stays smooth.
        while wait > 0:
            publisher.poll(min(wait, 0.25))
            if should_stop():
                return
            wait = pacer.seconds_to_wait(message[3], monotonic())
        if should_stop():
            return
        yield message


# At full speed the stop flag and the metrics are looked at every this many messages: a few milliseconds.
_CHECK_EVERY = 1000


def feed_publish(
    *,
    messages: Iterable[WireMessage],
    publisher: EventPublisher,
    pacer: Pacer | None,
    should_stop: Callable[[], bool],
    on_progress: Callable[[FeedStats], None] | None = None,
    progress_every: int = 50_000,
) -> FeedStats:
    """Publish ``messages`` (to market.trades or market.quotes, see ``wire_messages_of``) until they
    end or ``should_stop()``; flushes before returning, so every message it accepted is on the broker.
    Raises DeliveryFailed if the broker lost one."""
    stats = FeedStats()
    trades_topic = topic(TRADES)
    trade_counter = metrics.SIMULATOR_EVENTS.labels(kind="trade")
    quote_counter = metrics.SIMULATOR_EVENTS.labels(kind="quote")
    counted = [0, 0]

    def count() -> None:
        # Counted in steps: a metric update per event would cost as much as producing it.
        trade_counter.inc(stats.trades - counted[0])
        quote_counter.inc(stats.quotes - counted[1])
        counted[:] = stats.trades, stats.quotes

    if pacer is not None:
        messages = _paced(messages, pacer, publisher, should_stop)
        check_every = 1  # counts and progress stay current between the waits
    else:
        check_every = _CHECK_EVERY
    publish = publisher.publish
    spans = tracing.PublishSpans(f"{publisher.name} publish", attributes={"messaging.system": "kafka"}) \
        if tracing.tracer() is not None else None
    headers = None
    trades = quotes = 0
    next_check = check_every
    next_progress = progress_every
    try:
        if not should_stop():
            for topic_, key, value, timestamp_ms in messages:
                if spans is not None:
                    headers = spans.headers()
                publish(topic_, key, value, headers, timestamp_ms)
                if topic_ == trades_topic:
                    trades += 1
                else:
                    quotes += 1
                if trades + quotes >= next_check:
                    next_check += check_every
                    stats.trades, stats.quotes = trades, quotes
                    publisher.poll(0)
                    count()
                    if stats.events >= next_progress:
                        next_progress += progress_every
                        if on_progress:
                            on_progress(stats)
                    if should_stop():
                        break
    finally:
        stats.trades, stats.quotes = trades, quotes
        if spans is not None:
            spans.close()  # its last span is exported even when a delivery failed
    publisher.flush()
    count()
    return stats
