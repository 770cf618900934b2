"""The trades and candles endpoints read through the primary-key index.

Enough rows that a sequential scan would be the planner's choice for a query
the index cannot serve (no enable_seqscan tricks), ANALYZEd; then the SQL
the endpoints really ran is EXPLAINed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, localcontext

import hypothesis
import pytest
from hypothesis import strategies as st
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer

from market import selectors, storage
from market.services import symbols_seed
from market.storage import CANDLES, TRADES, partitions_ensure

pytestmark = pytest.mark.django_db

DAYS = [date(2026, 3, 2), date(2026, 3, 3)]
SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA"]
TRADES_PER_SYMBOL_AND_DAY = 15_000


@pytest.fixture
def many_rows():
    symbols_seed(tickers=SYMBOLS)
    storage._known_partitions.clear()
    partitions_ensure(table=TRADES, days=set(DAYS))
    partitions_ensure(table=CANDLES, days=set(DAYS))
    storage._known_partitions.clear()  # rolled back with the test: not to be remembered
    with connection.cursor() as cursor:
        for day in DAYS:
            cursor.execute(
                """
                INSERT INTO market_trade (symbol, time, trade_id, seq, price, size, side, received_at)
                SELECT s, %(day)s::timestamptz + n * interval '5 seconds', s || '-' || n, n, 100 + n %% 7, 1, 'buy', now()
                FROM unnest(%(symbols)s::text[]) s, generate_series(1, %(count)s) n
                """,
                {"day": day, "symbols": SYMBOLS, "count": TRADES_PER_SYMBOL_AND_DAY},
            )
        cursor.execute(
            """
            INSERT INTO market_candle (symbol, interval, time, open, high, low, close, volume, trades, notional,
                first_trade_time, first_trade_seq, first_trade_id, last_trade_time, last_trade_seq, last_trade_id,
                updated_at)
            SELECT s, i, t, 100, 101, 99, 100.5, 10, 5, 1000, t, 1, 'a', t, 5, 'e', now()
            FROM unnest(%(symbols)s::text[]) s, unnest(ARRAY['1m', '5m']) i,
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '1 minute') t
            WHERE i = '1m' OR extract(minute FROM t)::int %% 5 = 0
            """,
            {"symbols": SYMBOLS, "start": DAYS[0], "end": DAYS[-1] + timedelta(hours=23, minutes=59)},
        )
        cursor.execute("ANALYZE market_trade")
        cursor.execute("ANALYZE market_candle")


def plans_of(url: str, table: str) -> list[str]:
    """EXPLAIN of each query on `table` that GET `url` ran."""
    with CaptureQueriesContext(connection) as queries:
        response = Client().get(url)
    assert response.status_code == 200, response.content[:300]
    plans = []
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            if f"FROM {table}" in query["sql"]:
                cursor.execute("EXPLAIN " + query["sql"])
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    assert plans, f"no query on {table} for {url}"
    return plans


def assert_primary_key_scan(plan: str, table: str) -> None:
    assert "Seq Scan" not in plan, plan
    assert any(("Index Scan" in line or "Index Only Scan" in line) and f"{table}" in line and "pkey" in line
               for line in plan.splitlines()), plan


@pytest.mark.parametrize("url", [
    "/api/v1/trades/MSFT?limit=100",
    "/api/v1/trades/MSFT?limit=1000&sort=asc",
    "/api/v1/trades/MSFT?start=2026-03-02T12:00:00Z&end=2026-03-03T12:00:00Z&limit=500",
])
def test_trade_pages_are_primary_key_range_scans(many_rows, url):
    for plan in plans_of(url, "market_trade"):
        assert_primary_key_scan(plan, "market_trade")


def test_a_later_trade_page_is_still_a_primary_key_range_scan(many_rows):
    first = Client().get("/api/v1/trades/MSFT?limit=50").json()
    cursor = first["next"].split("cursor=")[1]
    for plan in plans_of(f"/api/v1/trades/MSFT?limit=50&cursor={cursor}", "market_trade"):
        assert_primary_key_scan(plan, "market_trade")
        # The page starts where the last one ended: the cursor's time bounds the index range scan (its
        # seq and id only order that instant's trades), and no sort waits for the whole range.
        assert any("Index Cond" in line and '"time" <=' in line for line in plan.splitlines()), plan
        assert not any("Sort  (" in line and "Incremental Sort" not in line for line in plan.splitlines()), plan


@pytest.mark.parametrize("url", [
    "/api/v1/candles/NVDA?interval=1m&limit=500",
    "/api/v1/candles/NVDA?interval=5m&limit=100&sort=asc",
    "/api/v1/candles/NVDA?interval=1m&start=2026-03-02T10:00:00Z&end=2026-03-02T20:00:00Z",
])
def test_candle_pages_are_primary_key_range_scans(many_rows, url):
    for plan in plans_of(url, "market_candle"):
        assert_primary_key_scan(plan, "market_candle")


@pytest.mark.parametrize("query", [
    {"interval": "1m", "limit": 500},
    {"interval": "5m", "limit": 100, "descending": False},
    {"interval": "1m", "limit": 1000, "start": datetime(2026, 3, 2, 10, tzinfo=UTC),
     "end": datetime(2026, 3, 2, 20, tzinfo=UTC), "after": datetime(2026, 3, 2, 19, tzinfo=UTC)},
])
def test_candle_pages_rendered_by_postgresql_for_the_hot_path_are_primary_key_range_scans(many_rows, query):
    sql, params = selectors.candle_page_json_sql(symbol="NVDA", **query)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        assert_primary_key_scan("\n".join(row[0] for row in cursor.fetchall()), "market_candle")


# --- the hot path's SQL renderer against the Python one -------------------------------------------
_places8 = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("999999999999.99999999"), places=8)
_volumes = st.one_of(_places8, st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1E29"), places=8))


@st.composite
def candle_values(draw) -> dict:
    volume = draw(_volumes)
    # notional = VWAP x volume for a VWAP of up to 10**12 (what a price can be) that sits exactly
    # half-way between two 8-place values (the half-even tie), or anywhere; stored to 16 places.
    scaled_vwap = draw(st.integers(min_value=1, max_value=max(1, min(10**20, int(Decimal("1E41") / volume)))))
    fraction = draw(st.one_of(st.just(Decimal("0.5")), st.decimals(min_value=0, max_value=1, places=8)))
    with localcontext(Context(prec=100)):
        notional = ((scaled_vwap + fraction) * volume * Decimal("1E-8")).quantize(Decimal("1E-16"))
    return {"open": draw(_places8), "high": draw(_places8), "low": draw(_places8), "close": draw(_places8),
            "volume": volume, "notional": max(notional, Decimal("1E-16")),
            "trades": draw(st.integers(min_value=1, max_value=2**31 - 1)),
            "micros": draw(st.sampled_from([0, 0, 1, 500_000, 999_999]))}


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(st.lists(candle_values(), min_size=1, max_size=4))
def test_candles_rendered_by_postgresql_are_the_python_renderers_bytes(db, rows):
    from market.api.serializers import candles_json

    day = date(2026, 3, 2)
    storage._known_partitions.clear()
    partitions_ensure(table=CANDLES, days={day})
    storage._known_partitions.clear()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM market_candle WHERE symbol = 'ZZZ'")
        for minute, row in enumerate(rows):
            time = datetime(2026, 3, 2, 9, minute, tzinfo=UTC) + timedelta(microseconds=row["micros"])
            cursor.execute(
                "INSERT INTO market_candle (symbol, interval, time, open, high, low, close, volume, trades, notional,"
                " first_trade_time, first_trade_seq, first_trade_id, last_trade_time, last_trade_seq, last_trade_id,"
                " updated_at) VALUES ('ZZZ', '1m', %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, 'a', %s, 1, 'b', now())",
                [time, row["open"], row["high"], row["low"], row["close"], row["volume"], row["trades"],
                 row["notional"], time, time])
        for limit in (len(rows), max(1, len(rows) - 1)):
            cursor.execute(*selectors.candle_page_json_sql(symbol="ZZZ", interval="1m", limit=limit))
            candles, more_after_us = cursor.fetchone()
            python = selectors.candle_page(symbol="ZZZ", interval="1m", limit=limit + 1)
            assert f"[{candles}]".encode() == JSONRenderer().render(candles_json(python[:limit]))
            last_us = (python[limit - 1].start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            assert more_after_us == (None if len(python) <= limit else last_us)
