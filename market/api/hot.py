"""The hottest reads, answered before Django's request stack.

``GET /api/v1/quotes/{symbol}``, ``/api/v1/market-summary`` and
``/api/v1/candles/{symbol}`` are what dashboards poll. Through Django (the
middleware chain, URL resolution, DRF's request, content negotiation and
renderer) each costs ~1.7 ms of CPU on a 2-core machine before the view runs:
one web process tops out near 600 requests/s whatever the view does, and a
500-candle page rendered in Python near 80 (bench/api_rest.py). Here a quote
or the summary costs a Redis round trip and its body; a candle page one query
whose JSON PostgreSQL writes (selectors.candle_page_json_sql).

Only requests certain to get Django's answer are taken: an anonymous GET
(no Authorization header) for a host ALLOWED_HOSTS accepts, whose ``format``
is absent or ``json`` and that surely gets DRF's JSON (wants_plain_json), a
ticker the process knows to be active, parameters that validate, a quote that
exists. Everything else goes to Django unchanged: the browsable API in a
browser, credentials to check, unknown symbols and their 404s, invalid
parameters and their 400s, HEAD and OPTIONS, Redis or database errors, and
every request when throttling is configured (DRF keeps the count), when reads
need more than anonymous access, or when API_HOT_READS is off. The list of active
tickers is the one Django's views keep (refreshed every
API_SYMBOLS_CACHE_SECONDS); while it is stale, requests go to Django, which
refreshes it. Bodies come from the views' own functions, serializers and DRF's
JSONRenderer; the headers are those of the first 200 Django itself sent for
the endpoint (so security headers and Vary follow settings and middleware);
``next`` links are built on Django's request object (host validation, proxy
headers); each request is counted in django_prometheus's metrics under the
view's name. A client or a dashboard cannot tell which path answered
(market/tests/test_api_hot.py compares the two).
"""

from __future__ import annotations

import asyncio
import functools
import io
import time

import psycopg
import psycopg_pool
import redis.asyncio
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django_prometheus.middleware import Metrics
from redis.exceptions import RedisError
from rest_framework.renderers import JSONRenderer

from finstream.errors import ApiError
from market import selectors
from market.api.pagination import Position, next_url
from market.api.serializers import CandleQuerySerializer, quote_json, summary_json
from streaming.schemas import symbol_upper
from streaming.wire import epoch_us_time

QUOTE_PREFIX = "/api/v1/quotes/"
CANDLES_PREFIX = "/api/v1/candles/"
SUMMARY_PATH = "/api/v1/market-summary"
_JSON_RANGES = {"application/json", "application/*", "*/*"}
# DRF reads at most this much of an Accept header (rest_framework/negotiation.py).
_ACCEPT_MAX_BYTES, _ACCEPT_MAX_RANGES = 8192, 64
# Reads are answered here only where anyone may read: anything stricter is DRF's to enforce.
_OPEN_READS = {"rest_framework.permissions.AllowAny", "rest_framework.permissions.IsAuthenticatedOrReadOnly"}
_render = JSONRenderer().render


def wants_plain_json(format_param: str | None, accept: str | None) -> bool:
    """Whether DRF's content negotiation surely picks JSONRenderer and the media type
    "application/json" for this `format` parameter and Accept header (so its compact JSON and
    the Content-Type Django sent before). Anything less certain is left to DRF."""
    if format_param not in (None, "json"):
        return False
    if accept is None:
        return True  # DRF reads it as */*
    if len(accept) > _ACCEPT_MAX_BYTES:
        return False
    ranges = [part.strip() for part in accept.split(",")]
    # Exactly these spellings: DRF echoes a matched range as the Content-Type, with its case and
    # parameters (`; indent=4` also changes the output), and text/* or text/html can win HTML.
    return len(ranges) <= _ACCEPT_MAX_RANGES and all(r in _JSON_RANGES for r in ranges)


def _route(path_info: str) -> tuple[str | None, str | None]:
    """(view name, symbol) of a hot endpoint's path, else (None, None)."""
    if path_info == SUMMARY_PATH:
        return "market-summary", None
    for prefix, view in ((QUOTE_PREFIX, "quote-latest"), (CANDLES_PREFIX, "candle-list")):
        if path_info.startswith(prefix) and len(path_info) > len(prefix) and "/" not in path_info[len(prefix):]:
            return view, symbol_upper(path_info[len(prefix):])
    return None, None


