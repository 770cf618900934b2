"""Settings from the environment: typed readers that name the bad variable,
production refusing the development key, JSON logs."""

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from finstream import env
from finstream.logs import ConnectionLossInOneLine, JsonFormatter


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


def _settings_of_a_checkout_with(tmp_path, dotenv: str, **variables) -> list[str]:
    """The connection settings a process run by hand gets in a checkout whose .env is `dotenv`."""
    shutil.copytree(settings.BASE_DIR / "finstream", tmp_path / "finstream")  # BASE_DIR is the copy's parent
    (tmp_path / "streaming").symlink_to(settings.BASE_DIR / "streaming")
    (tmp_path / ".env").write_text(dotenv)
    environment = {key: value for key, value in os.environ.items()
                   if key not in {"FINSTREAM_IGNORE_DOTENV", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "TIMESCALE_URL",
                                  "DATABASE_URL", "PG_PORT", "REDIS_PORT", "KAFKA_PORT", "SYMBOLS"}}
    script = ("from finstream import settings as s; "
              "print(s.KAFKA_BOOTSTRAP_SERVERS, s.REDIS_URL, s.DATABASE_URL, ','.join(s.SYMBOLS), sep='\\n')")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**environment, **variables},
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_a_process_run_by_hand_reads_the_stacks_dotenv_and_its_ports(tmp_path):
    dotenv = "# the stack of make up, on other ports\nPG_PORT=45432\nexport REDIS_PORT=46379\nKAFKA_PORT=49092\n" \
             'SYMBOLS="AAPL,BTC-USD"\n'
    assert _settings_of_a_checkout_with(tmp_path, dotenv) == [
        "127.0.0.1:49092", "redis://127.0.0.1:46379/0",
        "postgresql://finstream:finstream@127.0.0.1:45432/finstream", "AAPL,BTC-USD"]


def test_the_environment_wins_over_the_dotenv_and_the_tests_ignore_it(tmp_path):
    dotenv = "KAFKA_PORT=49092\nSYMBOLS=AAPL\n"
    assert _settings_of_a_checkout_with(tmp_path, dotenv, KAFKA_BOOTSTRAP_SERVERS="broker:9092")[0] == "broker:9092"
    ignored = _settings_of_a_checkout_with(tmp_path / "again", dotenv, FINSTREAM_IGNORE_DOTENV="1")
    assert ignored[0] == "127.0.0.1:9092" and ignored[3] != "AAPL"
    assert _settings_of_a_checkout_with(tmp_path / "zero", dotenv, FINSTREAM_IGNORE_DOTENV="0")[0] == "127.0.0.1:49092"


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


def _beat_logs(error: BaseException, caplog) -> list[logging.LogRecord]:
    """What Celery beat logs when a due task's message cannot be sent with `error`."""
    from celery.beat import ScheduleEntry, Scheduler

    from finstream.celery import app

    class Refused(Scheduler):
        def apply_async(self, entry, producer=None, advance=True, **kwargs):
            raise error

    caplog.clear()
    Refused(app, lazy=True).apply_entry(ScheduleEntry(name="market-stats", task="market.tasks.x", app=app))
    return [record for record in caplog.records if record.name == "celery.beat" and record.levelno >= logging.WARNING]


def test_a_lost_connection_behind_a_librarys_error_is_one_warning_line(caplog):
    import redis
    from celery.beat import SchedulingError
    from kombu.exceptions import OperationalError

    lost = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    wrapped = OperationalError(str(lost))
    wrapped.__cause__ = lost
    error = SchedulingError("Couldn't apply scheduled task market-stats: " + str(lost))
    error.__cause__ = wrapped
    [record] = _beat_logs(error, caplog)
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert record.getMessage() == ("Message Error: Couldn't apply scheduled task market-stats: Error 111 connecting "
                                   "to 127.0.0.1:6379. Connection refused. (ConnectionError: Error 111 connecting to "
                                   "127.0.0.1:6379. Connection refused.; retrying)")
    assert any(isinstance(f, ConnectionLossInOneLine) for f in logging.getLogger("channels_redis.pubsub").filters)


@pytest.mark.parametrize("error", [ValueError("a bug"), OSError(28, "No space left on device")])
def test_other_errors_keep_their_traceback(error, caplog):
    [record] = _beat_logs(error, caplog)
    assert record.levelname == "ERROR" and record.exc_info[1] is error


def test_producers_hold_messages_as_long_as_the_linger_setting_says(settings):
    from streaming.kafka import producer_config

    settings.KAFKA_PRODUCER_LINGER_MS = 3
    assert producer_config()["linger.ms"] == 3


def test_the_debug_page_hides_the_urls_that_carry_the_services_passwords():
    from django.views.debug import get_default_exception_reporter_filter

    shown = get_default_exception_reporter_filter().get_safe_settings()
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY"):
        assert set(str(shown[name])) == {"*"}, name
    assert shown["TIME_ZONE"] == "UTC"  # the rest stays readable


def test_served_over_https_the_cookies_are_secure_and_browsers_told_to_stay_on_https():
    deploy = [sys.executable, "manage.py", "check", "--deploy"]
    production = {**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    plain = subprocess.run(deploy, cwd=settings.BASE_DIR, env=production, capture_output=True, text=True)
    https = subprocess.run(deploy, cwd=settings.BASE_DIR, env={**production, "HTTPS_ONLY": "1"}, capture_output=True,
                           text=True)
    for warning in ("security.W004", "security.W012", "security.W016"):  # HSTS, session and CSRF cookies
        assert warning in plain.stderr and warning not in https.stderr, warning
