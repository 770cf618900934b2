"""Reads of market data. Views call these; they never build querysets themselves."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import msgspec
from django.db import connection

from finstream.errors import DATABASE_AWAY
from market.domain.candles import change_percent, plain, vwap
from market.models import RetiredTradeDay, Symbol, Trade
from market.rollups import STATS_KEY
from streaming.redis import redis_client
from streaming.schemas import Candle as CandleMessage
from streaming.schemas import Quote as QuoteMessage
from streaming.schemas import Trade as TradeMessage
from streaming.wire import epoch_us_time

log = logging.getLogger(__name__)


def symbol_exists(*, ticker: str) -> bool:
    return Symbol.objects.filter(ticker=ticker, active=True).exists()


def symbol_list() -> list[Symbol]:
    return list(Symbol.objects.filter(active=True).order_by("ticker"))


def trade_list(*, symbol: str, limit: int) -> list[Trade]:
    """Newest first, served by the (symbol, time, trade_id) primary key."""
    return list(Trade.objects.filter(symbol=symbol).order_by("-time", "-trade_id")[:limit])


def retired_trade_days(*, days: set[tuple[str, date]]) -> set[tuple[str, date]]:
    """Those of the (symbol, day) pairs whose trades retention dropped."""
    symbols = {symbol for symbol, _day in days}
    stored = RetiredTradeDay.objects.filter(symbol__in=symbols, day__in={day for _symbol, day in days})
    return set(stored.values_list("symbol", "day")) & days


# History before a point per symbol, for a detector that (re)starts there: `until` maps each
# symbol to the first event it is about to read of it, and every read stops short of that point,
# so that nothing is fed twice whatever the wall-clock time.

def minute_candles_before(*, until: Mapping[str, datetime], span: timedelta) -> list[CandleMessage]:
    """Each symbol's 1-minute candles that started within `span` before its bound and ended by it,
    oldest first per symbol."""
    rows = _each_symbol_before(
        f"SELECT {CANDLE_COLUMNS} FROM market_candle WHERE symbol = b.ticker AND interval = '1m' "
        "AND time >= b.bound - %s AND time <= b.bound - interval '1 minute'",
        {symbol: (ts,) for symbol, ts in until.items()}, span, order=("symbol", "time"))
    return [candle_message_from_row(row) for row in rows]


def trades_before(*, until: Mapping[str, tuple[datetime, int]], span: timedelta) -> list[TradeMessage]:
    """Each symbol's trades from `span` before its bound `(time, seq)` up to, not including, that
    bound, in (time, seq) order per symbol."""
    rows = _each_symbol_before(
        "SELECT trade_id, symbol, time, seq, price, size, side FROM market_trade WHERE symbol = b.ticker "
        "AND time >= b.bound - %s AND (time, seq) < (b.bound, b.bound_seq)",
        until, span, order=("symbol", "time", "seq"))
    return [TradeMessage(id=i, symbol=s, ts=t, seq=q, price=p, size=z, side=d) for i, s, t, q, p, z, d in rows]


def quotes_before(*, until: Mapping[str, datetime], span: timedelta) -> list[QuoteMessage]:
    """Each symbol's quotes from `span` before its bound up to, not including, it, in time order."""
    rows = _each_symbol_before(
        "SELECT quote_id, symbol, time, bid, ask, bid_size, ask_size FROM market_quote WHERE symbol = b.ticker "
        "AND time >= b.bound - %s AND time < b.bound",
        {symbol: (ts,) for symbol, ts in until.items()}, span, order=("symbol", "time"))
    return [QuoteMessage(id=i, symbol=s, ts=t, bid=b, ask=a, bid_size=bs, ask_size=as_)
            for i, s, t, b, a, bs, as_ in rows]


