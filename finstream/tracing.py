"""OpenTelemetry tracing, off unless an OTLP endpoint is configured.

A trace starts where an event enters FinStream: the simulator or the replayer
opens a span per batch of published events (``PublishSpans``) and puts its W3C
``traceparent`` in the Kafka headers of every message of the batch. The
consumer runner continues it: a span per consumed batch, the child of the first
message's producer span and linked to the others, around the batch's prepare,
store and publish; the messages a consumer publishes (candles, alerts) carry the
batch span's ``traceparent``, so the relay's batch joins the same traces. HTTP
requests get a span each (the ASGI app, finstream/asgi.py). Spans go to
``OTEL_EXPORTER_OTLP_ENDPOINT`` over OTLP/HTTP (Jaeger's port 4318 in the
compose stack); the SDK's own variables (``OTEL_TRACES_SAMPLER`` and its
argument, ``OTEL_EXPORTER_OTLP_HEADERS``...) apply.

Off (no endpoint), nothing is created: ``tracer()`` is None, the hot paths test
that once per batch, and no message carries a header (bench/tracing_overhead.py
measures both sides).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.conf import settings
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
MAX_LINKS = 32  # per consumed batch: enough to follow a batch back to its producers, bounded

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def configure(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on for this process as ``finstream-<service>`` if an OTLP endpoint is set
    (or an ``exporter`` is given, for tests); returns whether it is on."""
    global _provider, _tracer
    if exporter is None and not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces
    if _provider is not None:
        _provider.shutdown()
    _provider = TracerProvider(resource=Resource.create({"service.name": f"finstream-{service}"}))
    _provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192))
    _tracer = _provider.get_tracer("finstream")
    log.info("tracing on: finstream-%s spans to %s", service,
             settings.OTEL_EXPORTER_OTLP_ENDPOINT or type(exporter).__name__)
    return True


def shutdown() -> None:
    """Export what is pending and turn tracing off."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def tracer() -> Tracer | None:
    return _tracer


def provider() -> TracerProvider | None:
    return _provider


_W3C = TraceContextTextMapPropagator()


def traceparent(span: Span) -> bytes:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier[TRACEPARENT].encode()


_last_headers: tuple[int, list[tuple[str, bytes]]] | None = None


def current_headers() -> list[tuple[str, bytes]] | None:
    """The Kafka headers that continue the current span's trace; None when there is none."""
    global _last_headers
    if _tracer is None:
        return None
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return None
    # A batch publishes many messages under one span: format its traceparent once. (Read once into a
    # local: another thread may replace the cached pair meanwhile.)
    cached = _last_headers
    if cached is None or cached[0] != context.span_id:
        cached = _last_headers = (context.span_id, [(TRACEPARENT, traceparent(span))])
    return cached[1]


def _remote_context(value: bytes):
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None  # a malformed header from some other producer: no parent, not an error
    context = trace.get_current_span(_W3C.extract({TRACEPARENT: text})).get_span_context()
    return context if context.is_valid else None


@contextmanager
def consumed_batch(name: str, traceparents: Sequence[bytes], attributes: dict) -> Iterator[Span | None]:
    """A span around one consumed batch: the child of the first message's producer span, linked
    to up to MAX_LINKS others. Yields None when tracing is off."""
    if _tracer is None:
        yield None
        return
    contexts = []
    for value in dict.fromkeys(traceparents):
        context = _remote_context(value)
        if context is not None:
            contexts.append(context)
        if len(contexts) > MAX_LINKS:
            break
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if contexts else None
    links = [Link(context) for context in contexts[1:]]
    with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, links=links,
                                       attributes=attributes) as span:
        yield span


@contextmanager
def step(name: str) -> Iterator[None]:
    """A child span of the current one (a stage of a batch); nothing when tracing is off."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name):
        yield


class PublishSpans:
    """Cuts a stream of published events into producer spans: a new span every ``events``
    events or ``seconds`` seconds, whichever comes first. ``headers(count)`` is called for each
    batch of ``count`` events and returns the Kafka headers of the span they belong to."""

    def __init__(self, name: str, *, attributes: dict | None = None, events: int = 1000,
                 seconds: float = 1.0) -> None:
        assert _tracer is not None, "PublishSpans needs tracing on (tracer() is not None)"
        self._tracer = _tracer
        self._name = name
        self._attributes = attributes or {}
        self._max_events = events
        self._max_seconds = seconds
        self._span: Span | None = None
        self._headers: list[tuple[str, bytes]] = []
        self._count = 0
        self._deadline = 0.0

    def headers(self, count: int = 1) -> list[tuple[str, bytes]]:
        # The clock is read once a batch, or every 64th event when they come one at a time: per event
        # it would cost more than the span.
        if self._span is None or self._count + count > self._max_events or (
                (count > 1 or not self._count & 63) and time.monotonic() >= self._deadline):
            self._roll()
        self._count += count
        return self._headers

    def _roll(self) -> None:
        self.close()
        self._span = self._tracer.start_span(self._name, kind=SpanKind.PRODUCER, attributes=self._attributes)
        self._headers = [(TRACEPARENT, traceparent(self._span))]
        self._count = 0
        self._deadline = time.monotonic() + self._max_seconds

    def close(self) -> None:
        if self._span is not None:
            self._span.set_attribute("messaging.batch.message_count", self._count)
            self._span.end()
            self._span = None