def _request(scope) -> ASGIRequest | None:
    """Django's own request object, if Django would take the request as far as the view:
    its path without the script prefix, its query parsing, ALLOWED_HOSTS, and the host and
    scheme of `next` links (proxy headers) exactly as the view sees them."""
    try:
        request = ASGIRequest(scope, io.BytesIO())
        request.GET  # noqa: B018 - parsed here: too many fields is Django's 400 to give
        request.get_host()
    except (ValueError, SuspiciousOperation, RequestDataTooBig):  # DisallowedHost is a SuspiciousOperation
        return None
    return request


class _ViewMetrics:
    """django_prometheus's per-request metrics, as its two middlewares would record a GET of one view."""

    def __init__(self, view: str) -> None:
        m = Metrics.get_instance()
        self._metrics = m
        self._by_method = m.requests_by_method.labels(method="GET")
        self._by_view = {transport: m.requests_by_view_transport_method.labels(
            view=view, transport=transport, method="GET") for transport in ("http", "https")}
        self._by_transport = {t: m.requests_by_transport.labels(transport=t) for t in ("http", "https")}
        self._by_status = m.responses_by_status.labels(status="200")
        self._by_status_view = m.responses_by_status_view_method.labels(status="200", view=view, method="GET")
        self._charset = m.responses_by_charset.labels(charset="utf-8")
        self._latency = m.requests_latency_by_view_method.labels(view=view, method="GET")

    def count(self, request: ASGIRequest, *, body_bytes: int, seconds: float) -> None:
        m = self._metrics
        transport = "https" if request.is_secure() else "http"
        m.requests_total.inc()
        m.responses_total.inc()
        m.requests_latency_before.observe(seconds)
        m.requests_body_bytes.observe(0)  # a GET's
        if request.headers.get("x-requested-with") == "XMLHttpRequest":
            m.requests_ajax.inc()
        self._by_method.inc()
        self._by_transport[transport].inc()
        self._by_view[transport].inc()
        self._by_status.inc()
        self._by_status_view.inc()
        self._charset.inc()
        m.responses_body_bytes.observe(body_bytes)
        self._latency.observe(seconds)


