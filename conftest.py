"""Shared test fixtures. Tests that touch PostgreSQL, Redis or Kafka use the
real ones that `make test` starts (deploy/test.sh); nothing is mocked.

Each test that uses Kafka gets topics of its own (a unique prefix) and so its
own consumer groups; each Redis test starts from an empty database.
"""

from __future__ import annotations

import os
import uuid

import pytest

# The web process's collector tuning (finstream/asgi.py) is for servers, not for the test process
# that imports the ASGI app.
os.environ.setdefault("WEB_GC_TUNING", "0")
# Tests fail log-ins on purpose, all from 127.0.0.1: the limit on them (finstream/auth.py) is tested where
# it is lowered, and must not refuse the log-ins of the tests that follow.
os.environ.setdefault("LOGIN_FAILURES_PER_MINUTE", "1000000")

SERVICE_FIXTURES = {"db", "transactional_db", "django_db_setup", "kafka_topics", "redis_clean", "live_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("django_db"):
            item.add_marker(pytest.mark.services)


@pytest.fixture
def kafka_topics(settings):
    """Creates this test's own copy of every FinStream topic, and deletes them afterwards (a test
    stack's broker lives on between runs); gives the prefix."""
    from streaming.kafka import topics_delete, topics_ensure

    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings.KAFKA_TOPIC_PREFIX = prefix
    settings.KAFKA_CONSUMER_GROUP_PREFIX = f"{prefix}group"
    settings.KAFKA_TOPIC_PARTITIONS = 2
    topics_ensure()
    yield prefix
    topics_delete(prefix)


@pytest.fixture
def redis_clean():
    from streaming.redis import redis_client

    client = redis_client()
    client.flushdb()
    return client


@pytest.fixture
def redis_away(settings):
    """Redis as a process sees it when the server is down: a port where nothing listens."""
    from streaming.redis import redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()  # the process's one client: made again for the URL above, and after
    yield
    redis_client.cache_clear()


@pytest.fixture(autouse=True)
def _series_tables_empty(request):
    """Transactional tests commit for real, and Django's flush skips the
    unmanaged time-series tables: empty them before each such test."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction"))
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")
    from django.db import connection

    from market.storage import SERIES_TABLES

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(table.name for table in SERIES_TABLES)}")
    yield
