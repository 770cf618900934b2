"""OpenTelemetry tracing on the real broker and database: off by default with no header on any
message; on, a trace runs from the simulator's batch span through the Kafka headers into the
consumer's batch span and on into what the consumer publishes; the commands and the web app
export over real OTLP/HTTP to a collector when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.db import connection
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from finstream import tracing
from finstream.logs import JsonFormatter
from market.domain.simulator import MarketSimulator
from market.feeds import feed_publish
from market.pipelines import TradesPipeline
from streaming.kafka import EventPublisher
from streaming.runner import ConsumerRunner, RunnerOptions
from streaming.testing import consume_until, read_topic, wait_for
from streaming.topics import CANDLES, QUOTES, TRADES, topic

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def simulate(seconds: float) -> int:
    simulator = MarketSimulator(symbols=["AAPL", "MSFT"], rate=100, seed=4, start=START)
    messages = simulator.wire_messages(trades_topic=topic(TRADES), quotes_topic=topic(QUOTES),
                                       until=START + timedelta(seconds=seconds))
    stats = feed_publish(messages=messages, publisher=EventPublisher(name="simulator"), pacer=None,
                         should_stop=lambda: False)
    return stats.trades


def traceparent_of(message) -> str | None:
    return dict(message.headers() or ()).get(tracing.TRACEPARENT, b"").decode() or None


def test_tracing_is_off_by_default_and_no_message_carries_a_header(kafka_topics):
    assert tracing.tracer() is None
    simulate(5)
    messages = read_topic(topic(TRADES)) + read_topic(topic(QUOTES))
    assert messages and all(message.headers() is None for message in messages)


@pytest.mark.django_db(transaction=True)
def test_a_trace_runs_from_the_simulator_through_kafka_into_the_consumer_and_on(kafka_topics, redis_clean, spans):
    trades = simulate(30)
    runner = ConsumerRunner(TradesPipeline(), RunnerOptions(batch_size=500, batch_wait=0.2))
    runner.subscribe()
    consume_until(runner, trades)
    runner.close()
    candle_messages = read_topic(topic(CANDLES))
    tracing.shutdown()  # exports what is pending
    finished = spans.get_finished_spans()

    producer_spans = {span.context.span_id: span for span in finished if span.name == "simulator publish"}
    assert len(producer_spans) >= 3, "a span per 1000 published events"
    assert sum(span.attributes["messaging.batch.message_count"] for span in producer_spans.values()) \
        == len(read_topic(topic(TRADES))) + len(read_topic(topic(QUOTES)))
    for message in read_topic(topic(TRADES)):
        _version, trace_id, span_id, _flags = traceparent_of(message).split("-")
        assert producer_spans[int(span_id, 16)].context.trace_id == int(trace_id, 16)

    batches = [span for span in finished if span.name == "build_candles batch"]
    assert batches
    for batch in batches:
        parent = producer_spans[batch.parent.span_id]  # the first message's producer span
        assert batch.context.trace_id == parent.context.trace_id
        assert all(link.context.span_id in producer_spans for link in batch.links)
        assert batch.attributes["messaging.consumer.group.name"] == runner.group_id
    stages = {span.name for span in finished if span.parent and span.parent.span_id in
              {batch.context.span_id for batch in batches}}
    assert stages == {"prepare", "store", "after_commit"}

    # The candles build_candles published continue the traces of the batches that made them.
    batch_traces = {batch.context.trace_id for batch in batches}
    assert candle_messages
    for message in candle_messages:
        assert int(traceparent_of(message).split("-")[1], 16) in batch_traces


def test_a_json_log_line_inside_a_span_carries_its_trace_id(spans):
    record = logging.makeLogRecord({"name": "finstream.test", "levelname": "INFO", "msg": "inside"})
    with tracing.step("logging"):
        line = json.loads(JsonFormatter().format(record))
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in json.loads(JsonFormatter().format(record))  # outside any span


# --- real OTLP/HTTP export from the processes ---------------------------------------------------

class Collector:
    """An OTLP/HTTP receiver: keeps every span posted to /v1/traces, by service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    for resource_spans in request.resource_spans:
                        service = next(a.value.string_value for a in resource_spans.resource.attributes
                                       if a.key == "service.name")
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                attributes = {a.key: a.value for a in span.attributes}
                                collector.spans.append((service, span.name, attributes))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self, service: str) -> list[str]:
        with self.lock:
            return [name for svc, name, _ in self.spans if svc == service]


@pytest.fixture
def collector():
    receiver = Collector()
    yield receiver
    receiver.server.shutdown()


def process_env(collector: Collector) -> dict[str, str]:
    return {**os.environ, "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX, "METRICS_PORT": "0",
            "KAFKA_BOOTSTRAP_SERVERS": settings.KAFKA_BOOTSTRAP_SERVERS,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}


def test_simulate_exports_its_spans_over_otlp_when_an_endpoint_is_set(kafka_topics, collector):
    result = subprocess.run([sys.executable, "manage.py", "simulate", "--fresh", "--rate", "max", "--duration",
                             "20", "--seed", "2", "--symbols", "AAPL"], cwd=settings.BASE_DIR, env=process_env(collector),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = collector.names("finstream-simulator")
    assert names and set(names) == {"simulator publish"}
    assert all(traceparent_of(message) for message in read_topic(topic(TRADES)))


@pytest.mark.django_db(transaction=True)
def test_the_web_app_traces_requests_but_not_its_probes(collector):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    database = connection.settings_dict
    env = {**process_env(collector), "DATABASE_CONN_MAX_AGE": "0",
           "TIMESCALE_URL": f"postgresql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
                            f"{database['PORT']}/{database['NAME']}"}
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "finstream.asgi:application"], cwd=settings.BASE_DIR, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                    return response.status
            except OSError:
                return 0

        wait_for(lambda: get("/health") == 200, timeout=30, what="daphne serving")
        assert get("/api/v1/symbols") == 200 and get("/metrics") == 200
        wait_for(lambda: any("/api/v1/symbols" in name for name in collector.names("finstream-web")), timeout=30,
                 what="the request's span at the collector")
    finally:
        server.terminate()
        server.wait(timeout=30)
    names = collector.names("finstream-web")
    assert not any("metrics" in name or "health" in name for name in names), names
