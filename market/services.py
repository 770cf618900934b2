"""Writes of market data: the only place that changes market tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from psycopg.errors import UniqueViolation

from market.domain.candles import CandleAggregate
from market.models import Symbol
from market.selectors import CANDLE_COLUMNS, candle_message_from_row
from streaming.redis import redis_client
from streaming.schemas import Candle as CandleMessage
from streaming.schemas import Quote, Trade, encode
from streaming.wire import epoch_us


# Names of the seed symbols (the spec's ten); any other symbol gets its name in Django admin.
SEED_NAMES = {
    "AAPL": "Apple Inc.", "GOOGL": "Alphabet Inc. Class A", "MSFT": "Microsoft Corporation",
    "AMZN": "Amazon.com, Inc.", "META": "Meta Platforms, Inc.", "NVDA": "NVIDIA Corporation",
    "TSLA": "Tesla, Inc.", "JPM": "JPMorgan Chase & Co.", "V": "Visa Inc.", "JNJ": "Johnson & Johnson",
}


def symbols_seed(*, tickers: Sequence[str]) -> int:
    """Create the symbols that do not exist yet (a seed symbol with its name); returns how many were new."""
    existing = set(Symbol.objects.filter(ticker__in=tickers).values_list("ticker", flat=True))
    new = [Symbol(ticker=ticker, name=SEED_NAMES.get(ticker, "")) for ticker in tickers if ticker not in existing]
    Symbol.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)


# --- trades and candles ----------------------------------------------------------
# The hot path: one COPY into a session-local staging table, then one
# INSERT ... SELECT. A batch that holds a trade stored before (or one trade
# twice) is inserted with ON CONFLICT DO NOTHING, staged again without repeats
# if it holds one trade twice. Only the rows that INSERT really added feed the
# candles, so a redelivered, duplicated or replayed trade can never count twice.

# Prices and sizes are staged as text: psycopg's binary numeric dumper costs
# ~1 us per Decimal in Python, str() a tenth of that, and PostgreSQL's numeric
# input is exact (schemas.py already refused more than 8 decimal places).
_TRADE_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS trade_stage (
        symbol varchar(16) NOT NULL, time timestamptz NOT NULL, trade_id varchar(64) NOT NULL,
        seq bigint NOT NULL, price text NOT NULL, size text NOT NULL, side varchar(4) NOT NULL
    ) ON COMMIT DELETE ROWS
"""
_TRADE_TYPES = ["varchar", "timestamptz", "varchar", "int8", "text", "text", "varchar"]
_TRADE_COPY = "COPY trade_stage (symbol, time, trade_id, seq, price, size, side) FROM STDIN (FORMAT BINARY)"
_TRADE_INSERT = """
    INSERT INTO market_trade (symbol, time, trade_id, seq, price, size, side, received_at)
    SELECT symbol, time, trade_id, seq, price::numeric, size::numeric, side, %s FROM trade_stage
"""
_CANDLE_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS candle_stage (LIKE market_candle) ON COMMIT DELETE ROWS
"""
_CANDLE_TYPES = ["varchar", "varchar", "timestamptz", "numeric", "numeric", "numeric", "numeric", "numeric", "int8",
                 "numeric", "timestamptz", "int8", "varchar", "timestamptz", "int8", "varchar", "timestamptz"]
# open/close follow the earliest/latest trade by (event time, seq, trade id);
# ids compare bytewise (COLLATE "C") as they do in Python.
_FIRST_IS_NEW = (
    '(EXCLUDED.first_trade_time, EXCLUDED.first_trade_seq, EXCLUDED.first_trade_id COLLATE "C") '
    '< (c.first_trade_time, c.first_trade_seq, c.first_trade_id COLLATE "C")'
)
_LAST_IS_NEW = (
    '(EXCLUDED.last_trade_time, EXCLUDED.last_trade_seq, EXCLUDED.last_trade_id COLLATE "C") '
    '> (c.last_trade_time, c.last_trade_seq, c.last_trade_id COLLATE "C")'
)
_CANDLE_UPSERT = f"""
    INSERT INTO market_candle AS c ({CANDLE_COLUMNS})
    SELECT {CANDLE_COLUMNS} FROM candle_stage ORDER BY symbol, interval, time
    ON CONFLICT (symbol, interval, time) DO UPDATE SET
        open = CASE WHEN {_FIRST_IS_NEW} THEN EXCLUDED.open ELSE c.open END,
        first_trade_time = CASE WHEN {_FIRST_IS_NEW} THEN EXCLUDED.first_trade_time ELSE c.first_trade_time END,
        first_trade_seq = CASE WHEN {_FIRST_IS_NEW} THEN EXCLUDED.first_trade_seq ELSE c.first_trade_seq END,
        first_trade_id = CASE WHEN {_FIRST_IS_NEW} THEN EXCLUDED.first_trade_id ELSE c.first_trade_id END,
        close = CASE WHEN {_LAST_IS_NEW} THEN EXCLUDED.close ELSE c.close END,
        last_trade_time = CASE WHEN {_LAST_IS_NEW} THEN EXCLUDED.last_trade_time ELSE c.last_trade_time END,
        last_trade_seq = CASE WHEN {_LAST_IS_NEW} THEN EXCLUDED.last_trade_seq ELSE c.last_trade_seq END,
        last_trade_id = CASE WHEN {_LAST_IS_NEW} THEN EXCLUDED.last_trade_id ELSE c.last_trade_id END,
        high = GREATEST(c.high, EXCLUDED.high),
        low = LEAST(c.low, EXCLUDED.low),
        volume = c.volume + EXCLUDED.volume,
        trades = c.trades + EXCLUDED.trades,
        notional = c.notional + EXCLUDED.notional,
        updated_at = EXCLUDED.updated_at
    RETURNING {CANDLE_COLUMNS}
