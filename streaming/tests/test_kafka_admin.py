"""Topic administration against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from streaming import kafka
from streaming.kafka import admin_client, topics_delete, topics_ensure
from streaming.topics import TopicSpec


def _topics_starting(prefix: str) -> set[str]:
    return {name for name in admin_client().list_topics(timeout=10).topics if name.startswith(prefix)}


@pytest.mark.services
def test_topics_delete_removes_the_runs_topics_and_no_others(settings):
    settings.KAFKA_TOPIC_PREFIX = ""
    run = f"del-{uuid.uuid4().hex[:8]}-12"
    mine, also_mine, longer_run = f"{run}.", f"changelog__{run}-", f"{run}3."
    topics_ensure([TopicSpec(f"{mine}a", 1, {}), TopicSpec(f"{mine}b", 2, {}), TopicSpec(f"{also_mine}c", 1, {}),
                   TopicSpec(f"{longer_run}a", 1, {})])
    try:
        deleted = topics_delete(mine, also_mine)

        assert deleted == [f"{also_mine}c", f"{mine}a", f"{mine}b"]
        deadline = time.monotonic() + 30  # the broker's metadata follows the deletion shortly after
        while (_topics_starting(mine) or _topics_starting(also_mine)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _topics_starting(mine) | _topics_starting(also_mine) == set()
        assert _topics_starting(longer_run) == {f"{longer_run}a"}
    finally:
        topics_delete(mine, also_mine, longer_run)


@pytest.mark.services
def test_topics_delete_of_nothing_deletes_nothing():
    assert topics_delete(f"none-{uuid.uuid4().hex[:8]}.") == []


def test_topics_delete_of_an_unreachable_broker_warns_and_returns(settings, caplog):
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"  # nothing listens there

    assert topics_delete("bench-x-1.", timeout=0.5) == []
    assert "could not delete the topics bench-x-1.*" in caplog.text


@pytest.mark.parametrize("prefix", ["", "t", "bench", "bench-123", "market.", "market.trades", "finstream.",
                                    "__consumer"])
def test_topics_delete_refuses_a_prefix_that_could_match_other_topics(prefix, monkeypatch):
    def no_broker(**_):
        raise AssertionError("a refused prefix must not reach the broker")

    monkeypatch.setattr(kafka, "admin_client", no_broker)
    with pytest.raises(ValueError, match="unique prefix"):
        topics_delete(prefix)
