"""The tasks Celery beat schedules, run as the worker runs them."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from market import storage, tasks
from market.storage import CANDLES, QUOTES, TRADES, partitions_ensure, partitions_list

pytestmark = pytest.mark.django_db(transaction=True)


def names(table):
    return {name for name, _start, _end in partitions_list(table=table)}


def test_partitions_are_created_a_week_ahead(settings):
    settings.PARTITIONS_AHEAD_DAYS = 7
    storage._known_partitions.clear()
    tasks.partitions_create_ahead.apply().get()
    today = datetime.now(UTC).date()
    assert {f"market_trade_p{today + timedelta(days=d):%Y%m%d}" for d in range(8)} <= names(TRADES)
    assert {f"market_quote_p{today + timedelta(days=d):%Y%m%d}" for d in range(8)} <= names(QUOTES)


def test_retention_drops_old_raw_data_by_partition_and_old_fine_candles(settings):
    settings.TRADES_RETENTION_DAYS = 30
    settings.QUOTES_RETENTION_DAYS = 7
    settings.FINE_CANDLES_RETENTION_DAYS = 90
    storage._known_partitions.clear()
    old_day = datetime.now(UTC).date() - timedelta(days=400)
    recent_day = datetime.now(UTC).date() - timedelta(days=2)
    partitions_ensure(table=TRADES, days={old_day, recent_day})
    partitions_ensure(table=QUOTES, days={old_day, recent_day})
    partitions_ensure(table=CANDLES, days={old_day, recent_day})
    old = datetime.combine(old_day, datetime.min.time(), UTC)
    with connection.cursor() as cursor:
        for interval in ("1m", "5m", "1h", "1d"):
            cursor.execute(
                "INSERT INTO market_candle VALUES ('AAPL', %s, %s, 1, 1, 1, 1, 1, 1, 1, %s, 1, 'a', %s, 1, 'a', now())",
                [interval, old, old, old])
    report = tasks.retention_apply.apply().get()
    assert f"market_trade_p{old_day:%Y%m%d}" in report["trades"]
    assert f"market_quote_p{old_day:%Y%m%d}" in report["quotes"]
    assert f"market_trade_p{recent_day:%Y%m%d}" in names(TRADES)
    assert f"market_trade_p{old_day:%Y%m%d}" not in names(TRADES)
    assert report["fine_candles"] == 2
    with connection.cursor() as cursor:
        cursor.execute("SELECT interval FROM market_candle ORDER BY interval")
        assert [row[0] for row in cursor.fetchall()] == ["1d", "1h"]


def test_every_scheduled_task_is_registered_with_the_worker(settings):
    from finstream.celery import app

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry["task"]


def test_beat_sends_the_hourly_tasks_as_it_starts(redis_clean, tmp_path):
    """Run for real: celery beat on the test Redis, its messages read from the broker's queue."""
    import json
    import subprocess
    import sys
    from collections import Counter

    from celery.schedules import crontab
    from django.conf import settings

    from streaming.testing import wait_for
    from streaming.tests.test_websockets_live import server_env

    hourly = Counter(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
                     if isinstance(entry["schedule"], crontab))
    assert {"market.tasks.retention_apply", "market.tasks.partitions_create_ahead"} <= set(hourly)
    beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "finstream", "beat", "--schedule",
                             str(tmp_path / "schedule")], cwd=settings.BASE_DIR,
                            env={**server_env(), "CELERY_BROKER_URL": settings.REDIS_URL},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: redis_clean.llen("celery") >= hourly.total(), timeout=60, what="beat's first messages")
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    sent = [json.loads(message)["headers"]["task"] for message in redis_clean.lrange("celery", 0, -1)]
    assert not hourly - Counter(sent)  # each sent at start (and one again if beat started at its minute)
