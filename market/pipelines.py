"""What the consumer runner does with market data (see streaming/runner.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db import transaction

from market import selectors, services
from market.domain import candles
from market.storage import CANDLES, QUOTES, TRADES, partitions_ensure
from streaming import metrics
from streaming.kafka import EventPublisher
from streaming.redis import REDIS_AWAY, RedisRetry
from streaming.runner import Events
from streaming.schemas import Candle, Trade, encode
from streaming.topics import CANDLES as CANDLES_TOPIC
from streaming.topics import QUOTES as QUOTES_TOPIC
from streaming.topics import TRADES as TRADES_TOPIC
from streaming.topics import topic

log = logging.getLogger(__name__)


class SymbolsSeen:
    """Registers each symbol the feed brings that the symbols table lacks (a replayed file's BTCUSDT), so the
    API and the streams serve it; the table is asked once per symbol per process."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def register(self, events: list) -> None:
        """Inside the batch's transaction: the symbols count as seen once it commits (a batch retried after a
        rollback registers them again)."""
        new = {event.symbol for event in events} - self._seen
        if new:
            services.symbols_seed(tickers=sorted(new))
            transaction.on_commit(lambda: self._seen.update(new))


class LatestInRedis:
    """Keeps each symbol's newest trade or quote in Redis for the API and the dashboard. While Redis is
    away, storing in PostgreSQL goes on: each symbol's newest event waits here (one per symbol, so
    bounded) and is written with the first batch after Redis is back, so no symbol is left behind."""

    def __init__(self, *, key_format: str, kind: str) -> None:
        self._key_format = key_format
        self._kind = kind
        self._waiting: dict[str, object] = {}
        self._retry = RedisRetry()

    def keep(self, events: Sequence) -> None:
        pending = [*self._waiting.values(), *events] if self._waiting else events
        if not self._retry.due():
            self._waiting = services.newest_by_symbol(pending)
            return
        try:
            services.latest_events_store(key_format=self._key_format, events=pending)
        except REDIS_AWAY as error:
            if not self._retry.away:
                log.warning("Redis is away (%s): storing goes on; the latest %ss of the API and the dashboard "
                            "are updated when it is back", error, self._kind)
            self._retry.failed()
            self._waiting = services.newest_by_symbol(pending)
            return
        if self._retry.away:
            log.info("Redis is back: the latest %ss of %d symbols updated", self._kind, len(self._waiting))
        self._retry.answered()
        self._waiting = {}


@dataclass
class TradesStored:
    trades: list[Trade]
    candles: list[Candle]
    duplicates: int
    retired: int  # trades of days retention dropped: not stored


def trades_of_live_days(trades: Sequence[Trade], *, now: datetime) -> tuple[Sequence[Trade], int]:
    """The trades not of a (symbol, day) retention dropped, and how many were. A repeat of a stored trade
    is told by its id; once retention has dropped it, nothing tells, so its day takes no more trades.
    Inside the batch's transaction: with trades of days retention may drop, it keeps retention
    waiting from here until it ends."""
    # TRADES_RETENTION_DAYS >= 1: retention drops days before yesterday at the latest.
    live_since = datetime.combine(now.date() - timedelta(days=1), time.min, UTC)
    old = {(trade.symbol, trade.ts.date()) for trade in trades if trade.ts < live_since}
    if not old:
        return trades, 0
    services.retention_held_off()
    retired = selectors.retired_trade_days(days=old)
    if not retired:
        return trades, 0
    kept = [trade for trade in trades if trade.ts >= live_since or (trade.symbol, trade.ts.date()) not in retired]
    return kept, len(trades) - len(kept)


class TradesPipeline:
    """`build_candles`: store every trade once and keep the six candle
    intervals of every symbol current; publish each changed candle once per batch."""

    name = "build_candles"
    topics = (TRADES_TOPIC,)
    requires_redis = False  # the latest trade waits for it (LatestInRedis)

    def __init__(self, *, publisher: EventPublisher | None = None) -> None:
        self.publisher = publisher if publisher is not None else EventPublisher(name=self.name)
        self._candles_topic = topic(CANDLES_TOPIC)
        self._symbols = SymbolsSeen()
        self._not_stored_retired = metrics.TRADES_NOT_STORED.labels(reason="retired_day")  # a series from 0
        self._latest = LatestInRedis(key_format=services.LATEST_TRADE_KEY, kind="trade")
        self._repeats_likely = False  # the batch before held trades stored before

    def prepare(self, events: Events) -> None:
        days = {trade.ts.date() for trade in events.get(TRADES_TOPIC, ())}
        if days:
            partitions_ensure(table=TRADES, days=days)
            partitions_ensure(table=CANDLES, days=days)

    def store(self, events: Events) -> TradesStored:
        now = datetime.now(UTC)
        trades = events.get(TRADES_TOPIC, [])
        self._symbols.register(trades)
        live, retired = trades_of_live_days(trades, now=now)
        new = services.trades_ingest(trades=live, received_at=now, repeats_likely=self._repeats_likely)
        self._repeats_likely = len(new) < len(live)
        changed = services.candles_apply(aggregates=candles.aggregate(new).values(), updated_at=now)
        return TradesStored(trades=new, candles=changed, duplicates=len(live) - len(new), retired=retired)

    def after_commit(self, result: TradesStored) -> None:
        if result.retired:
            self._not_stored_retired.inc(result.retired)
            log.warning("%d trades not stored: retention has dropped their days' trades, and their candles are "
                        "final (TRADES_RETENTION_DAYS=%d)", result.retired, settings.TRADES_RETENTION_DAYS)
        for candle in result.candles:
            self.publisher.publish(self._candles_topic, candle.symbol, encode(candle))
        self.publisher.poll(0)
        self._latest.keep(result.trades)

    def close(self) -> None:
        self.publisher.flush()


class QuotesPipeline:
    """`ingest_quotes`: store every quote once; keep the latest per symbol in Redis."""

    name = "ingest_quotes"
    topics = (QUOTES_TOPIC,)
    requires_redis = False

    def __init__(self) -> None:
        self._symbols = SymbolsSeen()
        self._latest = LatestInRedis(key_format=services.LATEST_QUOTE_KEY, kind="quote")

    def prepare(self, events: Events) -> None:
        days = {quote.ts.date() for quote in events.get(QUOTES_TOPIC, ())}
        if days:
            partitions_ensure(table=QUOTES, days=days)

    def store(self, events: Events) -> list:
        quotes = events.get(QUOTES_TOPIC, [])
        self._symbols.register(quotes)
        services.quotes_ingest(quotes=quotes)
        return quotes

    def after_commit(self, quotes: list) -> None:
        self._latest.keep(quotes)

    def close(self) -> None:
        pass
