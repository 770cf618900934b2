"""What the consumer runner does with market data (see streaming/runner.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction

from market import services
from market.domain import candles
from market.storage import CANDLES, QUOTES, TRADES, partitions_ensure
from streaming.kafka import EventPublisher
from streaming.runner import Events
from streaming.schemas import Candle, Trade, encode
from streaming.topics import CANDLES as CANDLES_TOPIC
from streaming.topics import QUOTES as QUOTES_TOPIC
from streaming.topics import TRADES as TRADES_TOPIC
from streaming.topics import topic


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


@dataclass
class TradesStored:
    trades: list[Trade]
    candles: list[Candle]
    duplicates: int


class TradesPipeline:
    """`build_candles`: store every trade once and keep the six candle
    intervals of every symbol current; publish each changed candle once per batch."""

    name = "build_candles"
    topics = (TRADES_TOPIC,)

    def __init__(self, *, publisher: EventPublisher | None = None) -> None:
        self.publisher = publisher if publisher is not None else EventPublisher(name=self.name)
        self._candles_topic = topic(CANDLES_TOPIC)
        self._symbols = SymbolsSeen()

    def prepare(self, events: Events) -> None:
        days = {trade.ts.date() for trade in events.get(TRADES_TOPIC, ())}
        if days:
            partitions_ensure(table=TRADES, days=days)
            partitions_ensure(table=CANDLES, days=days)

    def store(self, events: Events) -> TradesStored:
        now = datetime.now(UTC)
        trades = events.get(TRADES_TOPIC, [])
        self._symbols.register(trades)
        new = services.trades_ingest(trades=trades, received_at=now)
        changed = services.candles_apply(aggregates=candles.aggregate(new).values(), updated_at=now)
        return TradesStored(trades=new, candles=changed, duplicates=len(trades) - len(new))

    def after_commit(self, result: TradesStored) -> None:
        for candle in result.candles:
            self.publisher.publish(self._candles_topic, candle.symbol, encode(candle))
        self.publisher.poll(0)
        services.latest_events_store(key_format=services.LATEST_TRADE_KEY, events=result.trades)

    def close(self) -> None:
        self.publisher.flush()


class QuotesPipeline:
    """`ingest_quotes`: store every quote once; keep the latest per symbol in Redis."""

    name = "ingest_quotes"
    topics = (QUOTES_TOPIC,)

    def __init__(self) -> None:
        self._symbols = SymbolsSeen()

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
        services.latest_events_store(key_format=services.LATEST_QUOTE_KEY, events=quotes)

    def close(self) -> None:
        pass
