"""Moving generated or recorded events onto Kafka: the producing edge shared
by `simulate` and `replay`.

Messages arrive ready to publish (``streaming.wire``): the simulator and the
replayer write them without building structs. They are paced by event time (see
market/domain/pacing.py) or sent as fast as the producer takes them. Waiting
is done inside the producer's poll(), so delivery reports are served while we
wait and the pacing stays smooth.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter

from django.core.management.base import CommandError

from finstream import tracing
from market.domain.pacing import Pacer
from streaming import metrics
from streaming.kafka import EventPublisher
from streaming.topics import TRADES, topic
from streaming.wire import WireMessage


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


# At full speed messages are published in batches of this many (a few milliseconds' worth), between which
# the stop flag, the delivery reports and the metrics are looked at.
_BATCH = 1000
PACING_TICK = 0.005  # seconds: the shortest wait of a paced feed


def paced_batches(messages: Iterable[WireMessage], pacer: Pacer, *, wait: Callable[[float], object],
                  should_stop: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                  ) -> Iterator[list[WireMessage]]:
    """``messages`` in lists of those that are due, each list as soon as the messages in it are
    (never before); ends early when ``should_stop()``. ``wait(seconds)`` blocks up to that long
    (a publisher's poll, which serves delivery reports meanwhile); ``clock`` is the pacer's.

    A wait lasts at least PACING_TICK (unless a delivery report ends it), and what fell due
    meanwhile goes out together: at 20,000 events a second, ~200 wake-ups rather than 20,000
    (which took a whole core), and no event leaves much more than PACING_TICK after its time."""
    batch: list[WireMessage] = []
    for message in messages:
        to_wait = pacer.seconds_to_wait(message[3], clock())
        if to_wait > 0 and batch:
            yield batch
            batch = []
            to_wait = pacer.seconds_to_wait(message[3], clock())  # publishing it took time
        while to_wait > 0:
            wait(min(max(to_wait, PACING_TICK), 0.25))
            if should_stop():
                return
            to_wait = pacer.seconds_to_wait(message[3], clock())
        batch.append(message)
        if len(batch) == _BATCH:
            yield batch
            batch = []
            if should_stop():
                return
    if batch:
        yield batch


def feed_publish(
    *,
    messages: Iterable[WireMessage],
    publisher: EventPublisher,
    pacer: Pacer | None,
    should_stop: Callable[[], bool],
    on_progress: Callable[[FeedStats], None] | None = None,
    progress_every: int = 50_000,
) -> FeedStats:
    """Publish ``messages`` (trades to market.trades, quotes to market.quotes) until they end or
    ``should_stop()``; flushes before returning, so every message it accepted is on the broker.
    Raises DeliveryFailed if the broker lost one. An error raised by ``messages`` (a bad row when
    replaying) is raised once every message before it is on the broker."""
    stats = FeedStats()
    source_errors: list[Exception] = []

    def until_error(source: Iterable[WireMessage]) -> Iterator[WireMessage]:
        # Ends the stream where `source` fails, so that the batch it was filling is still published.
        try:
            yield from source
        except Exception as error:  # noqa: BLE001 - re-raised by feed_publish after the flush
            source_errors.append(error)
    trades_topic = topic(TRADES)
    trade_counter = metrics.SIMULATOR_EVENTS.labels(kind="trade")
    quote_counter = metrics.SIMULATOR_EVENTS.labels(kind="quote")
    counted = [0, 0]

    def count() -> None:
        # Counted in steps: a metric update per event would cost as much as producing it.
        trade_counter.inc(stats.trades - counted[0])
        quote_counter.inc(stats.quotes - counted[1])
        counted[:] = stats.trades, stats.quotes

    messages = until_error(messages)
    if pacer is not None:
        batches = paced_batches(messages, pacer, wait=publisher.poll, should_stop=should_stop)
    else:
        batches = iter(lambda: list(islice(messages, _BATCH)), [])
    spans = tracing.PublishSpans(f"{publisher.name} publish", attributes={"messaging.system": "kafka"}) \
        if tracing.tracer() is not None else None
    headers = None
    next_progress = progress_every
    try:
        while not should_stop():
            batch = next(batches, None)
            if not batch:
                break
            if spans is not None:
                headers = spans.headers(len(batch))
            published = publisher.publish_many(batch, headers)
            # Counted by C loops over the batch: a Python test per message would cost a tenth of producing it.
            trades = list(map(itemgetter(0), batch)).count(trades_topic)
            stats.trades += trades
            stats.quotes += published - trades
            publisher.poll(0)
            count()
            if stats.events >= next_progress:
                next_progress += progress_every
                if on_progress:
                    on_progress(stats)
    finally:
        if spans is not None:
            spans.close()  # its last span is exported even when a delivery failed
    publisher.flush()
    count()
    if source_errors:
        raise source_errors[0]
    return stats