class HotReads:
    """ASGI middleware in front of Django's handler (see the module docstring).

    Its Redis client and database pool belong to the event loop that first
    used them: daphne's, for the life of the process (tests call aclose()).
    """

    def __init__(self, app) -> None:
        self.app = app
        self._headers: dict[str, list[tuple[bytes, bytes]]] = {}
        self._metrics: dict[str, _ViewMetrics] = {}
        self._redis: redis.asyncio.Redis | None = None
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._in_flight: dict[tuple, asyncio.Future] = {}

    @staticmethod
    def enabled() -> bool:
        rest = settings.REST_FRAMEWORK
        return settings.API_HOT_READS and not rest.get("DEFAULT_THROTTLE_CLASSES") \
            and set(rest.get("DEFAULT_PERMISSION_CLASSES", ())) <= _OPEN_READS

    async def __call__(self, scope, receive, send) -> None:
        view = None
        if scope["type"] == "http" and scope["method"] == "GET" and "/api/v1/" in scope["path"] \
                and self.enabled():
            request = _request(scope)
            # A page of another origin gets its CORS headers from Django's middleware (none are kept here).
            if request is not None and "authorization" not in request.headers and "origin" not in request.headers \
                    and wants_plain_json(request.GET.get("format") or None, request.META.get("HTTP_ACCEPT")):
                view, symbol = _route(request.path_info)
        if view is None:
            return await self.app(scope, receive, send)
        if view not in self._headers:
            return await self.app(scope, receive, self._learning(view, send))
        started = time.perf_counter()
        try:
            if view == "market-summary":
                body = await self._summary()
            elif view == "quote-latest":
                body = await self._quote(symbol)
            else:
                body = await self._candles(request, symbol)
        except (RedisError, OSError, psycopg.Error, SuspiciousOperation):
            body = None  # Django answers, and reports the error its way
        if body is None:
            return await self.app(scope, receive, send)
        length = str(len(body)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (name, length if name.lower() == b"content-length" else value) for name, value in self._headers[view]]})
        await send({"type": "http.response.body", "body": body})
        self._metrics[view].count(request, body_bytes=len(body), seconds=time.perf_counter() - started)

    def _learning(self, view: str, send):
        """`send`, keeping the headers of the view's first 200 for the answers given here."""
        async def send_and_learn(message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self._headers[view] = [(name, value) for name, value in message["headers"]
                                       if name.lower() != b"set-cookie"]
                self._metrics.setdefault(view, _ViewMetrics(view))
            await send(message)
        return send_and_learn

    async def aclose(self) -> None:
        """Close the Redis client and the database pool (a server exiting need not)."""
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()
        self._redis = self._pool = None
        self._in_flight.clear()

    def _client(self) -> redis.asyncio.Redis:
        if self._redis is None:
            self._redis = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        return self._redis

    async def _database(self) -> psycopg_pool.AsyncConnectionPool:
        if self._pool is None:
            # Django's connection settings (prepare_threshold=None included: no server-side
            # prepared statements, which transaction-mode poolers such as PgBouncer break),
            # in a pool of its own beside Django's: up to 4 more connections per web process.
            params = {key: value for key, value in connections["default"].get_connection_params().items()
                      if isinstance(value, (str, int))}
            # Waits and reconnects as Django's pool does (settings.DATABASE_POOL_OPTIONS): a request
            # finds PostgreSQL away as soon, and answered again as soon after it returns.
            self._pool = psycopg_pool.AsyncConnectionPool(
                psycopg.conninfo.make_conninfo("", **params), open=False, min_size=1, max_size=4,
                timeout=settings.DATABASE_POOL_OPTIONS["timeout"],
                reconnect_timeout=settings.DATABASE_POOL_OPTIONS["reconnect_timeout"],
                kwargs={"autocommit": True, "prepare_threshold": None}, name="hot-reads")
            await self._pool.open()
        return self._pool

    async def _shared(self, key: tuple, read):
        """`read()`'s result, sharing one already in flight: under load, every request that
        arrives while the same Redis or database read is out gets its result (at most one
        round trip old) instead of queueing a read of its own."""
        task = self._in_flight.get(key)
        if task is None:
            task = self._in_flight[key] = asyncio.ensure_future(read())
            task.add_done_callback(functools.partial(self._read_done, key))
        return await asyncio.shield(task)  # a client that hangs up does not cancel the others' read

    def _read_done(self, key: tuple, task: asyncio.Future) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: when every waiter hung up, nobody else would

    @staticmethod
    def _known(ticker: str) -> bool:
        """Whether `ticker` is active by the list Django keeps; an unknown ticker or a stale
        list is Django's to answer (its 404, or the refresh)."""
        tickers = selectors.symbol_tickers_known(max_age=settings.API_SYMBOLS_CACHE_SECONDS)
        return tickers is not None and ticker in tickers

    async def _quote(self, ticker: str) -> bytes | None:
        if not self._known(ticker):
            return None
        raw = await self._shared(("quote", ticker), lambda: self._client().hget(*selectors.quote_latest_read(ticker)))
        quote = selectors.quote_decode(raw)
        return None if quote is None else _render(quote_json(ticker, quote))

    async def _summary(self) -> bytes | None:
        tickers = selectors.symbol_tickers_known(max_age=settings.API_SYMBOLS_CACHE_SECONDS)
        if tickers is None:
            return None
        tickers = tuple(tickers)

        def read():
            pipe = self._client().pipeline(transaction=False)
            selectors.market_summary_queue(pipe, tickers)
            return pipe.execute()
        replies = await self._shared(("summary", tickers), read)  # the replies line up with these tickers
        return b'{"symbols":[' + b",".join(
            _summary_row_json(symbol, *replies[3 * i:3 * i + 3]) for i, symbol in enumerate(tickers)) + b"]}"

    async def _candles(self, request: ASGIRequest, ticker: str) -> bytes | None:
        if not self._known(ticker):
            return None
        query = CandleQuerySerializer(data=request.GET, context={"symbol": ticker})
        try:
            if not query.is_valid():
                return None  # Django answers the 400 with the allowed values
        except ApiError:
            return None  # a cursor it did not issue: Django explains
        params = query.validated_data
        after, limit, sort = params.get("cursor"), params["limit"], params["sort"]
        sql, args = selectors.candle_page_json_sql(
            symbol=ticker, interval=params["interval"], start=params.get("start"), end=params.get("end"),
            after=None if after is None else after.time, descending=sort == "desc", limit=limit)

        async def read():
            async with (await self._database()).connection() as connection:
                cursor = await connection.execute(sql, args)
                return selectors.CandlePageJson(*await cursor.fetchone())
        page = await self._shared(("candles", sql, *args), read)
        link = b"null" if page.more_after_us is None else _render(next_url(
            request, Position(epoch_us_time(page.more_after_us)), sort=sort, listing=params["listing"]))
        return (b'{"symbol":' + _render(ticker) + b',"interval":' + _render(params["interval"])
                + b',"candles":[' + page.candles.encode() + b'],"next":' + link + b"}")


# Between two requests most symbols' Redis values have not changed: their rows are
# rendered once. Compact JSON of {"symbols": [a, b]} is exactly '{"symbols":[' a ',' b ']}'.
@functools.lru_cache(maxsize=4096)
def _summary_row_json(symbol: str, *replies: bytes | None) -> bytes:
    return _render(summary_json(selectors.market_summary_rows([symbol], list(replies)))[0])
