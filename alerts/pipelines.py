"""`detect_anomalies` on the consumer runner: trades and quotes in, alerts out."""

from __future__ import annotations

import logging
import operator
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import get_args

from alerts import selectors as alert_selectors
from alerts import services
from alerts.domain.detectors import AnomalyEngine
from alerts.domain.rules import SEVERITIES, RuleType
from alerts.domain.signals import AlertSignal
from market import selectors as market_selectors
from streaming import metrics
from streaming.kafka import EventPublisher
from streaming.runner import Events
from streaming.schemas import Alert, encode
from streaming.topics import ALERTS, QUOTES, TRADES, topic

_by_symbol = operator.attrgetter("symbol")  # a stable sort: each symbol keeps its arrival order

log = logging.getLogger(__name__)

# How far back a (re)started detector reads history to rebuild its state:
# baselines from 1m candles, the spike window from trades, spreads from quotes.
WARM_CANDLES = timedelta(minutes=90)
WARM_TRADES = timedelta(minutes=2)
WARM_QUOTES = timedelta(minutes=6)
RULES_RELOAD_SECONDS = 30.0
RECENT_IDS = 200_000  # trade ids remembered to drop duplicated messages; bounded memory


@dataclass
class Detected:
    alerts: list[Alert]


class AnomalyPipeline:
    """Feeds each batch, symbol by symbol in event order, to the pure anomaly
    engine; stores the alerts it raises (ids are deterministic, so a replay
    stores nothing twice) and publishes the new ones after the commit."""

    name = "detect_anomalies"
    topics = (TRADES, QUOTES)

    def __init__(self, *, publisher: EventPublisher | None = None, clock=time.monotonic) -> None:
        self.publisher = publisher if publisher is not None else EventPublisher(name=self.name)
        self._alerts_topic = topic(ALERTS)
        self._clock = clock
        self._engine: AnomalyEngine | None = None
        self._rules_version = None
        self._rules_checked = 0.0
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        # The batch last detected on (held, so that `is` cannot match a new
        # batch that happens to reuse its memory) and the signals it raised.
        self._detected_for: tuple[Events, list[AlertSignal]] | None = None
        # Every type's and severity's series from the start, at 0: a counter with no series yet has no
        # rate either, and a dashboard's "alerts raised" would say "no data" instead of 0.
        for rule_type in get_args(RuleType):
            for severity in SEVERITIES:
                metrics.ALERTS.labels(type=rule_type, severity=severity)

    def _engine_current(self) -> AnomalyEngine:
        now = self._clock()
        if self._engine is not None and now - self._rules_checked < RULES_RELOAD_SECONDS:
            return self._engine
        self._rules_checked = now
        version = alert_selectors.alert_rules_version()
        if self._engine is None or version != self._rules_version:
            configs, problems = alert_selectors.alert_rule_configs()
            for problem in problems:
                log.error("alert rule left out until it is fixed in the admin: %s", problem)
            engine = AnomalyEngine(configs)
            since = datetime.now(UTC)
            engine.warm(candles=market_selectors.candles_since(interval="1m", since=since - WARM_CANDLES),
                        trades=market_selectors.trades_since(since=since - WARM_TRADES),
                        quotes=market_selectors.quotes_since(since=since - WARM_QUOTES))
            log.info("anomaly engine (re)built with %d rules and warmed from history", len(engine.rules))
            self._engine, self._rules_version = engine, version
        return self._engine

    def _fresh(self, trades):
        """Drop trades seen before (a duplicated message must not add volume twice)."""
        recent = self._recent_ids
        fresh = []
        for trade in trades:
            if trade.id in recent:
                continue
            recent[trade.id] = None
            fresh.append(trade)
        while len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        return fresh

    def prepare(self, events: Events) -> None:
        # Detection runs here, once per batch: the runner retries a batch whose
        # transaction failed, and the engine must not see its trades twice.
        if self._detected_for is not None and self._detected_for[0] is events:
            return
        engine = self._engine_current()
        # Grouped by symbol, each in the order it arrived (its partition's): sorting a batch by time
        # would hide a late print that shares a batch with the trades it is late for, and make the
        # alerts depend on how messages fell into batches.
        trades = sorted(self._fresh(events.get(TRADES, ())), key=_by_symbol)
        quotes = sorted(events.get(QUOTES, ()), key=_by_symbol)
        signals = engine.on_trades(trades) + engine.on_quotes(quotes)
        # Not the batch's latest trade: a symbol on a partition that is behind would look silent.
        watermark = events.event_time.get(TRADES)
        if watermark is not None:
            signals += engine.advance(watermark)
        self._detected_for = (events, signals)

    def store(self, events: Events) -> Detected:
        signals = self._detected_for[1] if self._detected_for else []
        return Detected(alerts=services.alerts_store(signals=signals, detected_at=datetime.now(UTC)))

    def after_commit(self, result: Detected) -> None:
        for alert in result.alerts:
            self.publisher.publish(self._alerts_topic, alert.symbol, encode(alert))
            metrics.ALERTS.labels(type=alert.type, severity=alert.severity).inc()
            metrics.DETECTION_DELAY.observe(max(0.0, (alert.detected_at - alert.ts).total_seconds()))
            log.info("alert %s %s %s: %s", alert.severity, alert.type, alert.symbol, alert.message)
        self.publisher.poll(0)

    def close(self) -> None:
        self.publisher.flush()
