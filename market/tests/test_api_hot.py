"""The hot reads (market/api/hot.py) answer exactly what Django answers, and leave everything else to it.

Requests go in process through the ASGI stack daphne serves (HotReads in front of
Django's handler), against the test database and Redis.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

import hypothesis
import msgspec
import pytest
from django.db import connections
from django.http import Http404
from django.test import override_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from finstream.asgi_handler import SyncStackASGIHandler
from market import selectors
from market.api.hot import HotReads, wants_plain_json
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from market.models import Candle
from market.rollups import STATS_KEY
from market.services import LATEST_QUOTE_KEY, LATEST_TRADE_KEY, latest_events_store, symbols_seed
from market.tests.api_data import T0, make_trades, store_trades
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
def stack(transactional_db, redis_clean, settings, monkeypatch):
    """(request, Django's handler counted): one event loop for the test, as daphne's; the database
    committed, since Django's view and the hot path's pool use connections of their own."""
    settings.API_SYMBOLS_CACHE_SECONDS = 60
    # Django runs each request's sync code in a thread of its own: a connection kept for reuse
    # would outlive the thread (and the test database). The web process uses a pool instead.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
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
    with asyncio.Runner() as runner:
        stack = HotStack(runner)
        yield stack
        runner.run(stack.app.aclose())


class HotStack:
    def __init__(self, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.django = DjangoCounted()
        self.app = HotReads(self.django)

    def get(self, path: str, **kwargs):
        return self.runner.run(call(self.app, path, **kwargs))

    def get_at_once(self, count: int, path: str, **kwargs) -> list:
        """`count` requests in flight together on the loop, as daphne holds them."""
        async def all_at_once():
            return await asyncio.gather(*(call(self.app, path, **kwargs) for _ in range(count)))
        return self.runner.run(all_at_once())


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
               "root_path": "", "headers": [*headers] if any(k == b"host" for k, _ in headers)
               else [(b"host", b"testserver"), *headers],
               "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}, receive, send)
    return messages[0]["status"], messages[0]["headers"], b"".join(m.get("body", b"") for m in messages[1:])


@pytest.mark.parametrize("path", ["/api/v1/quotes/aapl", "/api/v1/market-summary"])
def test_after_django_answered_once_the_hot_path_answers_the_same_bytes_and_headers(stack, path):
    request, django = stack.get, stack.django
    through_django = request(path, headers=JSON)
    assert django.calls == 1 and through_django[0] == 200
    hot = request(path, headers=JSON)
    assert django.calls == 1, "the second request reached Django"
    assert hot == through_django
    assert request(path, query=b"format=json") == through_django  # no Accept, format=json
    assert django.calls == 1
    body = json.loads(hot[2])
    if "symbol" in body:
        assert body["bid"] == "187.2" and body["ask_size"] == "0.5"
    else:
        assert [row["symbol"] for row in body["symbols"]] == ["AAPL", "MSFT"]
        assert body["symbols"][0]["last"] == "187.21" and body["symbols"][1]["last"] is None


def test_the_hot_quote_follows_redis_and_the_summary_rerenders_only_what_changed(stack):
    request, django = stack.get, stack.django
    request("/api/v1/quotes/AAPL", headers=JSON)
    request("/api/v1/market-summary", headers=JSON)
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[Quote(
        id="q2", symbol="AAPL", ts=T0 + timedelta(seconds=5), bid=Decimal("190"), ask=Decimal("190.01"),
        bid_size=Decimal(1), ask_size=Decimal(1))])
    assert json.loads(request("/api/v1/quotes/AAPL", headers=JSON)[2])["id"] == "q2"
    summary = json.loads(request("/api/v1/market-summary", headers=JSON)[2])
    assert summary["symbols"][0]["bid"] == "190" and django.calls == 2


@pytest.mark.parametrize(("path", "query", "headers", "method", "status"), [
    ("/api/v1/quotes/AAPL", b"", [(b"accept", b"text/html,application/xhtml+xml")], "GET", 200),  # browsable
    ("/api/v1/quotes/AAPL", b"", [(b"accept", b"application/json; indent=4")], "GET", 200),
    ("/api/v1/quotes/AAPL", b"", [(b"accept", b"application/xml")], "GET", 406),
    ("/api/v1/quotes/AAPL", b"format=api", JSON, "GET", 406),
    ("/api/v1/quotes/AAPL", b"", JSON, "HEAD", 200),
    ("/api/v1/quotes/AAPL", b"", JSON, "POST", 405),  # a read endpoint: GET only
    ("/api/v1/quotes/NOPE", b"", JSON, "GET", 404),  # unknown_symbol
    ("/api/v1/quotes/MSFT", b"", JSON, "GET", 404),  # no_quote yet
    ("/api/v1/quotes/AAPL/", b"", JSON, "GET", 308),
    ("/api/v1/market-summary/", b"", JSON, "GET", 308),
    ("/api/v1/quotes/AAPL", b"", [*JSON, (b"authorization", b"Token not-a-token")], "GET", 401),
    ("/api/v1/quotes/AAPL", b"", [*JSON, (b"authorization", b"Basic Zm9vOmJhcg==")], "GET", 401),
    ("/api/v1/market-summary", b"", [*JSON, (b"host", b"evil.example")], "GET", 400),  # ALLOWED_HOSTS
    ("/api/v1/quotes/AAPL", "&".join(f"p{i}=1" for i in range(1001)).encode(), JSON, "GET", 400),  # too many
])
def test_what_only_django_can_answer_goes_to_django(stack, path, query, headers, method, status):
    request, django = stack.get, stack.django
    request("/api/v1/quotes/AAPL", headers=JSON)
    request("/api/v1/market-summary", headers=JSON)
    calls = django.calls
    assert request(path, query=query, headers=headers, method=method)[0] == status
    assert django.calls == calls + 1


def test_with_throttling_stricter_permissions_or_hot_reads_off_every_request_goes_to_django(stack, settings):
    request, django = stack.get, stack.django
    request("/api/v1/quotes/AAPL", headers=JSON)
    rest = settings.REST_FRAMEWORK
    throttled = {**rest, "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"]}
    users_only = {**rest, "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
    for change in ({"API_HOT_READS": False}, {"REST_FRAMEWORK": throttled}, {"REST_FRAMEWORK": users_only}):
        with override_settings(**change):
            request("/api/v1/quotes/AAPL", headers=JSON)
    assert django.calls == 4
    request("/api/v1/quotes/AAPL", headers=JSON)
    assert django.calls == 4


def test_a_summary_read_is_shared_only_by_requests_for_the_same_symbols(stack, monkeypatch):
    stack.get("/api/v1/market-summary", headers=JSON)

    async def list_changes_during_a_read():
        first = asyncio.ensure_future(call(stack.app, "/api/v1/market-summary", headers=JSON))
        await asyncio.sleep(0)  # the first request's read is in flight
        monkeypatch.setattr(selectors, "_recent_tickers", (selectors._recent_tickers[0], ["AAPL", "AMZN", "MSFT"]))
        return await asyncio.gather(first, call(stack.app, "/api/v1/market-summary", headers=JSON))
    before, after = stack.runner.run(list_changes_during_a_read())
    assert [row["symbol"] for row in json.loads(before[2])["symbols"]] == ["AAPL", "MSFT"]
    rows = json.loads(after[2])["symbols"]
    assert [row["symbol"] for row in rows] == ["AAPL", "AMZN", "MSFT"] and rows[1]["last"] is None


def test_a_stale_list_of_symbols_sends_the_request_to_django_which_refreshes_it(stack, monkeypatch):
    request, django = stack.get, stack.django
    request("/api/v1/quotes/AAPL", headers=JSON)
    monkeypatch.setattr(selectors, "_recent_tickers", (float("-inf"), ["AAPL", "MSFT"]))
    request("/api/v1/quotes/AAPL", headers=JSON)
    request("/api/v1/quotes/AAPL", headers=JSON)
    assert django.calls == 2


def test_hot_answers_are_counted_in_djangos_request_metrics(stack):
    request = stack.get
    labels = {"status": "200", "view": "quote-latest", "method": "GET"}
    request("/api/v1/quotes/AAPL", headers=JSON)
    before = REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels)
    request("/api/v1/quotes/AAPL", headers=JSON)
    request("/api/v1/quotes/AAPL", headers=JSON)
    assert REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) == before + 2


def test_concurrent_requests_share_a_redis_read_in_flight(stack, redis_clean):
    request, django = stack.get, stack.django
    request("/api/v1/market-summary", headers=JSON)

    def gets_run() -> int:
        return redis_clean.info("commandstats").get("cmdstat_get", {}).get("calls", 0)

    before = gets_run()
    bodies = stack.get_at_once(50, "/api/v1/market-summary", headers=JSON)
    assert len({body for _, _, body in bodies}) == 1 and django.calls == 1
    # Each summary read GETs the stats of 2 symbols; 50 unshared reads would be 100 GETs.
    assert gets_run() - before < 2 * 50 / 5


ACCEPT_HEADERS = [
    None, "*/*", "application/json", "application/*", "application/*, */*", " application/json ,*/*",
    "Application/JSON", "text/html", "text/html, */*", "text/*, */*", "text/html, application/json", "text/plain",
    "application/json;q=0.9", "application/json; indent=2", "*/*; q=1", "", "image/png", "application/xml",
    ", ".join(["x/y"] * 64 + ["application/json"]), ", ".join(["*/*"] * 65), "*/*" + " " * 8200,
]


@pytest.mark.parametrize("format_param", [None, "json", "api", "JSON"])
@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_plain_json_only_where_drfs_negotiation_surely_picks_compact_json(format_param, accept):
    """wants_plain_json against DRF's own content negotiation, the views' renderers."""
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    query = {} if format_param is None else {"format": format_param}
    request = Request(APIRequestFactory().get("/api/v1/quotes/AAPL", query, **headers))
    try:
        renderer, media_type = DefaultContentNegotiation().select_renderer(
            request, [JSONRenderer(), BrowsableAPIRenderer()])
        drf_plain = type(renderer) is JSONRenderer and media_type == "application/json"
    except (NotAcceptable, Http404):  # a range nothing renders; a format nothing renders
        drf_plain = False
    if wants_plain_json(format_param, accept):
        assert drf_plain
    if accept in (None, "*/*", "application/json", "application/*, */*") and format_param in (None, "json"):
        assert wants_plain_json(format_param, accept)  # the common cases do take the hot path


# --- candles: PostgreSQL renders the page; Django's view renders it in Python ---------------------
CANDLE_QUERIES = [
    b"", b"interval=5m", b"limit=3", b"limit=1&sort=asc", b"interval=1m&limit=4&start=2026-03-02T14:31:00Z",
    b"end=1772462100000&limit=2", b"start=2026-03-03", b"limit=", b"format=json&limit=2",
]


@pytest.fixture
def candles(stack):
    # Prices with up to 8 places and repeating VWAPs: the exact rounding is what is compared.
    thirds = Decimal("0.33333333")
    store_trades([msgspec.structs.replace(t, price=t.price + Decimal("0.00000007") * (i % 3),
                                          size=thirds * (1 + i % 7) if i % 5 == 0 else t.size)
                  for i, t in enumerate(make_trades(40, every=timedelta(seconds=23)))])
    return stack


@pytest.mark.parametrize("query", CANDLE_QUERIES)
def test_candle_pages_from_the_hot_path_are_djangos_bytes(candles, query, settings):
    request, django = candles.get, candles.django
    assert request("/api/v1/candles/AAPL", headers=JSON)[0] == 200  # Django's, to learn the headers
    settings.API_HOT_READS = False
    through_django = request("/api/v1/candles/AAPL", query=query, headers=JSON)
    settings.API_HOT_READS = True
    calls = django.calls
    hot = request("/api/v1/candles/AAPL", query=query, headers=JSON)
    assert django.calls == calls, "the hot path passed the request on"
    assert hot == through_django and hot[0] == 200


def test_following_hot_next_links_gives_every_candle_once(candles):
    seen, query = [], b"limit=3&sort=asc"
    while query is not None:
        page = json.loads(candles.get("/api/v1/candles/AAPL", query=query, headers=JSON)[2])
        seen.extend(candle["time"] for candle in page["candles"])
        query = page["next"] and page["next"].split("?", 1)[1].encode()
    assert seen == sorted(set(seen)) and len(seen) == Candle.objects.filter(symbol="AAPL", interval="1m").count()


@pytest.mark.parametrize(("query", "status"), [
    (b"interval=7m", 400), (b"limit=-1", 400), (b"limit=100000", 400), (b"start=yesterday", 400),
    (b"cursor=garbage", 400), (b"start=2026-03-03&end=2026-03-02", 400), (b"format=api", 200),
    (b"start=2026-03-02T12:00:00Z%00", 400), (b"end=%EF%BC%91772462100000", 400),
])
def test_candle_requests_only_django_can_answer_go_to_django(candles, query, status):
    candles.get("/api/v1/candles/AAPL", headers=JSON)
    calls = candles.django.calls
    headers = [(b"accept", b"text/html")] if query == b"format=api" else JSON
    assert candles.get("/api/v1/candles/AAPL", query=query, headers=headers)[0] == status
    assert candles.get("/api/v1/candles/NOPE", headers=JSON)[0] == 404
    assert candles.django.calls == calls + 2


_junk = st.one_of(st.just(""), st.text(alphabet="-0123456789:TZmdhasc.", max_size=12))
_times = st.one_of(st.none(), st.none(), st.sampled_from(["2026-03-02T14:31:00Z", "2026-03-02", "1772462100000",
                                                          "2026-03-02T14:31:00+05:00"]), _junk)


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(
    symbol=st.sampled_from(["AAPL", "AAPL", "aapl", "MSFT", "NOPE"]),
    params=st.fixed_dictionaries({
        "interval": st.one_of(st.none(), st.sampled_from(["1m", "5m", "1h", "1d"]), st.sampled_from(["1m"]), _junk),
        "limit": st.one_of(st.none(), st.integers(1, 6).map(str), st.sampled_from(["0", "-1", "5001", "1e3", ""])),
        "start": _times, "end": _times, "sort": st.one_of(st.none(), st.sampled_from(["asc", "desc", "up"])),
        "cursor": st.one_of(st.none(), st.none(), st.sampled_from(["garbage", "WyJhc2MiLDAsIiJd"])),
        "format": st.one_of(st.none(), st.none(), st.sampled_from(["json", "api", ""])),
    }),
    accept=st.sampled_from([None, None, "*/*", "application/json", "application/json", "text/html",
                            "Application/JSON", "application/json; indent=2"]),
)
def test_any_candle_request_gets_the_same_answer_with_hot_reads_on_or_off(candles, settings, symbol, params, accept):
    query = urlencode({key: value for key, value in params.items() if value is not None}).encode()
    headers = [] if accept is None else [(b"accept", accept.encode())]
    candles.get("/api/v1/candles/AAPL", headers=JSON)  # the headers to learn
    calls = candles.django.calls
    hot = candles.get(f"/api/v1/candles/{symbol}", query=query, headers=headers)
    hypothesis.event("answered by the hot path" if candles.django.calls == calls else "passed to Django")
    settings.API_HOT_READS = False
    through_django = candles.get(f"/api/v1/candles/{symbol}", query=query, headers=headers)
    settings.API_HOT_READS = True
    assert hot[0] == through_django[0]
    if dict(hot[1]).get(b"Content-Type", b"").startswith(b"application/json"):  # HTML carries a fresh CSRF token
        assert hot == through_django


def test_a_page_of_an_allowed_origin_gets_its_cors_headers_on_the_hot_paths_too(stack, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    request, django = stack.get, stack.django
    for path in ("/api/v1/market-summary", "/api/v1/market-summary", "/api/v1/quotes/AAPL"):
        status, headers, _ = request(path, headers=[*JSON, (b"origin", b"https://app.example.com")])
        assert status == 200 and (b"access-control-allow-origin", b"https://app.example.com") in headers
    assert django.calls == 3  # none answered by the hot path, which keeps no CORS headers
    request("/api/v1/market-summary", headers=JSON)  # learnt here: later answers carry no origin of another
    status, headers, _ = request("/api/v1/market-summary", headers=JSON)
    assert django.calls == 4 and not any(name.startswith(b"access-control-") for name, _ in headers)
    status, headers, _ = request("/api/v1/market-summary", headers=[*JSON, (b"origin", b"https://evil.example")])
    assert status == 200 and not any(name.startswith(b"access-control-") for name, _ in headers)
    status, headers, _ = request("/api/v1/trades/AAPL", method="OPTIONS", headers=[
        (b"origin", b"https://app.example.com"), (b"access-control-request-method", b"GET"),
        (b"access-control-request-headers", b"authorization")])
    assert status == 200 and (b"access-control-allow-origin", b"https://app.example.com") in headers
    assert b"authorization" in dict(headers)[b"access-control-allow-headers"]