def _each_symbol_before(query: str, bounds: Mapping[str, tuple], span: timedelta, *,
                        order: tuple[str, ...]) -> list[tuple]:
    """`query`'s rows for each symbol of `bounds`, one index range scan each: it reads `b.ticker`,
    `b.bound` (a time) and, for bounds of two values, `b.bound_seq`; its one parameter is `span`."""
    if not bounds:
        return []
    columns = [list(values) for values in zip(*bounds.values(), strict=True)]
    arrays = ["%s::text[]", "%s::timestamptz[]", "%s::bigint[]"][:1 + len(columns)]
    names = ["ticker", "bound", "bound_seq"][:1 + len(columns)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.* FROM unnest({', '.join(arrays)}) AS b({', '.join(names)}) "
            f"CROSS JOIN LATERAL ({query}) AS r ORDER BY {', '.join(f'r.{column}' for column in order)}",
            [list(bounds), *columns, span],
        )
        return cursor.fetchall()


CANDLE_COLUMNS = (
    "symbol, interval, time, open, high, low, close, volume, trades, notional, first_trade_time, "
    "first_trade_seq, first_trade_id, last_trade_time, last_trade_seq, last_trade_id, updated_at"
)


def candle_message_from_row(row) -> CandleMessage:
    """A market_candle row (CANDLE_COLUMNS order) as the market.candles message."""
    (symbol, interval, start, open_, high, low, close, volume, trades, notional, first_time, _fseq, _fid,
     last_time, _lseq, _lid, _updated) = row
    return CandleMessage(
        symbol=symbol, interval=interval, start=start, open=plain(open_), high=plain(high),
        low=plain(low), close=plain(close), volume=plain(volume), trades=trades,
        vwap=plain(vwap(notional, volume)), first_trade_ts=first_time, last_trade_ts=last_time,
    )


# --- pages for the API ------------------------------------------------------------
# Keyset pagination: a page starts strictly after the (time, id) of the previous
# page's last row. Every query is `symbol = ... [AND interval = ...]` plus a
# range on time and ORDER BY the same columns, so it is one (backward) index
# range scan per partition, stopped by the LIMIT. Trades are ordered by (time,
# seq, trade_id), the tape's order: the primary key (symbol, time, trade_id)
# gives the time order and an incremental sort orders each instant's trades.


@dataclass(frozen=True)
class TradeRow:
    trade_id: str
    symbol: str
    time: datetime
    seq: int
    price: Decimal
    size: Decimal
    side: str


def _range_sql(*, start: datetime | None, end: datetime | None, after: tuple | None, descending: bool,
               key: str) -> tuple[str, list]:
    clauses, params = [], []
    if start is not None:
        clauses.append("time >= %s")
        params.append(start)
    if end is not None:
        clauses.append("time < %s")
        params.append(end)
    if after is not None:
        # PostgreSQL starts the index range scan at the comparison's leading columns that the index
        # holds in its order (for trades, time alone: seq is not in the primary key).
        clauses.append(f"({key}) {'<' if descending else '>'} ({', '.join(['%s'] * len(after))})")
        params.extend(after)
    return "".join(f" AND {clause}" for clause in clauses), params


# Event times read as integer microseconds since the epoch: exact (extract() is numeric), and
# ~10x cheaper to turn into datetimes than the text Django's timestamptz loader parses in Python
# (a quarter of a 500-candle page's cost).
def _epoch_us(column: str) -> str:
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


def trade_page(*, symbol: str, start: datetime | None = None, end: datetime | None = None,
               after: tuple[datetime, int, str] | None = None, descending: bool = True,
               limit: int) -> list[TradeRow]:
    """Up to `limit` trades of `symbol` in [start, end), strictly after the
    (time, seq, trade_id) `after` in the chosen order; newest first by default."""
    where, params = _range_sql(start=start, end=end, after=after, descending=descending, key="time, seq, trade_id")
    order = "DESC" if descending else "ASC"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT trade_id, symbol, {_epoch_us('time')}, seq, price, size, side FROM market_trade "
            f"WHERE symbol = %s{where} ORDER BY time {order}, seq {order}, trade_id {order} LIMIT %s",
            [symbol, *params, limit],
        )
        return [TradeRow(trade_id, symbol_, epoch_us_time(us), seq, price, size, side)
                for trade_id, symbol_, us, seq, price, size, side in cursor.fetchall()]


