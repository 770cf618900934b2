"""JSON log lines for machines (LOG_FORMAT=json), plain ones for people.

A JSON line carries time, level, logger and message, plus whatever a caller
passes in `extra` (consumer, topic, partition, offset), and with tracing on
the trace and span ids of the span current when the line was logged.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import redis
from opentelemetry import trace

from finstream import tracing

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if tracing.tracer() is not None and "trace_id" not in line:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                line["trace_id"], line["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ConnectionLossInOneLine(logging.Filter):
    """A library's report of a lost connection, with its traceback, as one warning line.

    channels_redis logs the traceback of a dropped Redis connection once a second until Redis
    is back (its receive loop reconnects and subscribes again by itself): a Redis restart would
    fill the web process's log with tracebacks that say no more than their last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError):
            record.msg, record.args = f"{record.getMessage()}: {type(error).__name__}: {error} (retrying)", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
