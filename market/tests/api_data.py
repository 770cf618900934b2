"""Market data for the API tests, stored through the real ingest path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction

from market import services, storage
from market.domain import candles
from market.storage import CANDLES, TRADES, partitions_ensure
from streaming.schemas import Trade

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_trades(count: int, *, symbol: str = "AAPL", every: timedelta = timedelta(seconds=7),
                same_time_pairs: bool = True, start: datetime = T0) -> list[Trade]:
    """`count` trades; with same_time_pairs every two share a timestamp (ties broken by id)."""
    trades = []
    for i in range(count):
        ts = start + every * (i // 2 if same_time_pairs else i)
        trades.append(Trade(id=f"{symbol}-{i:05d}", symbol=symbol, ts=ts, seq=i, side="buy" if i % 2 else "sell",
                            price=Decimal("187.00") + Decimal(i % 13) / 100, size=Decimal(1 + i % 5)))
    return trades


def store_trades(trades: list[Trade]) -> None:
    """As build_candles does: the trades, and the candles of the new ones."""
    days = {trade.ts.date() for trade in trades}
    # A test's transaction rolls back the partitions it creates: the process
    # must not remember them, before or after (a later test would skip them).
    storage._known_partitions.clear()
    partitions_ensure(table=TRADES, days=days)
    partitions_ensure(table=CANDLES, days=days)
    storage._known_partitions.clear()
    now = datetime.now(UTC)
    with transaction.atomic():
        new = services.trades_ingest(trades=trades, received_at=now)
        services.candles_apply(aggregates=candles.aggregate(new).values(), updated_at=now)
