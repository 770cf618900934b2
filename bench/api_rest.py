"""REST API throughput with wrk against daphne, on a bench database.

Builds (once; --rebuild to redo) a database `<name>_bench` beside the
configured one, through the normal schema (migrations), with SYMBOLS' 1m
candles for --days days up to now from generate_series (each candle standing
for --trades-per-candle trades: 10 symbols x 60 days x 1440 minutes x 20 is
17M trades' worth), their 1h candles, the latest trade and quote of every
symbol in Redis and the 24h statistics (market_stats_refresh, as beat runs it).
Then starts two web servers (`python -m finstream.serve`, --processes daphnes
each) on that database, one with the hot reads of
market/api/hot.py (the default) and one with API_HOT_READS=0, and runs wrk on:

    /api/v1/market-summary      target >= 2000 req/s
    /api/v1/quotes/AAPL         target >= 2000 req/s
    /api/v1/candles/AAPL?interval=1m&limit=500   target >= 500 req/s

and prints req/s, latency p50/p99 and the ratio to the target; the market
summary and quotes also through Django alone (the second server), as the
ratio the hot reads buy. Nothing is
written to a file. Needs `wrk` (apt-get install wrk) and the stack's
PostgreSQL and Redis (`make up`, or a test stack's TIMESCALE_URL/REDIS_URL).

    var/venv/bin/python bench/api_rest.py [--duration 15] [--connections 32] [--rebuild]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")

from bench.procstat import free_port  # noqa: E402 - needs ROOT on the path

TARGETS = [
    ("health (floor)", "/health", None),
    ("market-summary", "/api/v1/market-summary", 2000),
    ("quotes/{s}", "/api/v1/quotes/AAPL", 2000),
    ("candles limit=500", "/api/v1/candles/AAPL?interval=1m&limit=500", 500),
    # Every request another page: a random symbol and a random `end` in the data, so that no two
    # requests share a database read (identical requests in flight together share one).
    ("  any page", "/api/v1/candles/AAPL?interval=1m&limit=500&end=*", 500),
]
HOT_PATHS = {path for _, path, target in TARGETS if target}  # all answered by market/api/hot.py
# wrk's request() for the "any page" row; {symbols} and {days} filled in from the data built.
ANY_PAGE_LUA = """
math.randomseed(os.time())
local symbols = {{{symbols}}}
local now_ms = os.time() * 1000
request = function()
  local symbol = symbols[math.random(#symbols)]
  local end_ms = now_ms - math.random(0, {days} * 86400) * 1000
  return wrk.format("GET", "/api/v1/candles/" .. symbol .. "?interval=1m&limit=500&end=" .. end_ms)
end
"""


def bench_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_bench"))


def admin_execute(url: str, sql: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(sql)


def database_exists(url: str) -> bool:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [parts.path.lstrip("/")]).fetchone()


def build(args, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    if args.rebuild and database_exists(url):
        admin_execute(url, f'DROP DATABASE "{name}"')
    fresh = not database_exists(url)
    if fresh:
        admin_execute(url, f'CREATE DATABASE "{name}"')
    os.environ["TIMESCALE_URL"] = url
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from market import rollups, services, storage
    from streaming.schemas import Quote, Trade

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=args.days)
    if fresh:
        print(f"building {name}: migrations, {len(settings.SYMBOLS)} symbols x {args.days} days of 1m candles ...")
        call_command("migrate", verbosity=0)
        services.symbols_seed(tickers=settings.SYMBOLS)
        days = {(start + timedelta(days=d)).date() for d in range(args.days + 2)}
        storage.partitions_ensure(table=storage.CANDLES, days=days)
        storage.partitions_ensure(table=storage.TRADES, days=days)
        began = time.monotonic()
        with connection.cursor() as cursor:
            for symbol in settings.SYMBOLS:
                cursor.execute(
                    """
                    INSERT INTO market_candle (symbol, interval, time, open, high, low, close, volume, trades,
                        notional, first_trade_time, first_trade_seq, first_trade_id, last_trade_time, last_trade_seq,
                        last_trade_id, updated_at)
                    SELECT %(s)s, '1m', t, p, p + 0.25, p - 0.25, p + 0.05, 100 * %(n)s, %(n)s, (p + 0.02) * 100 * %(n)s,
                        t, 1, 'f', t + interval '59 seconds', %(n)s, 'l', now()
                    FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '1 minute') t,
                         LATERAL (SELECT round((100 + 20 * sin(extract(epoch FROM t) / 86400.0))::numeric, 2) AS p) x
                    """,
                    {"s": symbol, "n": args.trades_per_candle, "start": start, "end": now},
                )
            cursor.execute(
                """
                INSERT INTO market_candle
                SELECT symbol, '1h', date_trunc('hour', time), (array_agg(open ORDER BY time))[1], max(high), min(low),
                    (array_agg(close ORDER BY time DESC))[1], sum(volume), sum(trades), sum(notional), min(time), 1,
                    'f', max(last_trade_time), 1, 'l', now()
                FROM market_candle WHERE interval = '1m' GROUP BY symbol, date_trunc('hour', time)
                """
            )
            cursor.execute("ANALYZE market_candle")
            cursor.execute("SELECT count(*), sum(trades) FROM market_candle WHERE interval = '1m'")
            candles, trades = cursor.fetchone()
        print(f"  {candles} 1m candles ({trades} trades' worth) in {time.monotonic() - began:.0f} s")
    services.latest_events_store(key_format=services.LATEST_TRADE_KEY, events=[
        Trade(id=f"bench-{s}", symbol=s, ts=now, seq=1, price=Decimal("101.25"), size=Decimal(5), side="buy")
        for s in settings.SYMBOLS])
    services.latest_events_store(key_format=services.LATEST_QUOTE_KEY, events=[
        Quote(id=f"bench-{s}", symbol=s, ts=now, bid=Decimal("101.24"), ask=Decimal("101.26"), bid_size=Decimal(300),
              ask_size=Decimal(200)) for s in settings.SYMBOLS])
    rollups.market_stats_refresh(now=now)


def wrk(url: str, *, duration: int, connections: int, threads: int, script: str | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script or "")
        lua.flush()
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
                              *(["-s", lua.name] if script else []), url],
                             capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50"), "p99": ms("99"),
            "errors": int(errors.group(1)) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--trades-per-candle", type=int, default=20)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--processes", type=int, default=1,
                        help="daphne processes of each server, sharing its port (finstream.serve), as a scale-out")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from finstream.env import env_str

    url = bench_url(os.environ.get("TIMESCALE_URL") or env_str(
        "DATABASE_URL", "postgresql://finstream:finstream@127.0.0.1:5432/finstream"))
    build(args, url)
    env = {**os.environ, "TIMESCALE_URL": url, "DJANGO_DEBUG": "0", "API_THROTTLE_ANON": "", "API_THROTTLE_USER": "",
           "DATABASE_POOL_SIZE": os.environ.get("DATABASE_POOL_SIZE", "20"),
           "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)}
    with web_server(env={**env, "API_HOT_READS": "1"}, processes=args.processes) as port, \
            web_server(env={**env, "API_HOT_READS": "0"}, processes=args.processes) as django_port:
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s against daphne ({args.processes} "
              f"process(es) each, DEBUG off), {os.cpu_count()} CPUs; hot reads on (:{port}) and off (:{django_port})")
        floor = None
        for name, path, target in TARGETS:
            r = measure(f"http://127.0.0.1:{port}{path}", args)
            # The floor: Django's request path with a view that does nothing, in the same run.
            floor = floor or r["rps"]
            versus = f"target {target}: x{r['rps'] / target:.2f}" if target else "the framework's floor"
            print(f"  {name:18s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
                  f"non-2xx {r['errors']}  of floor {r['rps'] / floor:.2f}  {versus}")
            if path in HOT_PATHS:  # the same request with API_HOT_READS=0: all through Django
                d = measure(f"http://127.0.0.1:{django_port}{path}", args)
                print(f"  {'  through Django':18s} {d['rps']:8.0f} req/s  p50 {d['p50']:6.1f} ms  p99 {d['p99']:6.1f}"
                      f" ms  non-2xx {d['errors']}  hot reads faster by x{r['rps'] / d['rps']:.1f}")


def measure(url: str, args) -> dict:
    from django.conf import settings

    script = ANY_PAGE_LUA.format(symbols=", ".join(f'"{s}"' for s in settings.SYMBOLS), days=args.days - 1) \
        if url.endswith("end=*") else None
    wrk(url, duration=2, connections=args.connections, threads=args.threads, script=script)  # warm up
    return wrk(url, duration=args.duration, connections=args.connections, threads=args.threads, script=script)


@contextlib.contextmanager
def web_server(*, env: dict, processes: int):
    """`python -m finstream.serve` with `processes` daphnes (access log off); yields its port once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "finstream.serve", "--port", str(port), "--processes",
                               str(processes), "--", "--access-log", os.devnull],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    pass
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2)
        yield port
    finally:
        server.terminate()  # it stops its daphnes, which give requests in flight up to 10 s
        server.wait(60)


if __name__ == "__main__":
    main()
