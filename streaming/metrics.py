"""Prometheus metrics of the pipeline, with the spec's names.

Long-running commands serve them on METRICS_PORT (see `serve_metrics`); the
web exports them at `/metrics` through django-prometheus, summed over its
processes (finstream/serve.py).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import CommandError
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# Event time → the transaction holding its effect committed: 1 ms to 60 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES_PROCESSED = Counter(
    "finstream_messages_processed",
    "Messages a consumer has finished with, by outcome (processed, dead_lettered).",
    ["consumer", "topic", "outcome"],
)
PROCESSING_LATENCY = Histogram(
    "finstream_processing_latency_seconds",
    "From a message's event time to the commit of its effect in PostgreSQL.",
    ["consumer"],
    buckets=LATENCY_BUCKETS,
)
ALERTS = Counter("finstream_alerts", "Alerts raised, by type and severity.", ["type", "severity"])
MESSAGES_PRODUCED = Counter(
    "finstream_messages_produced", "Messages a producer handed to Kafka, by delivery outcome.", ["producer", "outcome"]
)
DEAD_LETTERS = Counter(
    "finstream_dead_letters", "Messages sent to the dead-letter topic.", ["consumer", "topic"]
)
BATCH_SIZE = Histogram(
    "finstream_consumer_batch_size",
    "Messages per consumer batch.",
    ["consumer"],
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)
CONSUMER_LAG = Gauge(
    "finstream_consumer_lag", "Messages between a partition's end and the consumer's position.",
    ["consumer", "topic", "partition"],
)
TRADES_NOT_STORED = Counter(
    "finstream_trades_not_stored",
    "Trades build_candles read and did not store, by reason (retired_day: retention dropped their day's trades, "
    "whose candles are final).",
    ["reason"],
)
CANDLE_SEAL_REPAIRS = Counter(
    "finstream_candle_seal_repairs", "Closed candles whose stored values differed from a recomputation.", ["interval"]
)
CELERY_TASKS = Counter("finstream_celery_tasks", "Celery tasks the worker finished, by task and outcome.",
                       ["task", "outcome"])
CELERY_TASK_DURATION = Histogram("finstream_celery_task_duration_seconds", "How long each Celery task ran.",
                                 ["task"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
SIMULATOR_EVENTS = Counter("finstream_simulator_events", "Events the simulator or replayer published.", ["kind"])


class MetricsPortTaken(CommandError):
    """A command cannot serve its metrics: one line for the operator, not a traceback."""


def serve_metrics(port: int) -> None:
    """Serve the default registry on `port` in a background thread (0 = off)."""
    if not port:
        return
    addr = settings.METRICS_ADDR
    try:
        start_http_server(port, addr=addr)
    except OSError as error:
        raise MetricsPortTaken(
            f"cannot serve metrics on {addr}:{port}: {error.strerror} (set METRICS_PORT, or 0 to turn them off)"
        ) from None
    log.info("metrics on http://%s:%d/metrics", addr, port)
DETECTION_DELAY = Histogram(
    "finstream_alert_detection_delay_seconds",
    "From the event time of an alert's trigger to the alert being stored.",
    buckets=LATENCY_BUCKETS,
)

# --- WebSockets and the relay (docs/api.md) -------------------------------------------
WEBSOCKET_CONNECTIONS = Gauge(
    "finstream_websocket_connections", "Open WebSocket connections, by endpoint.", ["endpoint"],
    multiprocess_mode="livesum",  # under finstream.serve: the sum over the web processes that are running
)
WEBSOCKET_DROPPED_CLIENTS = Counter(
    "finstream_websocket_dropped_clients",
    "WebSocket clients closed with 4008 because their unsent backlog passed WS_MAX_BACKLOG_BYTES.",
    ["endpoint"],
)
RELAY_GROUP_SENDS = Counter("finstream_relay_group_sends", "Channels group_send calls made by relay_streams.")
RELAY_EVENTS = Counter(
    "finstream_relay_events", "Kafka events relay_streams handled: sent to a group, or conflated away.", ["outcome"],
)
