"""Settings from the environment: typed readers that name the bad variable,
production refusing the development key, JSON logs."""

import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from finstream import env
from finstream.logs import JsonFormatter


@pytest.mark.parametrize(("name", "reader", "value", "message"), [
    ("X_INT", lambda: env.env_int("X_INT", 1), "ten", "X_INT='ten' is not a whole number"),
    ("X_INT", lambda: env.env_int("X_INT", 1, minimum=1), "0", "X_INT=0 must be at least 1"),
    ("X_FLOAT", lambda: env.env_float("X_FLOAT", 1.0), "fast", "X_FLOAT='fast' is not a number"),
    ("X_BOOL", lambda: env.env_bool("X_BOOL", True), "maybe", "X_BOOL='maybe' is not a boolean"),
    ("X_URL", lambda: env.env_url("X_URL", "redis://h", schemes=("redis",)), "http://h",
     "X_URL='http://h' is not a valid URL"),
    ("X_URL", lambda: env.env_url("X_URL", "redis://h", schemes=("redis",)), "redis://h:99999",
     "X_URL='redis://h:99999' has an invalid port"),
    ("X_SYMBOLS", lambda: env.env_symbols("X_SYMBOLS", "AAPL"), "AAPL,A B", "X_SYMBOLS: ['A B'] are not symbols"),
    ("X_SYMBOLS", lambda: env.env_symbols("X_SYMBOLS", "AAPL"), " , ", "X_SYMBOLS names no symbol"),
])
def test_a_malformed_variable_is_named_in_the_error(monkeypatch, name, reader, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as error:
        reader()
    assert str(error.value).startswith(message)


def test_readers_fall_back_to_defaults_and_parse_lists(monkeypatch):
    monkeypatch.delenv("X_INT", raising=False)
    assert env.env_int("X_INT", 7) == 7
    monkeypatch.setenv("X_LIST", " AAPL, MSFT ,,")
    assert env.env_list("X_LIST", "") == ["AAPL", "MSFT"]
    monkeypatch.setenv("X_SYMBOLS", "aapl,brk.b, BTC-USD")
    assert env.env_symbols("X_SYMBOLS", "") == ["AAPL", "BRK.B", "BTC-USD"]
    assert env.database_from_url("U", "postgresql://u:p@db:6543/name")["PORT"] == "6543"
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        env.database_from_url("U", "postgresql://u:p@db:6543")


def _check(**variables) -> subprocess.CompletedProcess:
    environment = {**os.environ, **variables}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=environment,
                          capture_output=True, text=True)


def test_production_refuses_the_development_secret_key_in_one_line():
    result = _check(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=settings.DEVELOPMENT_SECRET_KEY)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: DJANGO_DEBUG is off but DJANGO_SECRET_KEY is the development key: set "
        "DJANGO_SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))')"
    ]
    assert _check(DJANGO_DEBUG="0", DJANGO_SECRET_KEY="x" * 50).returncode == 0


def test_a_bad_database_url_is_one_line():
    result = _check(TIMESCALE_URL="mysql://db/finstream")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "TIMESCALE_URL" in result.stderr


def test_a_bad_otlp_endpoint_is_one_line():
    result = _check(OTEL_EXPORTER_OTLP_ENDPOINT="jaeger:4318")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: OTEL_EXPORTER_OTLP_ENDPOINT='jaeger:4318': give the collector's http(s) URL, "
        "e.g. http://127.0.0.1:4318, or leave it empty to turn tracing off"
    ]


@pytest.mark.services  # connects to PostgreSQL
def test_a_database_pool_replaces_persistent_connections():
    code = ("import django; django.setup(); from django.db import connection as c; "
            "print(c.settings_dict['CONN_MAX_AGE'], c.settings_dict['OPTIONS']['pool']['max_size']); "
            "c.ensure_connection(); print(c.pool is not None)")
    result = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, capture_output=True, text=True,
                            env={**os.environ, "DATABASE_POOL_SIZE": "4"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "4", "True"]


def test_json_log_lines_carry_the_context_they_are_given():
    record = logging.makeLogRecord({"name": "streaming.runner", "levelname": "WARNING", "msg": "dead-lettering %s",
                                    "args": ("x",), "consumer": "build_candles", "partition": 3})
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["message"] == "dead-lettering x"
    assert line["consumer"] == "build_candles" and line["partition"] == 3


def test_producers_hold_messages_as_long_as_the_linger_setting_says(settings):
    from streaming.kafka import producer_config

    settings.KAFKA_PRODUCER_LINGER_MS = 3
    assert producer_config()["linger.ms"] == 3
