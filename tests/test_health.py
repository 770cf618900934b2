"""/health and /ready against the real services, and /ready turning 503 when
one of them stops."""

import socket
import subprocess

import pytest

from streaming.redis import redis_client
from streaming.testing import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client():
    from django.test import Client

    return Client()


def test_health_answers_without_touching_any_service(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200  # what uptime checkers often send


@pytest.mark.django_db
def test_ready_is_green_with_every_check_and_its_latency(client, settings):
    settings.READY_CONSUMERS = []
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"postgres", "migrations", "storage", "redis", "kafka", "consumers"}
    assert all(check["ok"] and check["latency_ms"] >= 0 for check in body["checks"].values())
    assert body["checks"]["storage"]["detail"] == "partitions"


@pytest.mark.django_db
def test_ready_turns_503_when_redis_stops(client, settings):
    settings.READY_CONSUMERS = []
    port = _free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                              stdout=subprocess.DEVNULL)
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        redis_client.cache_clear()
        wait_for(lambda: client.get("/ready").status_code == 200, timeout=10, what="ready with the new Redis")
        server.terminate()
        server.wait(10)
        response = client.get("/ready")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert not checks["redis"]["ok"]
        assert checks["postgres"]["ok"] and checks["kafka"]["ok"]
    finally:
        server.kill()
        redis_client.cache_clear()


@pytest.mark.django_db
def test_ready_turns_503_when_kafka_does_not_answer(client, settings):
    settings.READY_CONSUMERS = []
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{_free_port()}"
    response = client.get("/ready")
    assert response.status_code == 503
    detail = response.json()["checks"]["kafka"]["detail"]
    assert "KafkaUnavailable" in detail and settings.KAFKA_BOOTSTRAP_SERVERS not in detail  # addresses: the log only


@pytest.mark.django_db
def test_ready_names_a_consumer_without_a_heartbeat(client, settings, redis_clean):
    settings.READY_CONSUMERS = ["build_candles"]
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["consumers"]["detail"] == "no recent heartbeat from build_candles"