@dataclass(frozen=True)
class CandleRow:
    """A candle as the API shows it; vwap is exact (market.domain.candles.vwap)."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    vwap: Decimal


def candle_page(*, symbol: str, interval: str, start: datetime | None = None, end: datetime | None = None,
                after: datetime | None = None, descending: bool = True, limit: int) -> list[CandleRow]:
    """Up to `limit` candles of (symbol, interval) whose bucket starts in
    [start, end), strictly after the bucket `after` in the chosen order."""
    with connection.cursor() as cursor:
        cursor.execute(*_candle_page_sql(
            f"{_epoch_us('time')}, open, high, low, close, volume, trades, notional", symbol=symbol,
            interval=interval, start=start, end=end, after=after, descending=descending, limit=limit))
        return [CandleRow(epoch_us_time(us), open_, high, low, close, volume, trades, vwap(notional, volume))
                for us, open_, high, low, close, volume, trades, notional in cursor.fetchall()]


def _candle_page_sql(columns: str, *, symbol: str, interval: str, start: datetime | None, end: datetime | None,
                     after: datetime | None, descending: bool, limit: int) -> tuple[str, list]:
    where, params = _range_sql(start=start, end=end, after=None if after is None else (after,),
                               descending=descending, key="time")
    return (f"SELECT {columns} FROM market_candle WHERE symbol = %s AND interval = %s{where} "
            f"ORDER BY time {'DESC' if descending else 'ASC'} LIMIT %s", [symbol, interval, *params, limit])


def _json_decimal(column: str) -> str:
    # decimal_text's exact normalized string: trailing zeros trimmed, never an exponent.
    return f"trim_scale({column})::text"


# VWAP as vwap() computes it: notional / volume * 10**8 divided exactly, rounded half to even once,
# scaled back by an exact multiplication (numeric division would round on its own). div truncates
# where vwap() floors: the same for a candle, whose notional is >= 0 and volume > 0.
_VWAP_SCALED = "div(notional * 100000000, volume)"
_VWAP_REMAINDER = "mod(notional * 100000000, volume)"
_VWAP_SQL = (f"({_VWAP_SCALED} + CASE WHEN 2 * {_VWAP_REMAINDER} > volume "
             f"OR (2 * {_VWAP_REMAINDER} = volume AND mod({_VWAP_SCALED}, 2) = 1) THEN 1 ELSE 0 END) * 0.00000001")
# One candle as candles_json renders it and DRF's JSONRenderer writes it (compact, keys in order).
_CANDLE_JSON_SQL = (
    """'{"time":"' || to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')"""
    """ || CASE WHEN extract(microseconds FROM time)::bigint %% 1000000 = 0 THEN ''"""
    """ ELSE to_char(time AT TIME ZONE 'UTC', '.US') END || 'Z"'"""
    + "".join(f""" || ',"{name}":"' || {_json_decimal(name)} || '"'"""
              for name in ("open", "high", "low", "close", "volume"))
    + f""" || ',"trades":' || trades || ',"vwap":"' || {_json_decimal(_VWAP_SQL)} || '"}}'"""
)


@dataclass(frozen=True)
class CandlePageJson:
    """A candle page rendered by PostgreSQL: the first `limit` candles as JSON objects joined by
    commas, and the time of the last of them when more candles follow (else None)."""

    candles: str
    more_after_us: int | None


def candle_page_json_sql(*, symbol: str, interval: str, start: datetime | None = None,
                         end: datetime | None = None, after: datetime | None = None, descending: bool = True,
                         limit: int) -> tuple[str, list]:
    """candle_page's candles as CandlePageJson's one row (the query, for a connection of the caller's)."""
    page, params = _candle_page_sql(
        f"time, {_epoch_us('time')} AS time_us, {_CANDLE_JSON_SQL} AS json", symbol=symbol, interval=interval,
        start=start, end=end, after=after, descending=descending, limit=limit + 1)
    order = "DESC" if descending else "ASC"
    return (f"SELECT coalesce(string_agg(json, ',' ORDER BY n) FILTER (WHERE n <= %s), ''), "
            f"max(time_us) FILTER (WHERE n = %s AND total > %s) "
            f"FROM (SELECT row_number() OVER (ORDER BY time {order}) AS n, count(*) OVER () AS total, time_us, json "
            f"FROM ({page}) AS page) AS numbered", [limit, limit, limit, *params])