"""


def retention_held_off() -> None:
    """Keep retention from dropping trades partitions until this transaction ends. Retention locks
    the table ACCESS EXCLUSIVE before it records the days it drops (market/storage.py), so it waits
    for this lock, the one an INSERT takes anyway: taken before reading which days retention closed,
    the answer holds until the batch's trades are stored."""
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE ONLY market_trade IN ROW EXCLUSIVE MODE")


def trades_ingest(*, trades: Sequence[Trade], received_at: datetime, repeats_likely: bool = False) -> list[Trade]:
    """Store trades not stored before; returns exactly those, in input order
    (a trade repeated within `trades` counts once, as its first occurrence).

    Must run inside a transaction (the staging table empties on commit).
    Idempotent: ingesting the same trades again stores and returns nothing.
    `repeats_likely` (the batch before held repeats: a file replayed again)
    skips the plain INSERT, whose refusal PostgreSQL would log as an ERROR
    for every batch of a replay it has stored before.
    """
    if not connection.in_atomic_block:
        # Outside a transaction the staging rows would vanish before the INSERT.
        raise RuntimeError("trades_ingest must run inside transaction.atomic()")
    if not trades:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_TRADE_STAGE)
        _trades_stage(cursor, trades)
        # Almost every batch is new trades only, and a plain INSERT costs about
        # half of ON CONFLICT's speculative insertion (bench/candles_pipeline.py).
        # So try that first, in a savepoint: if it stored every row, every
        # trade was new and none was repeated, since the primary key would
        # have refused it.
        if not repeats_likely:
            try:
                with transaction.atomic():
                    cursor.execute(_TRADE_INSERT, [received_at])
                return list(trades)
            except IntegrityError as error:
                if not isinstance(error.__cause__, UniqueViolation):
                    raise
        # A redelivery, a replay or a repeat within the batch: keep only what
        # INSERT really adds, with each trade staged once (so that the row
        # stored is the occurrence returned).
        unique: dict[tuple[str, datetime, str], Trade] = {}
        for trade in trades:
            unique.setdefault((trade.symbol, trade.ts, trade.id), trade)
        if len(unique) < len(trades):
            cursor.execute("DELETE FROM trade_stage")
            _trades_stage(cursor, unique.values())
        cursor.execute(_TRADE_INSERT + " ON CONFLICT DO NOTHING RETURNING symbol, time, trade_id", [received_at])
        inserted = cursor.fetchall()
    return [unique[key] for key in inserted]


