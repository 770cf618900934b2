"""The two hottest reads, answered before Django's request stack.

``GET /api/v1/quotes/{symbol}`` and ``GET /api/v1/market-summary`` read Redis
only, yet through Django (the middleware chain, URL resolution, DRF's request,
content negotiation and renderer) each costs ~1.7 ms of CPU on a 2-core
machine: one web process tops out near 600 requests/s whatever the view does
(bench/api_rest.py). Answered here they cost a Redis round trip and the body.

Only requests certain to get Django's answer are taken: a GET without query
or with ``format=json`` that asks for JSON (no Accept, ``*/*``,
``application/json`` or ``application/*``, without parameters), a ticker the
process knows to be active, and a quote that exists. Everything else goes to
Django unchanged: the browsable API in a browser, unknown symbols and their
404s, HEAD and OPTIONS, Redis errors, and every request when throttling is
configured (DRF keeps the count) or API_HOT_READS is off. The list of active
tickers is the one Django's views keep (refreshed every
API_SYMBOLS_CACHE_SECONDS); while it is stale, requests go to Django, which
refreshes it. The body comes from the views' own functions and DRF's
JSONRenderer; the headers are those of the last 200 Django itself sent for the
endpoint (so security headers and Vary follow settings and middleware); the
request is counted in django_prometheus's metrics under the view's name. A
client or a dashboard cannot tell which path answered
(market/tests/test_api_hot.py compares the two).
"""

from __future__ import annotations

import asyncio
import functools
import time

import redis.asyncio
from django.conf import settings
from django_prometheus.middleware import Metrics
from redis.exceptions import RedisError
from rest_framework.renderers import JSONRenderer

from market import selectors
from market.api.serializers import quote_json, summary_json

QUOTE_PREFIX = "/api/v1/quotes/"
SUMMARY_PATH = "/api/v1/market-summary"
_JSON_RANGES = {"application/json", "application/*", "*/*"}
_render = JSONRenderer().render


def wants_plain_json(query_string: bytes, accept: bytes | None) -> bool:
    """Whether DRF would answer this query and Accept header with JSONRenderer's compact JSON."""
    if query_string not in (b"", b"format=json"):
        return False
    if accept is None:
        return True
    ranges = [part.strip().lower() for part in accept.split(b",")]
    # A parameter (`; indent=4`, `q=`) can change DRF's choice or its output: Django decides those.
    if any(b";" in r for r in ranges):
        return False
    return bool(query_string) or (b"text/html" not in ranges
                                  and any(r.decode("latin-1") in _JSON_RANGES for r in ranges))


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

    def count(self, *, transport: str, body_bytes: int, seconds: float) -> None:
        m = self._metrics
        m.requests_total.inc()
        m.responses_total.inc()
        m.requests_latency_before.observe(seconds)
        m.requests_body_bytes.observe(0)
        self._by_method.inc()
        self._by_transport[transport].inc()
        self._by_view[transport].inc()
        self._by_status.inc()
        self._by_status_view.inc()
        self._charset.inc()
        m.responses_body_bytes.observe(body_bytes)
        self._latency.observe(seconds)


class HotReads:
    """ASGI middleware in front of Django's handler (see the module docstring)."""

    def __init__(self, app) -> None:
        self.app = app
        self._headers: dict[str, list[tuple[bytes, bytes]]] = {}
        self._metrics: dict[str, _ViewMetrics] = {}
        self._redis: tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis] | None = None
        self._in_flight: dict[tuple[str, ...], asyncio.Future] = {}

    @staticmethod
    def enabled() -> bool:
        return settings.API_HOT_READS and not settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_CLASSES")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self.enabled():
            path = scope["path"]
            if path == SUMMARY_PATH:
                view, symbol = "market-summary", None
            elif path.startswith(QUOTE_PREFIX) and "/" not in path[len(QUOTE_PREFIX):] \
                    and len(path) > len(QUOTE_PREFIX):
                view, symbol = "quote-latest", path[len(QUOTE_PREFIX):]
            else:
                view = None
            if view is not None and wants_plain_json(scope["query_string"], _header(scope, b"accept")):
                if view not in self._headers:
                    return await self.app(scope, receive, self._learning(view, send))
                started = time.perf_counter()
                try:
                    body = await (self._summary() if symbol is None else self._quote(symbol.upper()))
                except (RedisError, OSError):
                    body = None  # Django answers, and reports the error its way
                if body is not None:
                    return await self._answer(scope, send, view, body, started)
        await self.app(scope, receive, send)

    def _learning(self, view: str, send):
        async def send_and_learn(message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self._headers[view] = [(name, value) for name, value in message["headers"]
                                       if name.lower() != b"set-cookie"]
                self._metrics.setdefault(view, _ViewMetrics(view))
            await send(message)
        return send_and_learn

    async def _answer(self, scope, send, view: str, body: bytes, started: float) -> None:
        length = str(len(body)).encode()
        headers = [(name, length if name.lower() == b"content-length" else value)
                   for name, value in self._headers[view]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._metrics[view].count(transport="https" if scope.get("scheme") == "https" else "http",
                                  body_bytes=len(body), seconds=time.perf_counter() - started)

    def _client(self) -> redis.asyncio.Redis:
        # One client per event loop: an asyncio connection belongs to the loop that opened it.
        loop = asyncio.get_running_loop()
        if self._redis is None or self._redis[0] is not loop:
            self._redis = (loop, redis.asyncio.Redis.from_url(
                settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2))
        return self._redis[1]

    async def _shared(self, key: tuple[str, ...], read):
        """`read()`'s result, sharing one that is already in flight: under load, every request
        that arrives while the same Redis read is out gets its reply (at most one round trip
        old) instead of queueing a read of its own."""
        task = self._in_flight.get(key)
        if task is None:
            task = self._in_flight[key] = asyncio.ensure_future(read())
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(task)  # a client that hangs up does not cancel the others' read

    async def _quote(self, ticker: str) -> bytes | None:
        tickers = selectors.symbol_tickers_known(max_age=settings.API_SYMBOLS_CACHE_SECONDS)
        if tickers is None or ticker not in tickers:
            return None
        raw = await self._shared(("quote", ticker), lambda: self._client().hget(*selectors.quote_latest_read(ticker)))
        quote = selectors.quote_from_redis(raw)
        return None if quote is None else _render(quote_json(ticker, quote))

    async def _summary(self) -> bytes | None:
        tickers = selectors.symbol_tickers_known(max_age=settings.API_SYMBOLS_CACHE_SECONDS)
        if tickers is None:
            return None

        def read():
            pipe = self._client().pipeline(transaction=False)
            selectors.market_summary_queue(pipe, tickers)
            return pipe.execute()
        replies = await self._shared(("summary",), read)
        return b'{"symbols":[' + b",".join(
            _summary_row_json(symbol, *replies[3 * i:3 * i + 3]) for i, symbol in enumerate(tickers)) + b"]}"


# Between two requests most symbols' Redis values have not changed: their rows are
# rendered once. Compact JSON of {"symbols": [a, b]} is exactly '{"symbols":[' a ',' b ']}'.
@functools.lru_cache(maxsize=4096)
def _summary_row_json(symbol: str, *replies: bytes | None) -> bytes:
    return _render(summary_json(selectors.market_summary_rows([symbol], list(replies)))[0])


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
