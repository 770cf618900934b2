"""How far a consumer has got in event time, across the partitions it reads.

A consumer reading several partitions rarely reads them at the same pace:
after a restart it catches up partition by partition, and a busy partition
fills whole batches while a quiet one trickles. Event time then advances
unevenly (partition 0 at 14:05 while partition 1 is still at 14:01), and a rule
that acts on the *absence* of events (a symbol that stopped trading, a minute
that closed without a trade) must only act on time that every partition has
passed, or the symbols of the partition behind look silent.

The watermark of a topic is therefore the earliest, over its partitions that
still have messages to read, of the latest event time read from each. A
partition read to its end holds nothing back: what arrives there next is new.
When every partition is read to its end, the watermark is the latest event time
read from any of them. A partition with messages to read whose event time is not
known yet (nothing read from it since the assignment) makes the watermark
unknown. The watermark never goes back.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime

__all__ = ["EventTimeWatermark"]


class EventTimeWatermark:
    """One topic's watermark; partitions are any hashable key, e.g. (topic, partition)."""

    def __init__(self) -> None:
        self._latest: dict[Hashable, datetime] = {}
        self._watermark: datetime | None = None

    def observe(self, partition: Hashable, ts: datetime) -> None:
        """An event of time ``ts`` was read from ``partition``."""
        latest = self._latest.get(partition)
        if latest is None or ts > latest:
            self._latest[partition] = ts

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """The partitions were revoked: another consumer reads them now."""
        for partition in partitions:
            self._latest.pop(partition, None)

    def advance(self, pending: Iterable[Hashable]) -> datetime | None:
        """The watermark, given the partitions that still have messages to read (any others
        are read to their end); None while unknown."""
        behind: datetime | None = None
        for partition in pending:
            latest = self._latest.get(partition)
            if latest is None:
                return self._watermark
            if behind is None or latest < behind:
                behind = latest
        if behind is None and self._latest:
            behind = max(self._latest.values())
        if behind is not None and (self._watermark is None or behind > self._watermark):
            self._watermark = behind
        return self._watermark
