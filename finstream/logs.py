"""JSON log lines for machines (LOG_FORMAT=json), plain ones for people.

A JSON line carries time, level, logger and message, plus whatever a caller
passes in `extra` (consumer, topic, partition, offset), and with tracing on
the trace and span ids of the span current when the line was logged.
"""

from __future__ import annotations

import json
import logging
import socket
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


def error_text(error: BaseException) -> str:
    """An error for a log line: its type and its message. (redis-py's repr gives only
    `network:ConnectionError`, without what happened.)"""
    return f"{type(error).__name__}: {error}"


class ConnectionLossInOneLine(logging.Filter):
    """A library's report of a lost connection, with its traceback, as one warning line.

    While Redis is away, channels_redis logs a dropped connection's traceback once a second (its
    receive loop reconnects and subscribes again by itself), and Celery beat one per scheduled
    task it could not send: a Redis restart would fill the logs with tracebacks that say no more
    than their last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        lost = _connection_error(record.exc_info[1] if record.exc_info else None)
        if lost is not None:
            # Its first line: Celery beat appends the stack it was called from.
            said = record.getMessage().split("\n", 1)[0]
            record.msg, record.args = f"{said} ({error_text(lost)}; retrying)", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# Not every OSError: a full disk or a permission refused is no lost connection, and keeps its traceback.
_LOST = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, socket.gaierror)


def _connection_error(error: BaseException | None) -> BaseException | None:
    """The lost connection behind `error`, following what it was raised from."""
    for _ in range(10):
        if error is None or isinstance(error, _LOST):
            return error
        error = error.__cause__ or error.__context__
    return None
