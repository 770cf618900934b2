"""The market endpoints of the spec, every parameter, good and bad input.
(Index use is in test_api_explain.py, the schema in tests/test_openapi.py.)"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.db import transaction
from django.test import Client

from market.domain.candles import vwap
from market.models import Candle
from market.pipelines import QuotesPipeline, TradesPipeline
from market.rollups import STATS_KEY
from market.services import LATEST_QUOTE_KEY, LATEST_TRADE_KEY, latest_events_store, symbols_seed
from market.tests.api_data import T0, make_trades, store_trades
from streaming.schemas import Quote, Trade
from streaming.topics import QUOTES, TRADES

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(redis_clean, settings):
    settings.API_SYMBOLS_CACHE_SECONDS = 0  # each test seeds its own symbols
    symbols_seed(tickers=["AAPL", "MSFT", "NVDA"])
    return Client()


def get(client, url, status=200) -> dict:
    response = client.get(url)
    assert response.status_code == status, (url, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def follow(client, url) -> list[dict]:
    """Every page from `url` on, through the `next` links."""
    pages = []
    while url:
        page = get(client, url)
        pages.append(page)
        url = page["next"] and urlsplit(page["next"])._replace(scheme="", netloc="").geturl()
    return pages


def assert_error(body: dict, code: str, *mentions: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    for text in mentions:
        assert text in body["error"]["message"], body


# --- symbols and quotes ----------------------------------------------------------------------
def test_symbols_lists_the_active_symbols(client):
    assert get(client, "/api/v1/symbols") == {"symbols": [
        {"symbol": "AAPL", "name": "Apple Inc."}, {"symbol": "MSFT", "name": "Microsoft Corporation"},
        {"symbol": "NVDA", "name": "NVIDIA Corporation"}]}


@pytest.mark.django_db(transaction=True)
def test_a_symbol_first_seen_in_the_feed_is_served(client, kafka_topics):
    # A replayed file's symbols need not be among settings.SYMBOLS.
    for pipeline, events in (
        (TradesPipeline(), {TRADES: [Trade(id="r-1", symbol="BTCUSDT", ts=T0, seq=1, price=Decimal("91843.2"),
                                           size=Decimal("0.0452"), side="sell")]}),
        (QuotesPipeline(), {QUOTES: [Quote(id="rq-1", symbol="EUR-USD", ts=T0, bid=Decimal("1.17229"),
                                           ask=Decimal("1.17232"), bid_size=Decimal(0), ask_size=Decimal(0))]}),
    ):
        pipeline.prepare(events)
        with transaction.atomic():
            pipeline.store(events)
        pipeline.close()
    assert [s["symbol"] for s in get(client, "/api/v1/symbols")["symbols"]] == [
        "AAPL", "BTCUSDT", "EUR-USD", "MSFT", "NVDA"]
    assert get(client, "/api/v1/trades/BTCUSDT")["trades"][0]["price"] == "91843.2"


@pytest.mark.django_db(transaction=True)
def test_a_new_symbol_of_a_batch_rolled_back_is_registered_when_the_batch_is_retried(client, kafka_topics):
    pipeline = QuotesPipeline()
    events = {QUOTES: [Quote(id="rq-1", symbol="ETH-USD", ts=T0, bid=Decimal("3411.1"), ask=Decimal("3411.2"),
                             bid_size=Decimal(1), ask_size=Decimal(1))]}
    pipeline.prepare(events)
    with pytest.raises(RuntimeError), transaction.atomic():
        pipeline.store(events)
        raise RuntimeError("the database went away")  # as the runner retries after an OperationalError
    with transaction.atomic():
        pipeline.store(events)
    assert "ETH-USD" in [s["symbol"] for s in get(client, "/api/v1/symbols")["symbols"]]


@pytest.mark.parametrize("path", ["/api/v1/quotes/AAPL", "/api/v1/market-summary"])
def test_with_redis_away_the_redis_reads_are_503_in_the_error_shape(client, redis_away, path):
    response = client.get(path)
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "Redis did not answer" in response.json()["error"]["message"]


@pytest.mark.django_db(transaction=True)
def test_with_postgresql_away_quotes_and_the_summary_are_still_served_from_redis(client, settings):
    from streaming.testing import database_refusing

    symbols_seed(tickers=["AAPL", "MSFT"])
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[
        Quote(id="q1", symbol="AAPL", ts=T0, bid=Decimal("187.20"), ask=Decimal("187.22"), bid_size=Decimal(300),
              ask_size=Decimal(500))])
    settings.API_SYMBOLS_CACHE_SECONDS = 0  # the symbol list is read again on every request
    assert get(client, "/api/v1/quotes/AAPL")["bid"] == "187.2"
    with database_refusing():
        assert get(client, "/api/v1/quotes/AAPL")["bid"] == "187.2"
        assert {"AAPL", "MSFT"} <= {row["symbol"] for row in get(client, "/api/v1/market-summary")["symbols"]}
        response = client.get("/api/v1/trades/AAPL")  # a PostgreSQL read: its absence is said
        assert response.status_code == 503 and "PostgreSQL" in response.json()["error"]["message"]
    assert get(client, "/api/v1/quotes/AAPL")["bid"] == "187.2"


def test_the_latest_quote_comes_from_redis_with_exact_prices(client):
    older = Quote(id="q1", symbol="AAPL", ts=T0, bid=Decimal("187.20"), ask=Decimal("187.22"),
                  bid_size=Decimal(300), ask_size=Decimal(500))
    newer = Quote(id="q2", symbol="AAPL", ts=T0 + timedelta(seconds=1), bid=Decimal("123456789012.12345678"),
                  ask=Decimal("123456789012.12345679"), bid_size=Decimal("0.00000001"), ask_size=Decimal(0))
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[newer])
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[older])  # older: ignored
    assert get(client, "/api/v1/quotes/aapl") == {
        "symbol": "AAPL", "id": "q2", "time": "2026-03-02T14:30:01Z", "bid": "123456789012.12345678",
        "ask": "123456789012.12345679", "bid_size": "0.00000001", "ask_size": "0", "spread": "0.00000001",
    }


@pytest.mark.django_db(transaction=True)
def test_quotes_are_stored_while_redis_is_away_and_the_latest_is_served_once_it_is_back(client, settings,
                                                                                        monkeypatch):
    from market.models import Quote as QuoteRow
    from streaming import redis as redis_module
    from streaming.testing import redis_refusing

    monkeypatch.setattr(redis_module, "RETRY_SECONDS", 0)  # the next batch tries Redis again

    pipeline = QuotesPipeline()

    def consume(*quotes):
        events = {QUOTES: list(quotes)}
        pipeline.prepare(events)
        with transaction.atomic():
            stored = pipeline.store(events)
        pipeline.after_commit(stored)

    def quote(id_, symbol, seconds, bid):
        return Quote(id=id_, symbol=symbol, ts=T0 + timedelta(seconds=seconds), bid=Decimal(bid),
                     ask=Decimal(bid) + Decimal("0.02"), bid_size=Decimal(1), ask_size=Decimal(1))

    with redis_refusing(settings):
        consume(quote("q1", "AAPL", 0, "187.10"), quote("q2", "AAPL", 1, "187.12"))
        consume(quote("q3", "NVDA", 2, "950.00"))
    assert QuoteRow.objects.count() == 3
    consume(quote("q4", "MSFT", 3, "415.00"))  # Redis is back: what waited goes with this batch
    assert [get(client, f"/api/v1/quotes/{s}")["bid"] for s in ("AAPL", "NVDA", "MSFT")] == [
        "187.12", "950", "415"]


def test_a_quote_of_an_unknown_symbol_or_before_any_quote_is_404(client):
    assert_error(get(client, "/api/v1/quotes/NOPE", 404), "unknown_symbol", "NOPE", "/api/v1/symbols")
    assert_error(get(client, "/api/v1/quotes/MSFT", 404), "no_quote", "MSFT")


# --- trades ------------------------------------------------------------------------------------
def test_trades_are_newest_first_by_default_and_oldest_first_with_sort_asc(client):
    trades = make_trades(20)
    store_trades(trades)
    newest = get(client, "/api/v1/trades/AAPL?limit=5")
    expected = sorted(trades, key=lambda t: (t.ts, t.id), reverse=True)
    assert [t["id"] for t in newest["trades"]] == [t.id for t in expected[:5]]
    assert newest["trades"][0] == {"id": "AAPL-00019", "symbol": "AAPL", "time": "2026-03-02T14:31:03Z", "seq": 19,
                                   "price": "187.06", "size": "5", "side": "buy"}
    oldest = get(client, "/api/v1/trades/AAPL?limit=3&sort=asc")
    assert [t["id"] for t in oldest["trades"]] == ["AAPL-00000", "AAPL-00001", "AAPL-00002"]
    assert get(client, "/api/v1/trades/AAPL")["next"] is None  # 20 < the default limit of 100


@pytest.mark.parametrize("sort", ["desc", "asc"])
def test_following_next_links_returns_every_trade_once_even_with_equal_timestamps(client, sort):
    trades = make_trades(51)  # pairs share a timestamp, and 7-row pages split pairs
    store_trades(trades + make_trades(5, symbol="MSFT"))
    pages = follow(client, f"/api/v1/trades/AAPL?limit=7&sort={sort}")
    assert [len(p["trades"]) for p in pages] == [7] * 7 + [2]
    ids = [t["id"] for page in pages for t in page["trades"]]
    expected = sorted(trades, key=lambda t: (t.ts, t.id), reverse=sort == "desc")
    assert ids == [t.id for t in expected]


def test_start_and_end_bound_trades_in_rfc3339_or_epoch_ms(client):
    trades = make_trades(20, same_time_pairs=False)  # one every 7 s from T0
    store_trades(trades)
    start, end = T0 + timedelta(seconds=14), T0 + timedelta(seconds=35)  # trades 2..4; end is exclusive
    in_range = ["AAPL-00004", "AAPL-00003", "AAPL-00002"]
    rfc = get(client, "/api/v1/trades/AAPL?start=2026-03-02T14:30:14Z&end=2026-03-02T09:30:35-05:00")
    assert [t["id"] for t in rfc["trades"]] == in_range
    epoch = get(client, f"/api/v1/trades/AAPL?start={int(start.timestamp() * 1000)}&end={int(end.timestamp() * 1000)}")
    assert [t["id"] for t in epoch["trades"]] == in_range
    # An offset's "+" typed into a URL as it is arrives as a space; %2B is the same time.
    for start_text in ("2026-03-02T15:30:14+01:00", "2026-03-02T15:30:14%2B01:00", "2026-03-02t15:30:14+0100",
                       "2026-03-02T15:30:14.000+0100"):
        unencoded = get(client, f"/api/v1/trades/AAPL?start={start_text}&end=2026-03-02T14:30:35Z")
        assert [t["id"] for t in unencoded["trades"]] == in_range, start_text
    # Rows are stored to the microsecond: a bound between two is the later one, for start and end alike.
    past_14s = get(client, "/api/v1/trades/AAPL?start=2026-03-02T14:30:14.0000001Z&end=2026-03-02T14:30:35.0000001Z")
    assert [t["id"] for t in past_14s["trades"]] == ["AAPL-00005", "AAPL-00004", "AAPL-00003"]
    pages = follow(client, "/api/v1/trades/AAPL?start=2026-03-02T14:30:14Z&end=2026-03-02T14:30:35Z&limit=2")
    assert [t["id"] for p in pages for t in p["trades"]] == in_range
    assert get(client, "/api/v1/trades/AAPL?start=2026-03-03")["trades"] == []


@pytest.mark.parametrize("sort", ["desc", "asc"])
def test_trades_of_one_instant_come_in_tape_order_across_pages(client, sort):
    # A millisecond feed: ten trades an instant, their ids digests (as replay makes them), so id order
    # is not the order they traded in; seq is. Pages of 4 split every instant.
    trades = [Trade(id=hashlib.sha256(f"{i}".encode()).hexdigest()[:24], symbol="AAPL",
                    ts=T0 + timedelta(milliseconds=i // 10), seq=i, price=Decimal("187.00") + i, size=Decimal(1),
                    side="buy") for i in range(30)]
    store_trades(trades)
    pages = follow(client, f"/api/v1/trades/AAPL?limit=4&sort={sort}")
    assert [t["seq"] for page in pages for t in page["trades"]] == sorted(range(30), reverse=sort == "desc")
    newest = get(client, "/api/v1/trades/AAPL?limit=1")["trades"][0]
    candle = get(client, "/api/v1/candles/AAPL?interval=1m")["candles"][0]
    assert newest["price"] == candle["close"] == "216"  # the tape's last trade is the candle's close


@pytest.mark.parametrize(("query", "mentions"), [
    ("limit=-1", ["limit", "1 to 1000"]),
    ("limit=0", ["limit", "1 to 1000"]),
    ("limit=100000", ["limit", "1 to 1000"]),
    ("limit=abc", ["limit"]),
    ("limit=5_0", ["limit", "1 to 1000"]),
    ("limit=%EF%BC%95", ["limit", "1 to 1000"]),  # a full-width 5
    ("start=garbage", ["start", "RFC 3339"]),
    ("end=2026-13-45T99:00:00Z", ["end"]),
    ("start=2026-03-02T14:30:00", ["start", "time zone"]),
    ("start=99999999999999999", ["start"]),
    ("start=1795766400", ["start", "epoch seconds are 1795766400000 in milliseconds"]),  # seconds, not ms
    ("start=-1795867200000", ["start", "before 1970"]),
    ("start=%EF%BC%91795766400000", ["start", "not a time"]),  # a full-width 1
    ("start=2026-11-27T12:00:00Z%01", ["start", "not a time"]),  # Python's fromisoformat takes it
    ("end=20261127", ["end", "a date is written 2026-03-02"]),
    ("start=2026-03-02T15:00:00Z&end=2026-03-02T14:00:00Z", ["end", "after start"]),
    ("sort=newest", ["sort", "desc", "asc"]),
    ("limit=1&limit=2", ["limit", "given more than once"]),
])
def test_bad_trade_parameters_are_400_saying_what_is_allowed(client, query, mentions):
    body = get(client, f"/api/v1/trades/AAPL?{query}", 400)
    assert_error(body, "invalid_parameter", *mentions)
    assert body["error"]["details"]


def test_a_foreign_or_mismatched_cursor_is_400(client):
    store_trades(make_trades(10))
    next_url = get(client, "/api/v1/trades/AAPL?limit=2")["next"]
    cursor = next_url.split("cursor=")[1]
    assert_error(get(client, "/api/v1/trades/AAPL?cursor=not-a-cursor", 400), "invalid_cursor", "next")
    assert_error(get(client, f"/api/v1/trades/AAPL?cursor={cursor}&sort=asc", 400), "invalid_cursor", "sort=desc")
    assert_error(get(client, "/api/v1/trades/AAPL?cursor=" + "A" * 600, 400), "invalid_cursor")


def test_a_cursor_works_only_on_the_endpoint_that_issued_it(client):
    store_trades(make_trades(10, every=timedelta(minutes=1)))
    cursors = {
        "trades": get(client, "/api/v1/trades/AAPL?limit=1")["next"].split("cursor=")[1],
        "candles": get(client, "/api/v1/candles/AAPL?limit=1")["next"].split("cursor=")[1],
    }
    for pages, endpoint in (("trades", "/api/v1/trades/AAPL"), ("candles", "/api/v1/candles/AAPL"),
                            ("alerts", "/api/v1/alerts")):
        for issuer, cursor in cursors.items():
            if issuer != pages:
                assert_error(get(client, f"{endpoint}?limit=1&cursor={cursor}", 400), "invalid_cursor",
                             f"not one of {pages} pages")


def test_a_cursor_works_only_for_the_symbol_interval_and_filters_it_was_issued_for(client):
    store_trades(make_trades(10, every=timedelta(minutes=1)) + make_trades(10, symbol="MSFT", every=timedelta(minutes=1)))
    trades = get(client, "/api/v1/trades/AAPL?limit=1")["next"].split("cursor=")[1]
    candles = get(client, "/api/v1/candles/AAPL?limit=1")["next"].split("cursor=")[1]
    assert get(client, f"/api/v1/trades/AAPL?limit=1&cursor={trades}")["trades"]  # where it belongs
    for moved in (f"/api/v1/trades/MSFT?limit=1&cursor={trades}", f"/api/v1/candles/MSFT?limit=1&cursor={candles}",
                  f"/api/v1/candles/AAPL?limit=1&interval=5m&cursor={candles}"):
        assert_error(get(client, moved, 400), "invalid_cursor", "another symbol, interval or filter")


@pytest.mark.parametrize("inside", [
    b',"desc",1795766744609096,"a\\u0000b",1]',  # a NUL
    b',"desc",1795766744609096,"\\ud800",3]',  # a lone surrogate: not UTF-8
    b',"desc",1795766744609096,"' + b"x" * 65 + b'",3]',  # longer than any id
    b',"desc",1795766744609096,"a",-1]', b',"desc",1795766744609096,"a",true]', b',"desc",1795766744609096,"a",1,2]',
    b',"desc","1795766744609096","a",1]', b',"desc",1.5,"a",1]', b',"desc",true,"a",1]',  # times not whole numbers
])
def test_a_forged_cursor_is_400_not_a_database_error(client, inside):
    import base64

    for listing, endpoint in (("trades AAPL", "/api/v1/trades/AAPL"), ("candles AAPL 1m", "/api/v1/candles/AAPL"),
                              ("alerts", "/api/v1/alerts")):
        forged = base64.urlsafe_b64encode(b'["' + listing.encode() + b'"' + inside).decode().rstrip("=")
        assert_error(get(client, f"{endpoint}?cursor={forged}", 400), "invalid_cursor", "not one this API issued")


def test_an_empty_parameter_counts_as_absent(client):
    assert get(client, "/api/v1/trades/AAPL?limit=&start=&sort=")["trades"] == []


def test_trades_of_an_unknown_symbol_are_404(client):
    assert_error(get(client, "/api/v1/trades/NOPE", 404), "unknown_symbol")
    assert_error(get(client, "/api/v1/trades/" + "X" * 300, 404), "unknown_symbol")
    for endpoint in ("trades", "quotes", "candles"):  # not a symbol's characters: never a database error
        assert_error(get(client, f"/api/v1/{endpoint}/AAPL%E2%82%AC", 404), "unknown_symbol")
        # Nor MSFT: the long s is an S only in str.upper()
        assert_error(get(client, f"/api/v1/{endpoint}/M%C5%BFFT?interval=1m", 404), "unknown_symbol")


def test_a_nul_character_anywhere_in_the_url_is_a_400_never_a_database_error(client, settings):
    for url in ("/api/v1/trades/AAPL%00", "/api/v1/alerts?symbol=A%00", "/api/v1/alerts/al%001/acknowledge"):
        assert_error(get(client, url, 400), "bad_request", "NUL")
    settings.DEBUG = False
    for url in ("/symbols/A%00/", "/alerts/a%00b/row", "/alerts/?symbol=%00"):  # the dashboard's pages
        assert client.get(url).status_code == 400, url


# --- candles -----------------------------------------------------------------------------------
def test_candles_have_plain_fields_and_an_exact_vwap(client):
    store_trades(make_trades(40, every=timedelta(seconds=5)))  # 20 timestamps 5 s apart: 2 minutes
    body = get(client, "/api/v1/candles/AAPL?interval=1m")
    assert body["symbol"] == "AAPL" and body["interval"] == "1m" and body["next"] is None
    assert [c["time"] for c in body["candles"]] == ["2026-03-02T14:31:00Z", "2026-03-02T14:30:00Z"]
    assert set(body["candles"][0]) == {"time", "open", "high", "low", "close", "volume", "trades", "vwap"}
    stored = Candle.objects.get(symbol="AAPL", interval="1m", time=T0)
    first = body["candles"][1]
    assert first["trades"] == stored.trades == 24
    assert Decimal(first["volume"]) == stored.volume
    assert Decimal(first["vwap"]) == vwap(stored.notional, stored.volume)
    assert (first["open"], first["close"]) == ("187", str(stored.close.normalize()))
    assert [c["time"] for c in get(client, "/api/v1/candles/AAPL?interval=1h")["candles"]] == ["2026-03-02T14:00:00Z"]


def test_candle_pages_follow_in_either_order_and_respect_start_and_end(client):
    store_trades(make_trades(30, every=timedelta(seconds=60), same_time_pairs=False))  # 30 one-minute candles
    newest_first = [c["time"] for p in follow(client, "/api/v1/candles/AAPL?limit=4") for c in p["candles"]]
    assert len(newest_first) == 30 and newest_first == sorted(newest_first, reverse=True)
    oldest_first = [c["time"] for p in follow(client, "/api/v1/candles/AAPL?limit=4&sort=asc") for c in p["candles"]]
    assert oldest_first == newest_first[::-1]
    window = get(client, "/api/v1/candles/AAPL?start=2026-03-02T14:35:00Z&end=2026-03-02T14:38:00Z&sort=asc")
    assert [c["time"] for c in window["candles"]] == [
        "2026-03-02T14:35:00Z", "2026-03-02T14:36:00Z", "2026-03-02T14:37:00Z"]


@pytest.mark.parametrize(("query", "mentions"), [
    ("interval=7m", ["interval", "1m, 5m, 15m, 1h, 4h, 1d"]),
    ("interval=1M", ["interval", "1m, 5m"]),
    ("limit=-1", ["limit", "1 to 5000"]),
    ("limit=100000", ["limit", "1 to 5000"]),
    ("start=yesterday", ["start"]),
    ("end=1e10", ["end"]),
    ("interval=1m&interval=5m", ["interval", "given more than once"]),
])
def test_bad_candle_parameters_are_400_saying_what_is_allowed(client, query, mentions):
    assert_error(get(client, f"/api/v1/candles/AAPL?{query}", 400), "invalid_parameter", *mentions)


def test_candles_of_an_unknown_symbol_are_404(client):
    assert_error(get(client, "/api/v1/candles/NOPE?interval=1m", 404), "unknown_symbol")


# --- market summary ----------------------------------------------------------------------------
def test_the_market_summary_joins_last_trade_quote_and_24h_stats_from_redis(client, redis_clean):
    redis_clean.set(STATS_KEY.format("AAPL"), json.dumps({
        "symbol": "AAPL", "open_24h": "180", "last": "186", "change_24h": "6", "change_pct_24h": "3.33",
        "high_24h": "187.5", "low_24h": "179.25", "volume_24h": "123456.5", "vwap_24h": "183.12345678",
        "trades_24h": 4321, "last_trade_time": "2026-03-02T14:29:59+00:00", "computed_at": "2026-03-02T14:30:00+00:00",
    }))
    latest_events_store(key_format=LATEST_TRADE_KEY, events=[Trade(
        id="t9", symbol="AAPL", ts=T0 + timedelta(seconds=3), seq=9, price=Decimal("189.00"), size=Decimal(1),
        side="buy")])
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[Quote(
        id="q9", symbol="AAPL", ts=T0 + timedelta(seconds=2), bid=Decimal("188.98"), ask=Decimal("189.01"),
        bid_size=Decimal(1), ask_size=Decimal(1))])
    rows = {row["symbol"]: row for row in get(client, "/api/v1/market-summary")["symbols"]}
    assert list(rows) == ["AAPL", "MSFT", "NVDA"]
    assert rows["AAPL"] == {
        "symbol": "AAPL", "last": "189", "last_trade_time": "2026-03-02T14:30:03Z", "change_24h": "9",
        "change_pct_24h": "5.00", "open_24h": "180", "high_24h": "189", "low_24h": "179.25",
        "volume_24h": "123456.5", "vwap_24h": "183.12345678", "trades_24h": 4321, "bid": "188.98", "ask": "189.01",
        "quote_time": "2026-03-02T14:30:02Z", "stats_time": "2026-03-02T14:30:00Z",
    }
    assert set(rows["MSFT"].values()) == {"MSFT", None}  # nothing known yet: nulls, nothing computed


# --- the error shape everywhere under /api/ ----------------------------------------------------
def test_an_endpoint_with_a_slash_too_many_or_too_few_is_redirected_with_its_method_and_query(client):
    response = client.get("/api/v1/trades/AAPL/?limit=5&sort=asc")
    assert (response.status_code, response["Location"]) == (308, "/api/v1/trades/AAPL?limit=5&sort=asc")
    # 308, not 301: a client repeats the POST there (after a 301 many send a GET instead)
    response = Client(enforce_csrf_checks=True).post("/api/v1/alerts/al-1/acknowledge/")
    assert (response.status_code, response["Location"]) == (308, "/api/v1/alerts/al-1/acknowledge")
    assert client.get("/api/docs")["Location"] == "/api/docs/"
    assert client.get("/api/v1/trades/A%3Fb/")["Location"] == "/api/v1/trades/A%3Fb"  # still the path's
    assert client.get("/api/v1/trades/A%25B/")["Location"] == "/api/v1/trades/A%25B"
    assert_error(get(client, "/api/v1/symbols//", 404), "not_found")  # one slash too many, not any number
    for url in ("/api/v1/trades/", "/api/v1/nothing-here/", "/api/v1/alerts/al-1/"):  # no endpoint either way
        assert_error(get(client, url, 404), "not_found")


def test_unknown_api_urls_and_methods_answer_in_the_error_shape(client, settings):
    assert_error(get(client, "/api/v1/nothing-here", 404), "not_found", "/api/docs/")
    for url in ("/api/v1/symbols?format=xml", "/api/v1/trades/AAPL?format=csv", "/api/v1/alerts?format=foo"):
        assert_error(get(client, url, 404), "not_found")
    assert_error(get(client, "/api/v2/symbols", 404), "not_found")
    for debug in (False, True):  # with DEBUG on, Django answered with its HTML debug page or, reading the
        settings.DEBUG = debug      # parameters again, a 500
        response = client.get("/api/v1/symbols", HTTP_HOST="evil.example")  # not in ALLOWED_HOSTS
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
        response = client.get("/api/v1/trades/AAPL?" + "&".join(f"p{i}=1" for i in range(1100)))
        assert_error(response.json(), "bad_request", "more than 1000 query parameters")
        assert response.status_code == 400
    for method, url in (("post", "/api/v1/symbols"), ("delete", "/api/v1/trades/AAPL"), ("put", "/api/v1/alerts"),
                        ("patch", "/api/v1/quotes/AAPL"), ("post", "/api/v1/market-summary")):
        response = getattr(client, method)(url)
        assert response.status_code == 405, (method, url)
        assert_error(response.json(), "method_not_allowed")
        assert "GET" in response["Allow"]


def test_the_browsable_api_renders_for_a_browser(client):
    response = client.get("/api/v1/trades/AAPL?limit=1", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"<html" in response.content and b"Trade List" in response.content


def test_times_are_utc_rfc3339(client):
    store_trades(make_trades(1, start=datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)))
    assert get(client, "/api/v1/trades/AAPL")["trades"][0]["time"] == "2026-03-02T09:30:00.123456Z"


def test_the_fast_renderers_agree_with_the_documented_serializers(client):
    from market import selectors
    from market.api.serializers import CandleSerializer, TradeSerializer, candles_json, trades_json

    store_trades(make_trades(40, every=timedelta(seconds=5)) + make_trades(
        3, symbol="MSFT", start=datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)))
    for symbol in ("AAPL", "MSFT"):
        trades = selectors.trade_page(symbol=symbol, limit=100)
        assert trades_json(trades) == TradeSerializer(trades, many=True).data
        candles = selectors.candle_page(symbol=symbol, interval="1m", limit=100)
        assert candles_json(candles) == CandleSerializer(candles, many=True).data


def test_the_fast_quote_and_summary_renderers_agree_with_the_documented_serializers():
    from market.api.serializers import QuoteSerializer, SummaryRowSerializer, quote_json, summary_json
    from market.selectors import SummaryRow
    from streaming.schemas import Quote

    quote = Quote(id="q-1", symbol="AAPL", ts=datetime(2026, 3, 2, 9, 30, 0, 5, tzinfo=UTC), bid=Decimal("187.2"),
                  ask=Decimal("187.23"), bid_size=Decimal("300"), ask_size=Decimal("0.5"))
    assert quote_json("AAPL", quote) == QuoteSerializer({
        "symbol": "AAPL", "id": quote.id, "ts": quote.ts, "bid": quote.bid, "ask": quote.ask,
        "bid_size": quote.bid_size, "ask_size": quote.ask_size, "spread": quote.ask - quote.bid}).data
    full = SummaryRow(symbol="AAPL", last=Decimal("187.23"), last_trade_time=quote.ts, change_24h=Decimal("-1.5"),
                      change_pct_24h=Decimal("-0.8"), open_24h=Decimal("188.73"), high_24h=Decimal("190"),
                      low_24h=Decimal("186.01"), volume_24h=Decimal("123456.5"), vwap_24h=Decimal("187.9"),
                      trades_24h=4012, bid=Decimal("187.2"), ask=Decimal("187.25"), quote_time=quote.ts,
                      stats_time=quote.ts)
    rows = [full, SummaryRow(symbol="MSFT")]
    assert summary_json(rows) == SummaryRowSerializer(rows, many=True).data


def _four_reads_throttled_at_three_a_minute(forwarded_for: str | None = None,
                                            **env: str) -> tuple[list[int], dict, str | None]:
    """Four reads in a process started with API_THROTTLE_ANON=3/min (DRF fixes its throttle classes at
    import, so a process started with the setting is the honest test): statuses, the last body and
    its Retry-After. `forwarded_for`: each read's X-Forwarded-For, formatted with its number."""
    import os
    import subprocess
    import sys

    from django.conf import settings
    from django.db import connection

    database = connection.settings_dict
    code = ("import json, django; django.setup(); from django.test import Client; c = Client(HTTP_HOST='localhost'); "
            f"xff = {forwarded_for!r}; "
            "rs = [c.get('/api/v1/symbols', **({'HTTP_X_FORWARDED_FOR': xff.format(i)} if xff else {})) "
            "for i in range(4)]; "
            "print(json.dumps([[r.status_code for r in rs], rs[-1].json(), rs[-1].headers.get('Retry-After')]))")
    env = {**os.environ, "API_THROTTLE_ANON": "3/min", "TIMESCALE_URL":
           f"postgresql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/"
           f"{database['NAME']}", **env}
    result = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_reads_over_the_configured_anonymous_rate_get_429_in_the_error_shape(django_db_setup, redis_clean):
    # The counts live in Redis (shared by the web processes): redis_clean forgets an earlier run's.
    statuses, body, retry_after = _four_reads_throttled_at_three_a_minute()
    assert statuses == [200, 200, 200, 429]
    assert body["error"]["code"] == "throttled" and body["error"]["message"]
    assert int(retry_after) > 0


@pytest.mark.parametrize(("proxies", "forwarded_for", "statuses"), [
    ("0", "10.0.0.{}", [200, 200, 200, 429]),  # no proxy in front: the header is the client's own, ignored
    ("1", "10.0.0.{}, 192.0.2.7", [200, 200, 200, 429]),  # behind one: what it appended, not what came before
    ("1", "10.0.0.9, 192.0.2.{}", [200, 200, 200, 200]),  # four clients behind the proxy
])
def test_a_client_is_counted_by_the_address_a_trusted_proxy_gave_not_one_it_made_up(
        django_db_setup, redis_clean, proxies, forwarded_for, statuses):
    assert _four_reads_throttled_at_three_a_minute(forwarded_for, TRUSTED_PROXIES=proxies)[0] == statuses


def test_with_redis_unreachable_throttled_reads_are_let_through_uncounted(django_db_setup):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        statuses, body, _ = _four_reads_throttled_at_three_a_minute(
            REDIS_URL=f"redis://127.0.0.1:{closed.getsockname()[1]}/0")
    assert statuses == [200, 200, 200, 200]
    assert "error" not in body
