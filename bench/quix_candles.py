"""The Quix Streams side of bench/candles_pipeline.py: the same job in a stream-processing framework.

Reads market.trades (JSON, keyed by symbol, Kafka timestamp = event time),
keeps six tumbling windows per symbol (1m, 5m, 15m, 1h, 4h, 1d) with Quix's
own aggregations (open = Earliest, close = Latest, high, low, volume, count,
notional for the VWAP, first/last trade time), and writes at every checkpoint,
in ONE PostgreSQL transaction, the trades (COPY + INSERT .. ON CONFLICT DO
NOTHING into market_trade, as ours does) and the latest state of each changed
window (upsert into bench_quix_candle). Window state lives in RocksDB with
Quix's changelog topics on: its defaults, and its way of surviving a crash.

Differences from ours, in Quix's favour: prices and sizes are floats (Quix state
is JSON, Decimal does not fit), delivery is at-least-once (a crash between the
sink's commit and Kafka's offset commit counts the replayed trades' candles
twice), and nothing is published to market.candles or Redis.

It runs in its own virtualenv (Quix Streams pins confluent-kafka below 2.13):

    var/bench-quix-venv/bin/python bench/quix_candles.py --broker 127.0.0.1:59792 \\
        --topic bench-X.market.trades --group G --database postgresql://... --state-dir var/bench/quix-state

Prints one JSON line per checkpoint: {"t": wall time, "trades": trades stored so
far, "first_message": wall time of the first message}. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, Earliest, Latest, Max, Min, Sum
from quixstreams.sinks.base.sink import BaseSink

INTERVALS = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}

CREATE_CANDLES = """
    CREATE TABLE IF NOT EXISTS bench_quix_candle (
        symbol varchar(16) NOT NULL, interval varchar(3) NOT NULL, time timestamptz NOT NULL,
        open double precision NOT NULL, high double precision NOT NULL, low double precision NOT NULL,
        close double precision NOT NULL, volume double precision NOT NULL, trades bigint NOT NULL,
        vwap double precision NOT NULL, first_trade_time timestamptz NOT NULL, last_trade_time timestamptz NOT NULL,
        PRIMARY KEY (symbol, interval, time))
"""
TRADE_STAGE = "CREATE TEMP TABLE IF NOT EXISTS trade_stage (LIKE market_trade) ON COMMIT DELETE ROWS"
CANDLE_STAGE = "CREATE TEMP TABLE IF NOT EXISTS candle_stage (LIKE bench_quix_candle) ON COMMIT DELETE ROWS"
CANDLE_COLUMNS = "symbol, interval, time, open, high, low, close, volume, trades, vwap, first_trade_time, last_trade_time"
UPSERT_CANDLES = f"""
    INSERT INTO bench_quix_candle ({CANDLE_COLUMNS}) SELECT {CANDLE_COLUMNS} FROM candle_stage
    ON CONFLICT (symbol, interval, time) DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        volume = EXCLUDED.volume, trades = EXCLUDED.trades, vwap = EXCLUDED.vwap,
        first_trade_time = EXCLUDED.first_trade_time, last_trade_time = EXCLUDED.last_trade_time
"""


def _utc_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class PostgresSink(BaseSink):
    """Collects trades and window updates between checkpoints; flush() writes them in one transaction.

    One sink for every branch, so that a checkpoint's trades and candles commit
    together, as ours do; a window updated many times in a checkpoint is
    written once (its latest state).
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.trades: list[tuple] = []
        self.candles: dict[tuple, tuple] = {}
        self.stored = 0
        self.first_message = 0.0

    def setup(self) -> None:
        self.conn = psycopg.connect(self.url)
        with self.conn.transaction():
            self.conn.execute(CREATE_CANDLES)

    def add(self, value, key, timestamp, headers, topic, partition, offset) -> None:
        kind = value[0]
        if kind == "t":
            self.trades.append(value[1])
        else:
            _kind, interval, symbol, window = value
            self.candles[(symbol, interval, window["start"])] = (
                symbol, interval, _utc_ms(window["start"]), window["open"], window["high"], window["low"],
                window["close"], window["volume"], window["trades"], window["notional"] / window["volume"],
                _utc_ms(window["first_ms"]), _utc_ms(window["last_ms"]))

    def flush(self) -> None:
        if not self.trades and not self.candles:
            return
        now = datetime.now(UTC)
        with self.conn.transaction(), self.conn.cursor() as cursor:
            if self.trades:
                cursor.execute(TRADE_STAGE)
                with cursor.copy("COPY trade_stage (symbol, time, trade_id, seq, price, size, side, received_at) "
                                 "FROM STDIN") as copy:
                    for row in self.trades:
                        copy.write_row((*row, now))
                cursor.execute("INSERT INTO market_trade SELECT * FROM trade_stage ON CONFLICT DO NOTHING")
            if self.candles:
                cursor.execute(CANDLE_STAGE)
                with cursor.copy(f"COPY candle_stage ({CANDLE_COLUMNS}) FROM STDIN") as copy:
                    for row in self.candles.values():
                        copy.write_row(row)
                cursor.execute(UPSERT_CANDLES)
        self.stored += len(self.trades)
        self.trades.clear()
        self.candles.clear()
        print(json.dumps({"t": time.time(), "trades": self.stored, "first_message": self.first_message}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval", type=float, default=5.0)
    args = parser.parse_args()

    app = Application(broker_address=args.broker, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, commit_interval=args.commit_interval, loglevel="WARNING")
    trades = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    sink = PostgresSink(args.database)

    def first_seen(value):
        if not sink.first_message:
            sink.first_message = time.time()

    sdf = app.dataframe(trades)
    sdf = sdf.update(first_seen)
    # The columns the windows aggregate: floats (see the docstring), and the
    # event time in ms for first/last trade time.
    sdf = sdf.apply(lambda v, key, timestamp, headers: {
        "id": v["id"], "symbol": v["symbol"], "ts": v["ts"], "seq": v["seq"], "side": v["side"],
        "price": float(v["price"]), "size": float(v["size"]), "notional": float(v["price"]) * float(v["size"]),
        "price_text": v["price"], "size_text": v["size"], "ms": timestamp,
    }, metadata=True)
    sdf.apply(lambda t: ("t", (t["symbol"], t["ts"], t["id"], t["seq"], t["price_text"], t["size_text"],
                               t["side"]))).sink(sink)
    for name, minutes in INTERVALS.items():
        windows = sdf.tumbling_window(timedelta(minutes=minutes)).agg(
            open=Earliest("price"), high=Max("price"), low=Min("price"), close=Latest("price"),
            volume=Sum("size"), trades=Count(), notional=Sum("notional"), first_ms=Min("ms"), last_ms=Max("ms"),
        ).current()
        windows.apply(lambda w, key, timestamp, headers, name=name: ("c", name, key, w), metadata=True).sink(sink)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
