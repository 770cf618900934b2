"""Topic administration against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from streaming.kafka import admin_client, topics_delete, topics_ensure
from streaming.topics import TopicSpec


def _topics_named(marker: str) -> set[str]:
    return {name for name in admin_client().list_topics(timeout=10).topics if marker in name}


@pytest.mark.services
def test_topics_delete_removes_the_runs_topics_and_no_others(settings):
    settings.KAFKA_TOPIC_PREFIX = ""
    mine, other = f"del{uuid.uuid4().hex[:8]}.", f"keep{uuid.uuid4().hex[:8]}."
    topics_ensure([TopicSpec(f"{mine}a", 1, {}), TopicSpec(f"{mine}b", 2, {}), TopicSpec(f"{other}a", 1, {})])

    deleted = topics_delete(mine)

    assert deleted == [f"{mine}a", f"{mine}b"]
    deadline = time.monotonic() + 30  # the broker's metadata follows the deletion shortly after
    while _topics_named(mine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _topics_named(mine) == set()
    assert _topics_named(other) == {f"{other}a"}
    topics_delete(other)


@pytest.mark.services
def test_topics_delete_of_nothing_deletes_nothing():
    assert topics_delete(f"none{uuid.uuid4().hex[:8]}.") == []


@pytest.mark.parametrize("marker", ["", "t", "bench"])
def test_topics_delete_refuses_a_marker_that_could_match_other_topics(marker):
    with pytest.raises(ValueError, match="unique prefix"):
        topics_delete(marker)
