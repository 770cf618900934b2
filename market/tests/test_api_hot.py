"""The hot reads (market/api/hot.py) answer exactly what Django answers, and leave everything else to it.

Requests go in process through the ASGI stack daphne serves (HotReads in front of
Django's handler), against the test database and Redis.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from prometheus_client import REGISTRY

from finstream.asgi_handler import SyncStackASGIHandler
from market import selectors
from market.api.hot import HotReads, wants_plain_json
from market.rollups import STATS_KEY
from market.services import LATEST_QUOTE_KEY, LATEST_TRADE_KEY, latest_events_store, symbols_seed
from market.tests.api_data import T0
from streaming.schemas import Quote, Trade

pytestmark = pytest.mark.django_db

JSON = [(b"accept", b"application/json")]


class DjangoCounted:
    """Django's ASGI handler, counting the requests that reach it."""

    def __init__(self) -> None:
        self.app = SyncStackASGIHandler()
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture
def stack(redis_clean, settings, monkeypatch):
    settings.API_SYMBOLS_CACHE_SECONDS = 60
    monkeypatch.setattr(selectors, "_recent_tickers", (float("-inf"), []))  # this test's symbols, not the last's
    symbols_seed(tickers=["AAPL", "MSFT"])
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[Quote(
        id="q1", symbol="AAPL", ts=T0, bid=Decimal("187.20"), ask=Decimal("187.22"), bid_size=Decimal(300),
        ask_size=Decimal("0.5"))])
    latest_events_store(key_format=LATEST_TRADE_KEY, events=[Trade(
        id="t1", symbol="AAPL", ts=T0 + timedelta(seconds=1), seq=1, price=Decimal("187.21"), size=Decimal(100),
        side="buy")])
    redis_clean.set(STATS_KEY.format("AAPL"), json.dumps({
        "open_24h": "180", "last": "186", "high_24h": "187.5", "low_24h": "179.25", "volume_24h": "123456.5",
        "vwap_24h": "183.12345678", "trades_24h": 4321, "computed_at": "2026-03-02T14:30:00+00:00"}))
    # Keep the test's database connection open across requests (Django's test client does the same).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    django = DjangoCounted()
    yield HotReads(django), django
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


async def call(app, path: str, *, query: bytes = b"", headers=(), method: str = "GET"):
    """(status, headers, body) of one request through `app`, as daphne would make it."""
    messages, sent = [], []

    async def receive():
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Future()  # the client stays connected

    async def send(message):
        messages.append(message)

    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
               "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
               "root_path": "", "headers": [(b"host", b"testserver"), *headers],
               "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}, receive, send)
    return messages[0]["status"], messages[0]["headers"], b"".join(m.get("body", b"") for m in messages[1:])


def request(app, path: str, **kwargs):
    return async_to_sync(call)(app, path, **kwargs)


@pytest.mark.parametrize("path", ["/api/v1/quotes/aapl", "/api/v1/market-summary"])
def test_after_django_answered_once_the_hot_path_answers_the_same_bytes_and_headers(stack, path):
    app, django = stack
    through_django = request(app, path, headers=JSON)
    assert django.calls == 1 and through_django[0] == 200
    hot = request(app, path, headers=JSON)
    assert django.calls == 1, "the second request reached Django"
    assert hot == through_django
    assert request(app, path, query=b"format=json") == through_django  # no Accept, format=json
    assert django.calls == 1
    body = json.loads(hot[2])
    if "symbol" in body:
        assert body["bid"] == "187.2" and body["ask_size"] == "0.5"
    else:
        assert [row["symbol"] for row in body["symbols"]] == ["AAPL", "MSFT"]
        assert body["symbols"][0]["last"] == "187.21" and body["symbols"][1]["last"] is None


def test_the_hot_quote_follows_redis_and_the_summary_rerenders_only_what_changed(stack):
    app, django = stack
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    request(app, "/api/v1/market-summary", headers=JSON)
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[Quote(
        id="q2", symbol="AAPL", ts=T0 + timedelta(seconds=5), bid=Decimal("190"), ask=Decimal("190.01"),
        bid_size=Decimal(1), ask_size=Decimal(1))])
    assert json.loads(request(app, "/api/v1/quotes/AAPL", headers=JSON)[2])["id"] == "q2"
    summary = json.loads(request(app, "/api/v1/market-summary", headers=JSON)[2])
    assert summary["symbols"][0]["bid"] == "190" and django.calls == 2