def candle_current(*, symbol: str, interval: str) -> CandleMessage | None:
    """The newest stored candle of (symbol, interval): the open bucket while trades flow."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {CANDLE_COLUMNS} FROM market_candle WHERE symbol = %s AND interval = %s "
                       "ORDER BY time DESC LIMIT 1", [symbol, interval])
        row = cursor.fetchone()
    return None if row is None else candle_message_from_row(row)


def last_closes(*, symbols: list[str]) -> dict[str, Decimal]:
    """Each symbol's close of its newest stored 1m candle (its last trade in tape order), for those that have one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.symbol, c.close FROM unnest(%s::text[]) AS s(symbol) CROSS JOIN LATERAL ("
            "SELECT close FROM market_candle WHERE symbol = s.symbol AND interval = '1m' ORDER BY time DESC LIMIT 1"
            ") AS c", [symbols])
        return dict(cursor.fetchall())


# --- live state from Redis (kept by the consumers) ------------------------------------
def _latest_key(kind: str) -> str:
    # Imported here: market.services imports this module at its top.
    from market.services import LATEST_QUOTE_KEY, LATEST_TRADE_KEY

    return LATEST_QUOTE_KEY if kind == "quote" else LATEST_TRADE_KEY


_quote_decoder = msgspec.json.Decoder(QuoteMessage)
_trade_decoder = msgspec.json.Decoder(TradeMessage)


def _decode_or_none(decoder, raw: bytes | None):
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError:
        return None  # written by an older schema: as if absent until the next event replaces it


def quote_latest_read(symbol: str) -> tuple[str, str]:
    """The Redis hash key and field of `symbol`'s latest quote (for a client of its own, e.g. asyncio's)."""
    return _latest_key('quote').format(symbol), "json"


def quote_decode(raw: bytes | None) -> QuoteMessage | None:
    return _decode_or_none(_quote_decoder, raw)


def quote_latest(*, symbol: str) -> QuoteMessage | None:
    """The newest quote of `symbol` that ingest_quotes stored, from Redis (no table scan)."""
    return quote_decode(redis_client().hget(*quote_latest_read(symbol)))


def trade_latest(*, symbol: str) -> TradeMessage | None:
    """The newest trade of `symbol` that build_candles stored, from Redis."""
    return _decode_or_none(_trade_decoder, redis_client().hget(_latest_key('trade').format(symbol), "json"))


@dataclass(frozen=True)
class SummaryRow:
    symbol: str
    last: Decimal | None = None
    last_trade_time: datetime | None = None
    change_24h: Decimal | None = None
    change_pct_24h: Decimal | None = None
    open_24h: Decimal | None = None
    high_24h: Decimal | None = None
    low_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    vwap_24h: Decimal | None = None
    trades_24h: int | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    quote_time: datetime | None = None
    stats_time: datetime | None = None


