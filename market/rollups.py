"""Rollups beat runs: sealing closed candles, retention of fine candles, and
the rolling 24-hour statistics of the market summary.

Sealing recomputes closed buckets independently of the consumer's
incremental path and repairs any difference (counted in
finstream_candle_seal_repairs_total). 1m, 5m and 15m candles are recomputed
from the stored trades; 1h, 4h and 1d from the stored 1m candles, which nest
exactly in them and are themselves sealed from trades (recomputing a day from
8 million trades every hour would cost more than it could find).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from market.domain.candles import INTERVALS, bucket_start, change_percent, decimal_text, vwap
from streaming import metrics
from streaming.redis import redis_client

FROM_TRADES = {"1m", "5m", "15m"}
STATS_KEY = "finstream:stats:{}"

_EXPECTED_FROM_TRADES = """
    CREATE TEMP TABLE seal_expected ON COMMIT DROP AS
    SELECT symbol, date_bin(%(width)s::interval, time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS time,
        (array_agg(price ORDER BY time, seq, trade_id COLLATE "C"))[1] AS open,
        max(price) AS high, min(price) AS low,
        (array_agg(price ORDER BY time DESC, seq DESC, trade_id COLLATE "C" DESC))[1] AS close,
        sum(size) AS volume, count(*) AS trades, sum(price * size) AS notional,
        min(time) AS first_trade_time,
        (array_agg(seq ORDER BY time, seq, trade_id COLLATE "C"))[1] AS first_trade_seq,
        (array_agg(trade_id ORDER BY time, seq, trade_id COLLATE "C"))[1] AS first_trade_id,
        max(time) AS last_trade_time,
        (array_agg(seq ORDER BY time DESC, seq DESC, trade_id COLLATE "C" DESC))[1] AS last_trade_seq,
        (array_agg(trade_id ORDER BY time DESC, seq DESC, trade_id COLLATE "C" DESC))[1] AS last_trade_id
    FROM market_trade
    WHERE time >= %(start)s AND time < %(end)s
    GROUP BY 1, 2
"""
_EXPECTED_FROM_MINUTES = """
    CREATE TEMP TABLE seal_expected ON COMMIT DROP AS
    SELECT symbol, date_bin(%(width)s::interval, time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS time,
        (array_agg(open ORDER BY first_trade_time, first_trade_seq, first_trade_id COLLATE "C"))[1] AS open,
        max(high) AS high, min(low) AS low,
        (array_agg(close ORDER BY last_trade_time DESC, last_trade_seq DESC, last_trade_id COLLATE "C" DESC))[1]
            AS close,
        sum(volume) AS volume, sum(trades) AS trades, sum(notional) AS notional,
        min(first_trade_time) AS first_trade_time,
        (array_agg(first_trade_seq ORDER BY first_trade_time, first_trade_seq, first_trade_id COLLATE "C"))[1]
            AS first_trade_seq,
        (array_agg(first_trade_id ORDER BY first_trade_time, first_trade_seq, first_trade_id COLLATE "C"))[1]
            AS first_trade_id,
        max(last_trade_time) AS last_trade_time,
        (array_agg(last_trade_seq ORDER BY last_trade_time DESC, last_trade_seq DESC,
                   last_trade_id COLLATE "C" DESC))[1] AS last_trade_seq,
        (array_agg(last_trade_id ORDER BY last_trade_time DESC, last_trade_seq DESC,
                   last_trade_id COLLATE "C" DESC))[1] AS last_trade_id
    FROM market_candle
    WHERE interval = '1m' AND time >= %(start)s AND time < %(end)s
    GROUP BY 1, 2
"""
_VALUE_COLUMNS = (
    "open", "high", "low", "close", "volume", "trades", "notional", "first_trade_time", "first_trade_seq",
    "first_trade_id", "last_trade_time", "last_trade_seq", "last_trade_id",
)
_REPAIR = f"""
    UPDATE market_candle c SET {", ".join(f"{col} = e.{col}" for col in _VALUE_COLUMNS)}, updated_at = now()
    FROM seal_expected e JOIN seal_locked l USING (symbol, time)
    WHERE c.symbol = e.symbol AND c.interval = %(interval)s AND c.time = e.time
      AND ({", ".join(f"c.{col}" for col in _VALUE_COLUMNS)})
          IS DISTINCT FROM ({", ".join(f"e.{col}" for col in _VALUE_COLUMNS)})
"""
# Not over a candle that exists: one a consumer is updating (created after the lock) would make the
# insert wait for that consumer, which may be waiting for a candle the seal locked. (A candle a
# consumer is creating is not seen, and can still make them wait for each other: PostgreSQL then
# ends one, the consumer retries its batch and the seal runs again a minute later.)
_INSERT_MISSING = f"""
    INSERT INTO market_candle (symbol, interval, time, {", ".join(_VALUE_COLUMNS)}, updated_at)
    SELECT symbol, %(interval)s, time, {", ".join(_VALUE_COLUMNS)}, now() FROM seal_expected e
    WHERE NOT EXISTS (SELECT 1 FROM market_candle c
                      WHERE c.symbol = e.symbol AND c.interval = %(interval)s AND c.time = e.time)
    ORDER BY symbol, time
    ON CONFLICT (symbol, interval, time) DO NOTHING
"""
# A locked candle the recompute found no trade for. A trade commits with its candles, so one of its
# bucket either committed before the lock (and the recompute saw it) or waits for the lock (and then
# creates its candle afresh).
_DELETE_PHANTOMS = """
    DELETE FROM market_candle c USING seal_locked l
    WHERE c.symbol = l.symbol AND c.interval = %(interval)s AND c.time = l.time
      AND NOT EXISTS (SELECT 1 FROM seal_expected e WHERE e.symbol = c.symbol AND e.time = c.time)
"""


def candles_seal(*, interval: str, since: datetime, now: datetime) -> int:
    """Recompute the closed `interval` buckets from `since` up to the grace
    period before `now`; repair those that differ. Returns the repairs made.

    The candle rows are locked first: a consumer that stored a late trade of
    one of these buckets either committed before the lock (and the recompute
    sees its trade) or waits for it (and then adds its trade on top of the
    repaired candle). Either way nothing is lost or counted twice. Only the
    locked rows are repaired or deleted: a candle created after the lock
    (a replay or a catching-up consumer storing trades of a closed bucket)
    may take more trades while this runs, which the recompute cannot see;
    the next seal checks it.
    """
    width = INTERVALS[interval]
    start = bucket_start(since, interval)
    end = bucket_start(now - timedelta(seconds=settings.CANDLE_SEAL_GRACE_SECONDS), interval)
    if end <= start:
        return 0
    params = {"interval": interval, "start": start, "end": end, "width": f"{int(width.total_seconds())} seconds"}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE seal_locked ON COMMIT DROP AS SELECT symbol, time FROM market_candle "
            "WHERE interval = %(interval)s AND time >= %(start)s AND time < %(end)s ORDER BY symbol, time FOR UPDATE",
            params,
        )
        cursor.execute(_EXPECTED_FROM_TRADES if interval in FROM_TRADES else _EXPECTED_FROM_MINUTES, params)
        cursor.execute(_REPAIR, params)
        repaired = cursor.rowcount
        cursor.execute(_INSERT_MISSING, params)
        repaired += cursor.rowcount
        cursor.execute(_DELETE_PHANTOMS, params)
        repaired += cursor.rowcount
    if repaired:
        metrics.CANDLE_SEAL_REPAIRS.labels(interval=interval).inc(repaired)
    return repaired


def fine_candles_delete_older_than(*, cutoff: datetime) -> int:
    """1m and 5m candles go after FINE_CANDLES_RETENTION_DAYS; coarser ones stay."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM market_candle WHERE interval IN ('1m', '5m') AND time < %s", [cutoff])
        return cursor.rowcount


def market_stats_refresh(*, now: datetime) -> int:
    """Rolling 24-hour statistics per symbol, from the 1m candles, into Redis."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT symbol,
                (array_agg(open ORDER BY time))[1], (array_agg(close ORDER BY time DESC))[1],
                max(high), min(low), sum(volume), sum(notional), sum(trades), max(last_trade_time)
            FROM market_candle
            WHERE interval = '1m' AND time >= %s AND time < %s
            GROUP BY symbol
            """,
            [now - timedelta(hours=24), now + timedelta(minutes=1)],
        )
        rows = cursor.fetchall()
    pipe = redis_client().pipeline(transaction=False)
    for symbol, open_, close, high, low, volume, notional, trades, last_time in rows:
        change = close - open_
        stats = {
            "symbol": symbol, "open_24h": decimal_text(open_), "last": decimal_text(close),
            "change_24h": decimal_text(change),
            "change_pct_24h": f"{change_percent(change, open_):f}",
            "high_24h": decimal_text(high), "low_24h": decimal_text(low),
            "volume_24h": decimal_text(volume), "vwap_24h": decimal_text(vwap(notional, volume)),
            "trades_24h": int(trades), "last_trade_time": last_time.astimezone(UTC).isoformat(),
            "computed_at": now.isoformat(),
        }
        pipe.set(STATS_KEY.format(symbol), json.dumps(stats), ex=3600)
    pipe.execute()
    return len(rows)