@pytest.mark.parametrize(("path", "query", "headers", "method", "status"), [
    ("/api/v1/quotes/AAPL", b"", [(b"accept", b"text/html,application/xhtml+xml")], "GET", 200),  # browsable
    ("/api/v1/quotes/AAPL", b"", [(b"accept", b"application/json; indent=4")], "GET", 200),
    ("/api/v1/quotes/AAPL", b"", [(b"accept", b"application/xml")], "GET", 406),
    ("/api/v1/quotes/AAPL", b"format=api", JSON, "GET", 406),
    ("/api/v1/quotes/AAPL", b"x=1", JSON, "GET", 200),
    ("/api/v1/quotes/AAPL", b"", JSON, "HEAD", 200),
    ("/api/v1/quotes/AAPL", b"", JSON, "POST", 403),  # writes need a user
    ("/api/v1/quotes/NOPE", b"", JSON, "GET", 404),  # unknown_symbol
    ("/api/v1/quotes/MSFT", b"", JSON, "GET", 404),  # no_quote yet
    ("/api/v1/quotes/AAPL/", b"", JSON, "GET", 404),
    ("/api/v1/market-summary/", b"", JSON, "GET", 404),
])
def test_what_only_django_can_answer_goes_to_django(stack, path, query, headers, method, status):
    app, django = stack
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    request(app, "/api/v1/market-summary", headers=JSON)
    calls = django.calls
    assert request(app, path, query=query, headers=headers, method=method)[0] == status
    assert django.calls == calls + 1


def test_with_throttling_or_hot_reads_off_every_request_goes_to_django(stack, settings):
    app, django = stack
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    settings.API_HOT_READS = False
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    settings.API_HOT_READS = True
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"]}
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    assert django.calls == 3


def test_a_stale_list_of_symbols_sends_the_request_to_django_which_refreshes_it(stack, monkeypatch):
    app, django = stack
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    monkeypatch.setattr(selectors, "_recent_tickers", (float("-inf"), ["AAPL", "MSFT"]))
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    assert django.calls == 2


def test_hot_answers_are_counted_in_djangos_request_metrics(stack):
    app, _ = stack
    labels = {"status": "200", "view": "quote-latest", "method": "GET"}
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    before = REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels)
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    request(app, "/api/v1/quotes/AAPL", headers=JSON)
    assert REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) == before + 2


def test_concurrent_requests_share_a_redis_read_in_flight(stack, redis_clean):
    app, django = stack
    request(app, "/api/v1/market-summary", headers=JSON)

    def pipelines_run() -> int:
        return redis_clean.info("commandstats").get("cmdstat_get", {}).get("calls", 0)

    async def many():  # 50 requests at once on one event loop, as daphne holds them
        return await asyncio.gather(*(call(app, "/api/v1/market-summary", headers=JSON) for _ in range(50)))

    before = pipelines_run()
    bodies = async_to_sync(many)()
    assert len({body for _, _, body in bodies}) == 1 and django.calls == 1
    # Each summary read GETs the stats of 2 symbols; 50 unshared reads would be 100 GETs.
    assert pipelines_run() - before < 2 * 50 / 5


@pytest.mark.parametrize(("query", "accept", "plain"), [
    (b"", None, True),
    (b"", b"*/*", True),
    (b"", b"application/json", True),
    (b"", b"application/*, text/plain", True),
    (b"", b"Application/JSON", True),
    (b"format=json", b"text/html", True),  # format wins over Accept in DRF
    (b"", b"text/html", False),
    (b"", b"text/html, */*", False),
    (b"", b"text/plain", False),
    (b"", b"application/json;q=0.9", False),
    (b"format=json", b"application/json; indent=2", False),
    (b"format=api", None, False),
    (b"format=json&x=1", None, False),
    (b"limit=5", None, False),
])
def test_plain_json_is_what_drf_would_render_compactly_with_its_json_renderer(query, accept, plain):
    assert wants_plain_json(query, accept) is plain