def _trades_stage(cursor, trades: Iterable[Trade]) -> None:
    with cursor.cursor.copy(_TRADE_COPY) as copy:
        copy.set_types(_TRADE_TYPES)
        write_row = copy.write_row
        for t in trades:
            write_row((t.symbol, t.ts, t.id, t.seq, str(t.price), str(t.size), t.side))


def candles_apply(*, aggregates: Iterable[CandleAggregate], updated_at: datetime) -> list[CandleMessage]:
    """Merge in-memory aggregates into the stored candles; returns each changed
    candle's new state. Must run inside a transaction. Not idempotent: callers
    pass aggregates of newly stored trades only (see trades_ingest)."""
    rows = [
        (a.symbol, a.interval, a.start, a.open, a.high, a.low, a.close, a.volume, a.trades, a.notional,
         a.first_key[0], a.first_key[1], a.first_key[2], a.last_key[0], a.last_key[1], a.last_key[2], updated_at)
        for a in aggregates
    ]
    if not rows:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_CANDLE_STAGE)
        with cursor.cursor.copy(f"COPY candle_stage ({CANDLE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_CANDLE_TYPES)
            for row in rows:
                copy.write_row(row)
        cursor.execute(_CANDLE_UPSERT)
        return [candle_message_from_row(row) for row in cursor.fetchall()]


# --- quotes ----------------------------------------------------------------------
_QUOTE_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS quote_stage (LIKE market_quote) ON COMMIT DELETE ROWS
"""
_QUOTE_TYPES = ["varchar", "timestamptz", "varchar", "numeric", "numeric", "numeric", "numeric"]


def quotes_ingest(*, quotes: Sequence[Quote]) -> int:
    """Store quotes not stored before; returns how many were new. Inside a transaction."""
    unique: dict[tuple[str, datetime, str], Quote] = {}
    for quote in quotes:
        unique.setdefault((quote.symbol, quote.ts, quote.id), quote)
    if not unique:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_QUOTE_STAGE)
        with cursor.cursor.copy(
            "COPY quote_stage (symbol, time, quote_id, bid, ask, bid_size, ask_size) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_QUOTE_TYPES)
            for q in unique.values():
                copy.write_row((q.symbol, q.ts, q.id, q.bid, q.ask, q.bid_size, q.ask_size))
        cursor.execute("INSERT INTO market_quote SELECT * FROM quote_stage ON CONFLICT DO NOTHING")
        return cursor.rowcount


# --- live state in Redis -----------------------------------------------------------
# The latest quote and trade per symbol, for the API and the market summary.
# Written after the batch's commit; a compare-and-set on event time keeps an
# older event (a late or replayed one) from overwriting a newer one.
LATEST_QUOTE_KEY = "finstream:latest:quote:{}"
LATEST_TRADE_KEY = "finstream:latest:trade:{}"
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'ts')
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'json', ARGV[2])
  return 1
end
return 0
"""


def newest_by_symbol(events: Iterable[Trade | Quote]) -> dict[str, Trade | Quote]:
    """Each symbol's newest event by event time (the last of equal times)."""
    newest: dict[str, Trade | Quote] = {}
    for event in events:
        current = newest.get(event.symbol)
        if current is None or event.ts >= current.ts:
            newest[event.symbol] = event
    return newest


def latest_events_store(*, key_format: str, events: Iterable[Trade | Quote]) -> None:
    """Keep, per symbol, the newest of `events` in Redis (by event time)."""
    newest = newest_by_symbol(events)
    if not newest:
        return
    client = redis_client()
    script = client.register_script(_SET_IF_NEWER)
    pipe = client.pipeline(transaction=False)
    for symbol, event in newest.items():
        script(keys=[key_format.format(symbol)], args=[epoch_us(event.ts), encode(event)],
               client=pipe)
    pipe.execute()
