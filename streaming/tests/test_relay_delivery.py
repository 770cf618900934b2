"""The relay on the real runner, broker, database and Redis: it publishes a batch before the
runner stores the batch's offsets, once per batch whatever PostgreSQL does meanwhile."""

import psycopg
import pytest
from django.db import connection

from streaming import runner as runner_module
from streaming.redis import redis_client
from streaming.relay import CHANNEL_KEY, RelayPipeline
from streaming.runner import ConsumerRunner, RunnerOptions
from streaming.testing import consume_until
from streaming.tests.test_runner import make_trades, publish_trades

pytestmark = pytest.mark.django_db(transaction=True)


def relay_runner() -> ConsumerRunner:
    runner = ConsumerRunner(RelayPipeline(), RunnerOptions(batch_size=100, batch_wait=0.2))
    runner.subscribe()
    return runner


def numbered(channel: str) -> int:
    return int(redis_client().hget(CHANNEL_KEY.format(channel), "seq") or 0)


def offsets_save_failing_once(failure):
    real = runner_module.offsets_save
    calls = []

    def offsets_save(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            failure()
        real(**kwargs)

    return offsets_save, calls


def test_a_batch_is_published_once_when_postgres_drops_the_relay_mid_batch(kafka_topics, redis_clean, monkeypatch):
    def lose_the_connection():
        # Really: another session ends the relay's own, so its next statement fails as it would
        # when PostgreSQL restarts.
        pid = connection.connection.info.backend_pid
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

    save, calls = offsets_save_failing_once(lose_the_connection)
    monkeypatch.setattr(runner_module, "offsets_save", save)
    publish_trades(make_trades(20, symbols=("AAPL",)))
    runner = relay_runner()
    try:
        consume_until(runner, 20)
    finally:
        runner.close()
    assert len(calls) >= 2  # the runner retried the transaction
    assert numbered("trades.AAPL") == 20


def test_a_batch_sent_but_not_recorded_is_sent_again_after_a_crash(kafka_topics, redis_clean, monkeypatch):
    def crash():
        raise RuntimeError("killed between the sends and the offsets' commit")

    save, _calls = offsets_save_failing_once(crash)
    monkeypatch.setattr(runner_module, "offsets_save", save)
    publish_trades(make_trades(20, symbols=("AAPL",)))
    first = relay_runner()
    try:
        with pytest.raises(RuntimeError):
            consume_until(first, 20)
    finally:
        first.close()
    assert numbered("trades.AAPL") > 0  # the clients got what it had sent
    sent_before_the_crash = numbered("trades.AAPL")
    second = relay_runner()
    try:
        consume_until(second, 20)
    finally:
        second.close()
    # at-least-once: nothing lost, the batch again under new numbers
    assert numbered("trades.AAPL") == sent_before_the_crash + 20
