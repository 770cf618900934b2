"""Reads of market data. Views call these; they never build querysets themselves."""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from market.domain.candles import vwap
from market.models import Quote, Symbol, Trade
from streaming.schemas import Candle as CandleMessage
from streaming.schemas import Quote as QuoteMessage
from streaming.schemas import Trade as TradeMessage


def symbol_exists(*, ticker: str) -> bool:
    return Symbol.objects.filter(ticker=ticker, active=True).exists()


def symbol_list() -> list[Symbol]:
    return list(Symbol.objects.filter(active=True).order_by("ticker"))


def trade_list(*, symbol: str, limit: int) -> list[Trade]:
    """Newest first, served by the (symbol, time, trade_id) primary key."""
    return list(Trade.objects.filter(symbol=symbol).order_by("-time", "-trade_id")[:limit])


def candles_since(*, interval: str, since: datetime) -> list[CandleMessage]:
    """Stored candles of `interval` starting at or after `since`, oldest first per symbol."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {CANDLE_COLUMNS} FROM market_candle WHERE interval = %s AND time >= %s ORDER BY symbol, time",
            [interval, since],
        )
        return [candle_message_from_row(row) for row in cursor.fetchall()]


def trades_since(*, since: datetime) -> list[TradeMessage]:
    """Stored trades from `since` on, each symbol's in (time, seq) order."""
    rows = (Trade.objects.filter(time__gte=since).order_by("symbol", "time", "seq")
            .values_list("trade_id", "symbol", "time", "seq", "price", "size", "side"))
    return [TradeMessage(id=i, symbol=s, ts=t, seq=q, price=p, size=z, side=d) for i, s, t, q, p, z, d in rows]


def quotes_since(*, since: datetime) -> list[QuoteMessage]:
    rows = (Quote.objects.filter(time__gte=since).order_by("symbol", "time")
            .values_list("quote_id", "symbol", "time", "bid", "ask", "bid_size", "ask_size"))
    return [QuoteMessage(id=i, symbol=s, ts=t, bid=b, ask=a, bid_size=bs, ask_size=as_)
            for i, s, t, b, a, bs, as_ in rows]


CANDLE_COLUMNS = (
    "symbol, interval, time, open, high, low, close, volume, trades, notional, first_trade_time, "
    "first_trade_seq, first_trade_id, last_trade_time, last_trade_seq, last_trade_id, updated_at"
)


def candle_message_from_row(row) -> CandleMessage:
    """A market_candle row (CANDLE_COLUMNS order) as the market.candles message."""
    (symbol, interval, start, open_, high, low, close, volume, trades, notional, first_time, _fseq, _fid,
     last_time, _lseq, _lid, _updated) = row
    return CandleMessage(
        symbol=symbol, interval=interval, start=start, open=open_.normalize(), high=high.normalize(),
        low=low.normalize(), close=close.normalize(), volume=volume.normalize(), trades=trades,
        vwap=vwap(notional, volume), first_trade_ts=first_time, last_trade_ts=last_time,
    )
