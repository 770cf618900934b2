"""Detection quality: the alerts of a run scored against the simulator's injected anomalies.

Pure: no Django, no I/O, no clock. The quality test (``alerts/tests/test_detection_quality.py``)
holds the bounds of issue 6 with it, and ``bench/anomaly_quality.py`` prints the whole table.

**Matching.** An alert *matches* an injected anomaly (``market.domain.simulator.InjectedAnomaly``)
when all three hold:

* its type is the one that detects the anomaly's kind: ``price_spike`` alerts detect
  ``price_spike`` anomalies, ``volume_anomaly`` alerts detect ``volume_burst`` ones;
* it is for the anomaly's symbol;
* its event time ``ts`` (the trigger's event time, see docs/alerts.md) lies in
  ``[anomaly.start, anomaly.end + tolerance]``, bounds included.

The tolerance is how long after the end of the injected move the rule can still legitimately be
triggered by it:

* ``price_spike``: 61 s. The rule compares a trade with the extremes of its window (the trade's
  own second and the 60 whole seconds before it), so a price reached during the move is still
  the reference for 61 s after it was printed: a trade up to ``end + 61 s`` can measure the move.
  (In practice every alert comes before ``end + 10 s``: the first trade after the move.)
* ``volume_burst``: 60 s, one bucket. A volume alert is stamped with the *end* of its minute,
  so a burst that ended inside a minute is alerted at that minute's end, up to 60 s after the
  burst. The simulator's bursts are whole UTC minutes, so their alerts lie in
  ``(start, end]``; the tolerance only matters for other ground truth.

Injected anomalies of one symbol are at least an hour apart, so an alert matches at most one.

**Counts**, per scored kind:

* ``anomalies``: the injected anomalies that were due, i.e. ``end + tolerance <= until`` (an
  anomaly still running when the run stopped is neither found nor missed);
* ``detected`` (true positives): due anomalies matched by at least one alert;
  ``missed`` (false negatives) = ``anomalies - detected``;
* ``alerts``: every alert of the type, escalations included (an escalation is a row of its own);
  ``matched`` of them match an anomaly (due or not), ``false_alerts`` (false positives) match none;
* ``recall = detected / anomalies`` and ``precision = matched / alerts`` (1.0 when the
  denominator is 0: nothing to find, or nothing claimed);
* ``delays``: for each detected anomaly, the event time from ``anomaly.start`` to its first
  matching alert's ``ts``, in seconds. For a volume burst that is at least one minute: the
  bucket has to complete.

Alerts of the other types (spread blowout, crossed quote, stale feed) are not scored: the
simulator injects nothing for them, and a spread blowout during a price spike is right (spreads
widen 4x there). They are counted in ``others``, with how many came within ``NEAR`` of an
injected anomaly of the same symbol.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from alerts.domain.detectors import AnomalyEngine, AlertSignal
from market.domain.simulator import InjectedAnomaly
from streaming.schemas import Quote, Trade

__all__ = [
    "ALERT_TYPE_OF_KIND",
    "NEAR",
    "TOLERANCE",
    "AlertLike",
    "Detection",
    "KindScore",
    "OtherCount",
    "QualityReport",
    "detect_in_batches",
    "percentile",
    "quality_score",
    "quality_table",
]

ALERT_TYPE_OF_KIND: Mapping[str, str] = {"price_spike": "price_spike", "volume_burst": "volume_anomaly"}
TOLERANCE: Mapping[str, timedelta] = {"price_spike": timedelta(seconds=61), "volume_burst": timedelta(seconds=60)}
# A price spike's wide spreads last up to 5 minutes after the move (the simulator's hold).
NEAR = timedelta(minutes=5)


class AlertLike(Protocol):
    """What scoring reads of an alert: ``AlertSignal`` and ``streaming.schemas.Alert`` both fit."""

    @property
    def type(self) -> str: ...

    @property
    def symbol(self) -> str: ...

    @property
    def ts(self) -> datetime: ...


@dataclass(frozen=True)
class KindScore:
    kind: str
    alert_type: str
    anomalies: int
    detected: int
    alerts: int
    matched: int
    escalations: int
    delays: tuple[float, ...]  # seconds, ascending, one per detected anomaly
    missed_anomalies: tuple[InjectedAnomaly, ...] = ()
    false_alert_list: tuple[AlertLike, ...] = ()

    @property
    def missed(self) -> int:
        return self.anomalies - self.detected

    @property
    def false_alerts(self) -> int:
        return self.alerts - self.matched

    @property
    def recall(self) -> float:
        return self.detected / self.anomalies if self.anomalies else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.alerts if self.alerts else 1.0


@dataclass(frozen=True)
class OtherCount:
    alert_type: str
    alerts: int
    near_anomaly: int  # within NEAR after the start of an injected anomaly of the same symbol


@dataclass(frozen=True)
class QualityReport:
    until: datetime
    scores: dict[str, KindScore]  # by anomaly kind
    others: dict[str, OtherCount] = field(default_factory=dict)  # by alert type


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ascending ``values``; NaN if empty."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def _is_escalation(alert: AlertLike) -> bool:
    observed = getattr(alert, "observed", None) or {}
    return "escalated_to" in observed


def quality_score(
    *, ground_truth: Iterable[InjectedAnomaly], alerts: Iterable[AlertLike], until: datetime
) -> QualityReport:
    """Score ``alerts`` against ``ground_truth`` for a run whose event time reached ``until``
    (see the module docstring for the exact definitions). Raises ``ValueError`` for a naive
    ``until``."""
    if until.tzinfo is None or until.utcoffset() is None:
        raise ValueError(f"until must be timezone-aware (UTC), got naive {until.isoformat()}")
    anomalies: dict[tuple[str, str], list[InjectedAnomaly]] = defaultdict(list)
    for anomaly in ground_truth:
        anomalies[(anomaly.kind, anomaly.symbol)].append(anomaly)
    starts: dict[tuple[str, str], list[datetime]] = {}
    for key, items in anomalies.items():
        items.sort(key=lambda a: a.start)
        starts[key] = [a.start for a in items]
    kind_of_type = {alert_type: kind for kind, alert_type in ALERT_TYPE_OF_KIND.items()}

    first_alert: dict[InjectedAnomaly, datetime] = {}
    alerts_of: dict[str, list[AlertLike]] = defaultdict(list)
    false_of: dict[str, list[AlertLike]] = defaultdict(list)
    escalations: dict[str, int] = defaultdict(int)
    other_alerts: dict[str, list[AlertLike]] = defaultdict(list)
    for alert in alerts:
        kind = kind_of_type.get(alert.type)
        if kind is None:
            other_alerts[alert.type].append(alert)
            continue
        alerts_of[kind].append(alert)
        escalations[kind] += _is_escalation(alert)
        key = (kind, alert.symbol)
        candidates = anomalies.get(key, [])
        # The latest anomaly that started at or before the alert is the only one it can match.
        i = bisect_right(starts.get(key, []), alert.ts) - 1
        anomaly = candidates[i] if i >= 0 else None
        if anomaly is not None and alert.ts <= anomaly.end + TOLERANCE[kind]:
            if anomaly not in first_alert or alert.ts < first_alert[anomaly]:
                first_alert[anomaly] = alert.ts
        else:
            false_of[kind].append(alert)

    scores = {}
    for kind, alert_type in ALERT_TYPE_OF_KIND.items():
        due = [a for (k, _symbol), items in anomalies.items() if k == kind for a in items
               if a.end + TOLERANCE[kind] <= until]
        due.sort(key=lambda a: (a.start, a.symbol))
        found = [a for a in due if a in first_alert]
        scores[kind] = KindScore(
            kind=kind,
            alert_type=alert_type,
            anomalies=len(due),
            detected=len(found),
            alerts=len(alerts_of[kind]),
            matched=len(alerts_of[kind]) - len(false_of[kind]),
            escalations=escalations[kind],
            delays=tuple(sorted((first_alert[a] - a.start).total_seconds() for a in found)),
            missed_anomalies=tuple(a for a in due if a not in first_alert),
            false_alert_list=tuple(sorted(false_of[kind], key=lambda a: (a.ts, a.symbol))),
        )

    by_symbol: dict[str, list[InjectedAnomaly]] = defaultdict(list)
    for (_kind, symbol), items in anomalies.items():
        by_symbol[symbol] += items
    others = {}
    for alert_type, items in sorted(other_alerts.items()):
        near = sum(any(a.start <= alert.ts <= a.end + NEAR for a in by_symbol.get(alert.symbol, ()))
                   for alert in items)
        others[alert_type] = OtherCount(alert_type=alert_type, alerts=len(items), near_anomaly=near)
    return QualityReport(until=until, scores=scores, others=others)


@dataclass(frozen=True)
class Detection:
    signals: list[AlertSignal]
    trades: int
    quotes: int
    until: datetime  # the latest event time fed


def _trade_order(trade: Trade) -> tuple[str, datetime, int]:
    return trade.symbol, trade.ts, trade.seq


def _quote_order(quote: Quote) -> tuple[str, datetime]:
    return quote.symbol, quote.ts


def detect_in_batches(
    *, engine: AnomalyEngine, events: Iterable[Trade | Quote], batch_size: int = 1000
) -> Detection:
    """Feed ``events`` to ``engine`` the way the anomaly consumer does (alerts/pipelines.py):
    batches of ``batch_size`` events, each batch's trades and quotes sorted per symbol by
    (ts, seq), then ``on_trades``, ``on_quotes`` and ``advance`` to the batch's latest trade
    time (the watermark of one stream read in order). Keep a batch's span of event time under
    the stale-feed gap (120 s by default) to get what live, sub-second batches would get
    (docs/alerts.md, "Batches, replays and restarts")."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    signals: list[AlertSignal] = []
    trade_count = quote_count = 0
    until: datetime | None = None
    batch: list[Trade | Quote] = []

    def flush() -> None:
        nonlocal trade_count, quote_count
        trades = sorted((e for e in batch if type(e) is Trade), key=_trade_order)
        quotes = sorted((e for e in batch if type(e) is not Trade), key=_quote_order)
        trade_count += len(trades)
        quote_count += len(quotes)
        signals.extend(engine.on_trades(trades))
        signals.extend(engine.on_quotes(quotes))
        if trades:
            signals.extend(engine.advance(max(t.ts for t in trades)))
        batch.clear()

    for event in events:
        batch.append(event)
        if until is None or event.ts > until:
            until = event.ts
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if until is None:
        raise ValueError("no events: nothing to detect on")
    return Detection(signals=signals, trades=trade_count, quotes=quote_count, until=until)


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def quality_table(report: QualityReport, *, details: int = 5) -> str:
    """The confusion table as Markdown, the delays, and the first ``details`` misses and false
    alerts of each kind: what the benchmark prints and what a failing test shows."""
    lines = [
        "| kind | anomalies | detected (TP) | missed (FN) | alerts | matched | false (FP) | escalations "
        "| recall | precision | delay p50 s | delay p99 s | delay max s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for score in report.scores.values():
        lines.append(
            f"| {score.kind} ({score.alert_type} alerts) | {score.anomalies} | {score.detected} | {score.missed} "
            f"| {score.alerts} | {score.matched} | {score.false_alerts} | {score.escalations} "
            f"| {score.recall:.2%} | {score.precision:.2%} | {_seconds(percentile(score.delays, 50))} "
            f"| {_seconds(percentile(score.delays, 99))} | {_seconds(score.delays[-1] if score.delays else math.nan)} |"
        )
    if report.others:
        lines.append("")
        lines.append("| other alert type (not scored) | alerts | within 5 min of an injected anomaly, same symbol |")
        lines.append("|---|---:|---:|")
        for other in report.others.values():
            lines.append(f"| {other.alert_type} | {other.alerts} | {other.near_anomaly} |")
    for score in report.scores.values():
        for anomaly in score.missed_anomalies[:details]:
            lines.append(f"missed {score.kind}: {anomaly.symbol} {anomaly.start:%Y-%m-%d %H:%M:%S}-"
                         f"{anomaly.end:%H:%M:%S} magnitude {anomaly.magnitude:g}")
        for alert in score.false_alert_list[:details]:
            message = getattr(alert, "message", "")
            lines.append(f"false {score.alert_type}: {alert.symbol} {alert.ts:%Y-%m-%d %H:%M:%S} {message}")
    return "\n".join(lines)