def _stats(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        stats = json.loads(raw)
        return {
            "open_24h": Decimal(stats["open_24h"]), "high_24h": Decimal(stats["high_24h"]),
            "low_24h": Decimal(stats["low_24h"]), "volume_24h": Decimal(stats["volume_24h"]),
            "vwap_24h": Decimal(stats["vwap_24h"]), "trades_24h": int(stats["trades_24h"]),
            "last": Decimal(stats["last"]), "stats_time": datetime.fromisoformat(stats["computed_at"]),
        }
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return None


def market_summary(*, symbols: list[str]) -> list[SummaryRow]:
    """Every symbol's last price, 24h statistics and top of book, from Redis
    only: one pipelined round trip, no database query. The 24h statistics
    come from market_stats_refresh (every 15 s); a symbol without them gets
    nulls there rather than a computation here. The last trade is newer than
    the statistics, so it moves high/low and the change at once."""
    pipe = redis_client().pipeline(transaction=False)
    market_summary_queue(pipe, symbols)
    return market_summary_rows(symbols, pipe.execute())


def market_summary_queue(pipe, symbols: list[str]) -> None:
    """Queue market_summary's reads on a Redis pipeline, sync or asyncio (they queue alike)."""
    for symbol in symbols:
        pipe.hget(_latest_key('trade').format(symbol), "json")
        pipe.hget(*quote_latest_read(symbol))
        pipe.get(STATS_KEY.format(symbol))


def market_summary_rows(symbols: list[str], replies: list) -> list[SummaryRow]:
    """The summary rows from the replies to market_summary_queue's reads."""
    rows = []
    for index, symbol in enumerate(symbols):
        trade = _decode_or_none(_trade_decoder, replies[3 * index])
        quote = _decode_or_none(_quote_decoder, replies[3 * index + 1])
        stats = _stats(replies[3 * index + 2])
        fields: dict = {}
        if stats is not None:
            fields.update(stats)
            fields["last_trade_time"] = None
        if trade is not None:
            fields["last"], fields["last_trade_time"] = trade.price, trade.ts.astimezone(UTC)
        if stats is not None:
            last = fields["last"]
            fields["high_24h"] = max(stats["high_24h"], last)
            fields["low_24h"] = min(stats["low_24h"], last)
            fields["change_24h"] = last - stats["open_24h"]
            fields["change_pct_24h"] = change_percent(fields["change_24h"], stats["open_24h"])
        if quote is not None:
            fields.update(bid=quote.bid, ask=quote.ask, quote_time=quote.ts.astimezone(UTC))
        rows.append(SummaryRow(symbol=symbol, **fields))
    return rows


def symbol_tickers() -> list[str]:
    return list(Symbol.objects.filter(active=True).order_by("ticker").values_list("ticker", flat=True))


def symbol_tickers_hidden() -> list[str]:
    """The symbols hidden in the admin (not active): their data stays, the API and pages show none of it."""
    return list(Symbol.objects.filter(active=False).values_list("ticker", flat=True))


_recent_tickers: tuple[float, list[str]] = (float("-inf"), [])  # (valid from, tickers): see symbol_tickers_known
_tickers_read_at = float("-inf")  # when PostgreSQL last gave the list
SYMBOLS_RETRY_SECONDS = 5.0


def symbol_tickers_recent(*, max_age: float) -> list[str]:
    """Active tickers as of at most `max_age` seconds ago: the web process asks
    on every quote and summary request, and symbols change rarely. With
    PostgreSQL away, the list read before is served (asked for again every
    SYMBOLS_RETRY_SECONDS, not on every request), so that quotes and the market
    summary, which are read from Redis, go on; raises if none was read yet."""
    global _recent_tickers, _tickers_read_at
    tickers = symbol_tickers_known(max_age=max_age)
    if tickers is not None:
        return tickers
    try:
        tickers = symbol_tickers()
    except DATABASE_AWAY as error:
        if _tickers_read_at == float("-inf"):
            raise
        log.warning("symbols not read from PostgreSQL (%s): serving the list read %.0f s ago",
                    type(error).__name__, time.monotonic() - _tickers_read_at)
        _recent_tickers = (time.monotonic() - max_age + SYMBOLS_RETRY_SECONDS, _recent_tickers[1])
        return _recent_tickers[1]
    _tickers_read_at = time.monotonic()
    _recent_tickers = (_tickers_read_at, tickers)
    return tickers


def symbol_tickers_known(*, max_age: float) -> list[str] | None:
    """symbol_tickers_recent's list if it is at most `max_age` seconds old, else None;
    never queries, so an event loop may call it."""
    read_at, tickers = _recent_tickers
    return tickers if time.monotonic() - read_at <= max_age else None
