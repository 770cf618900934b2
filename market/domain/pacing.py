"""Pacing: when to send an event so that event time plays out in wall time at a given speed.

Pure arithmetic: the command reads the monotonic clock and sleeps, this
module only says how long. Each event gets its own due time,

    due = wall_start + (event_ms - event_start_ms) / 1000 / speed

with event times in epoch milliseconds, the Kafka timestamps of the messages (a
millisecond is a tenth of the gap between events at 100 a second). So 100
events a second spread evenly over the second instead of leaving in a burst
when a second ticks over. A sender that falls behind (a slow broker)
gets 0 until it has caught up: it catches up as fast as it can and never
skips events or moves the schedule.

``simulate`` uses speed 1 with ``event_start_ms`` = the simulator's start (now);
``replay --speed N`` uses the first event time of the file, so a gap of hours
in the file is a wait of hours / N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Pacer:
    """Maps event time onto monotonic wall time.

    ``wall_start`` is ``time.monotonic()`` when the run started and
    ``event_start_ms`` the event time (epoch milliseconds) that corresponds to it.
    ``speed`` is event seconds per wall second (2.0 plays twice as fast);
    ``None`` means as fast as possible.
    """

    wall_start: float
    event_start_ms: int
    speed: float | None = 1.0

    def __post_init__(self) -> None:
        if self.speed is not None and not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a positive number, or None for as fast as possible; got {self.speed}")

    def due_at(self, event_ms: int) -> float:
        """The monotonic time at which the event is due; when unpaced, every event is due at the start."""
        if self.speed is None:
            return self.wall_start
        return self.wall_start + (event_ms - self.event_start_ms) / (1000.0 * self.speed)

    def seconds_to_wait(self, event_ms: int, now_monotonic: float) -> float:
        """How long to wait before sending the event: 0.0 when it is due or overdue."""
        if self.speed is None:
            return 0.0
        return max(0.0, self.due_at(event_ms) - now_monotonic)

    def seconds_behind(self, event_ms: int, now_monotonic: float) -> float:
        """How late the event is (0.0 when early or unpaced): a lag to report as a metric."""
        if self.speed is None:
            return 0.0
        return max(0.0, now_monotonic - self.due_at(event_ms))
