"""The naive design, for comparison only: one message, one transaction.

For every message: decode it, INSERT the trade (ON CONFLICT DO NOTHING), and if
it was new, upsert its six candles (1m..1d) one statement each, with the same
merge rules as market/services.py; COMMIT; then commit the Kafka offset of that
message. Plain SQL over one psycopg connection (server-side prepared after a few
executions), which is the fast end of "naive": an ORM save per row would be
slower still.

Run by bench/candles_pipeline.py, which reads the last line of stdout (JSON):

    var/venv/bin/python bench/naive_consumer.py --topic T --group G --limit 50000

Needs TIMESCALE_URL (or DATABASE_URL) and KAFKA_BOOTSTRAP_SERVERS. Does not import Django.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streaming.schemas import Trade, decoder_for  # a pure module: no Django

INTERVAL_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

INSERT_TRADE = """
    INSERT INTO market_trade (symbol, time, trade_id, seq, price, size, side, received_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT DO NOTHING
"""
_FIRST_IS_NEW = ('(EXCLUDED.first_trade_time, EXCLUDED.first_trade_seq, EXCLUDED.first_trade_id COLLATE "C") '
                 '< (c.first_trade_time, c.first_trade_seq, c.first_trade_id COLLATE "C")')
_LAST_IS_NEW = ('(EXCLUDED.last_trade_time, EXCLUDED.last_trade_seq, EXCLUDED.last_trade_id COLLATE "C") '
                '> (c.last_trade_time, c.last_trade_seq, c.last_trade_id COLLATE "C")')
UPSERT_CANDLE = f"""
    INSERT INTO market_candle AS c (symbol, interval, time, open, high, low, close, volume, trades, notional,
        first_trade_time, first_trade_seq, first_trade_id, last_trade_time, last_trade_seq, last_trade_id, updated_at)
    VALUES (%(symbol)s, %(interval)s, %(start)s, %(price)s, %(price)s, %(price)s, %(price)s, %(size)s, 1,
        %(notional)s, %(ts)s, %(seq)s, %(id)s, %(ts)s, %(seq)s, %(id)s, now())
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
        trades = c.trades + 1,
        notional = c.notional + EXCLUDED.notional,
        updated_at = EXCLUDED.updated_at
"""


def bucket_start(ts: datetime, minutes: int) -> datetime:
    minute = int((ts - EPOCH).total_seconds() // 60)
    return EPOCH + timedelta(minutes=minute - minute % minutes)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--limit", type=int, required=True, help="stop after this many messages")
    args = parser.parse_args()
    url = os.environ.get("TIMESCALE_URL") or os.environ["DATABASE_URL"]
    consumer = Consumer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "group.id": args.group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([args.topic])
    decoder = decoder_for(Trade)
    done = 0
    first_message = first_commit = last_commit = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.cursor()
        while done < args.limit:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise SystemExit(f"Kafka error: {message.error()}")
            if not first_message:
                first_message = time.time()
            trade = decoder.decode(message.value())
            with conn.transaction():
                cursor.execute(INSERT_TRADE, (trade.symbol, trade.ts, trade.id, trade.seq, trade.price, trade.size,
                                              trade.side))
                if cursor.rowcount == 1:
                    row = {"symbol": trade.symbol, "price": trade.price, "size": trade.size,
                           "notional": trade.price * trade.size, "ts": trade.ts, "seq": trade.seq, "id": trade.id}
                    for interval, minutes in INTERVAL_MINUTES.items():
                        cursor.execute(UPSERT_CANDLE, {**row, "interval": interval,
                                                       "start": bucket_start(trade.ts, minutes)})
            consumer.commit(message=message, asynchronous=True)
            last_commit = time.time()
            first_commit = first_commit or last_commit
            done += 1
    consumer.close()
    print(json.dumps({"messages": done, "first_message": first_message, "first_commit": first_commit,
                      "last_commit": last_commit}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
