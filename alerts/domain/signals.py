"""What the detectors emit (``AlertSignal``), its deterministic id, and the episode bookkeeping
that turns "the condition holds" into at most one alert per episode and severity.

Pure: no Django, no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b

from streaming.schemas import Alert, Severity

from .rules import SEVERITIES

__all__ = ["AlertSignal", "Episode", "EpisodeSeed", "alert_id", "format_ts", "parse_ts", "to_message"]

LEVEL: dict[str, int] = {severity: level for level, severity in enumerate(SEVERITIES)}
MAX_LEVEL = len(SEVERITIES) - 1


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(ts: datetime) -> str:
    """The one text form of an event time in ids and ``observed``: UTC, microseconds, a Z."""
    return ts.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """``format_ts`` read back; ValueError for any other text."""
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def alert_id(rule: str, symbol: str, episode_start: datetime, severity: str | None = None) -> str:
    """``"al-"`` and 24 hex digits of BLAKE2b over (rule, symbol, episode start[, severity]).

    The first alert of an episode has no severity in its id; an escalation inside the same
    episode adds the severity it escalated to, so each is a distinct row and a replay after a
    crash produces the same ids again (the insert ignores them)."""
    key = f"{rule}\x1f{symbol}\x1f{format_ts(episode_start)}"
    if severity is not None:
        key += f"\x1f{severity}"
    return "al-" + blake2b(key.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class AlertSignal:
    """One alert raised by a rule.

    ``ts`` is the event time of what triggered it (see docs/alerts.md per rule);
    ``episode_start`` is the ``ts`` of the episode's first alert, so an escalation carries the
    start of the episode it belongs to. ``observed`` holds the measured values, JSON-ready:
    only str, int and float (never bool, NaN or a Decimal), as ``schemas.Alert`` requires.
    """

    id: str
    rule: str
    type: str
    severity: Severity
    symbol: str
    message: str
    ts: datetime
    observed: dict[str, str | int | float]
    episode_start: datetime


def to_message(signal: AlertSignal, detected_at: datetime) -> Alert:
    """The ``alerts`` topic message of a signal. ``detected_at`` is the processing time the caller
    read from its clock; raises ``ValueError`` if it is naive."""
    if detected_at.tzinfo is None or detected_at.utcoffset() is None:
        raise ValueError(f"detected_at must be timezone-aware (UTC), got naive {detected_at.isoformat()}")
    return Alert(
        id=signal.id,
        rule=signal.rule,
        type=signal.type,
        severity=signal.severity,
        symbol=signal.symbol,
        message=signal.message,
        ts=signal.ts.astimezone(UTC),
        detected_at=detected_at.astimezone(UTC),
        observed=dict(signal.observed),
    )


START = "start"
ESCALATION = "escalation"


@dataclass(frozen=True, slots=True)
class EpisodeSeed:
    """An episode as its stored alerts tell it: the first alert's time (the episode's start, in
    every id of the episode), the latest alert's, and the highest severity alerted."""

    rule: str
    type: str
    symbol: str
    start: datetime
    last: datetime
    severity: str


class Episode:
    """Cooldown state of one (rule, symbol).

    An episode starts at the first event where the condition holds and lasts while the condition
    keeps holding at least once every ``cooldown`` seconds of event time: a trigger at ``t`` with
    ``t - last_true >= cooldown`` starts a new episode. Inside an episode one more alert is due
    each time the severity rises above every severity already alerted (at most one per level).
    """

    __slots__ = ("start", "last_true", "level")

    def __init__(self) -> None:
        self.start: datetime | None = None
        self.last_true = -math.inf
        self.level = -1

    def resume(self, seed: EpisodeSeed, *, start: float, last: float) -> bool:
        """Continue an episode a run before this one alerted (``seed``, its start and last alert at
        event times ``start`` and ``last``), once the history is fed: its start and level are what
        was alerted; the history's triggers since its start extend it. A history episode that
        began after it is kept: the alerts never saw it. Returns whether the seed was continued."""
        if self.start is not None and self.start > seed.start:
            return False
        since = self.last_true if self.start is not None and self.last_true >= start else -math.inf
        self.start, self.level, self.last_true = seed.start, LEVEL[seed.severity], max(last, since)
        return True

    def is_new(self, t: float, cooldown: float) -> bool:
        return self.start is None or t - self.last_true >= cooldown

    def trigger(self, t: float, ts: datetime, severity: str, cooldown: float) -> str | None:
        """Record that the condition holds at event time ``t`` (``ts``); return ``START`` or
        ``ESCALATION`` when an alert is due, else None."""
        level = LEVEL[severity]
        if self.is_new(t, cooldown):
            self.start, self.level = ts, level
            self.last_true = t
            return START
        if t > self.last_true:
            self.last_true = t
        if level > self.level:
            self.level = level
            return ESCALATION
        return None

    def signal(
        self, *, stage: str, rule: str, type: str, severity: Severity, symbol: str, message: str, ts: datetime,
        observed: dict[str, str | int | float],
    ) -> AlertSignal:
        assert self.start is not None
        if stage == ESCALATION:
            message += f" (escalated to {severity})"
            observed["escalated_to"] = severity
            # The start is in the id only as a hash: stored here, an escalation whose start alert
            # is not stored (the rule was added mid-episode) still tells a restart its episode.
            observed["episode_start"] = format_ts(self.start)
        return AlertSignal(
            id=alert_id(rule, symbol, self.start, severity if stage == ESCALATION else None),
            rule=rule,
            type=type,
            severity=severity,
            symbol=symbol,
            message=message,
            ts=ts,
            observed=observed,
            episode_start=self.start,
        )


def fmt_qty(value: float) -> str:
    """A volume for a person: thousands separators, at most 4 decimals, no trailing zeros."""
    text = f"{value:,.4f}".rstrip("0").rstrip(".")
    return text or "0"


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
