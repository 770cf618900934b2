"""`detect_anomalies` on the consumer runner: trades and quotes in, alerts out."""

from __future__ import annotations

import logging
import operator
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import get_args

from alerts import selectors as alert_selectors
from alerts import services
from alerts.domain.detectors import QUOTE_EPISODE_TYPES, TRADE_EPISODE_TYPES, AnomalyEngine
from alerts.domain.rules import SEVERITIES, RuleType, condition_changed
from alerts.domain.signals import AlertSignal
from market import selectors as market_selectors
from streaming import metrics
from streaming.kafka import EventPublisher
from streaming.runner import Events
from streaming.schemas import Alert, encode
from streaming.topics import ALERTS, QUOTES, TRADES, topic

_by_symbol = operator.attrgetter("symbol")  # a stable sort: each symbol keeps its arrival order

log = logging.getLogger(__name__)

# How far back a (re)built engine reads history to rebuild a symbol's state: baselines from 1m
# candles, the spike window from trades, spreads from quotes. The history ends where the detector
# resumes reading that symbol, not at the wall clock: a detector restarted behind re-reads a
# backlog, and history past its resume point would make every backlog event late (unseen).
WARM_CANDLES = timedelta(minutes=90)
WARM_TRADES = timedelta(minutes=2)
WARM_QUOTES = timedelta(minutes=6)
# Episodes are continued from the alerts of the day before a symbol's bound: the cooldowns are far
# shorter, and an episode that started earlier and still goes on is left to start again.
WARM_EPISODES = timedelta(days=1)
RULES_RELOAD_SECONDS = 30.0
RECENT_IDS = 200_000  # trade ids remembered to drop duplicated messages; bounded memory
ONE_MICROSECOND = timedelta(microseconds=1)
_NOTHING_READ = (datetime.min.replace(tzinfo=UTC), -1)


def _first_of_new_symbols(events, known: set[str], bound):
    """symbol -> bound(its first event), for each symbol of `events` not in `known`."""
    first = {}
    if new := {event.symbol for event in events}.difference(known):
        for event in events:
            if event.symbol in new and event.symbol not in first:
                first[event.symbol] = bound(event)
    return first


def _announcer(before: AnomalyEngine, configs) -> Callable[[str, str], bool]:
    """(rule, symbol) -> whether the engine `before` cannot have alerted an episode the rules
    `configs` find: the condition is new or changed for the symbol, and `before` had no episode of
    the rule and symbol open (its episodes, however long, are alerted)."""
    configs_before = {config.rule: config for config in before.rules}
    configs_now = {config.rule: config for config in configs}
    open_before = before.open_episodes()
    return lambda rule, symbol: ((rule, symbol) not in open_before
                                 and condition_changed(configs_before.get(rule), configs_now[rule], symbol))


@dataclass
class Detected:
    alerts: list[Alert]


class AnomalyPipeline:
    """Feeds each batch, symbol by symbol in event order, to the pure anomaly
    engine; stores the alerts it raises (ids are deterministic, so a replay
    stores nothing twice) and publishes the new ones after the commit."""

    name = "detect_anomalies"
    topics = (TRADES, QUOTES)
    requires_redis = False

    def __init__(self, *, publisher: EventPublisher | None = None, clock=time.monotonic) -> None:
        self.publisher = publisher if publisher is not None else EventPublisher(name=self.name)
        self._alerts_topic = topic(ALERTS)
        self._trades_topic = topic(TRADES)
        self._clock = clock
        self._engine: AnomalyEngine | None = None
        self._rules_version = None
        self._rules_checked = 0.0
        # (symbol, time, id) of the trades fed lately: a trade's identity, as the trades table's.
        self._recent_ids: OrderedDict[tuple[str, datetime, str], None] = OrderedDict()
        # The batch last detected on (held, so that `is` cannot match a new
        # batch that happens to reuse its memory) and the signals it raised.
        self._detected_for: tuple[Events, list[AlertSignal]] | None = None
        # Symbols whose trade-side and quote-side state the current engine holds (warmed or fed),
        # and whether the symbols not read since this process started were warmed.
        self._warm_trades: set[str] = set()
        self._warm_quotes: set[str] = set()
        self._warm_quiet = False
        # How far this process has read each symbol, (ts, seq) of its latest trade and ts of its
        # latest quote: an engine built on a rules change is warmed through there.
        self._read_trades: dict[str, tuple[datetime, int]] = {}
        self._read_quotes: dict[str, datetime] = {}
        self._warm_read_before = False  # the engine is new and symbols were read before it
        self._advanced_to: datetime | None = None  # the latest watermark passed to an engine
        self._stale_rules: tuple | None = None  # the engine's stale_feed rules
        self._stale_rules_kept = False  # the engine before had the same
        self._resumed_at: datetime | None = None  # where reading resumed in the market's time (see _warm)
        # The symbols stale_feed watched in the engine before a rules rebuild (None: not known).
        self._watched_before: frozenset[str] | None = frozenset()
        # After a rules rebuild, (rule, symbol) -> whether no engine before alerted what the new engine's
        # warm-up finds open (AnomalyEngine.warm's announce). None after a cold start: the run before
        # the restart did, as far as anything tells.
        self._announce: Callable[[str, str], bool] | None = None
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
            # Which symbols' trades came live is known only to an engine that watched them: one with
            # stale_feed rules. Kept until the new engine's warm-up has covered every symbol (with
            # what a rebuild before that had kept: its warm-up did not run to the end).
            if self._engine is not None:
                watched = self._engine.watched_symbols()
                self._watched_before = (None if watched is None or self._watched_before is None
                                        else watched | self._watched_before)  # None: the history is present
                self._announce = _announcer(self._engine, configs)
            self._engine, self._rules_version = AnomalyEngine(configs), version
            self._warm_trades, self._warm_quotes, self._warm_quiet = set(), set(), False
            self._warm_read_before = bool(self._read_trades or self._read_quotes)
            # A silence the engine before saw is settled only if it saw it under the same rule: a
            # stale_feed rule enabled, or its gap lowered, alerts the silences it now finds.
            stale_rules = tuple(config for config in configs if config.type == "stale_feed")
            self._stale_rules_kept = stale_rules == self._stale_rules
            self._stale_rules = stale_rules
            log.info("anomaly engine (re)built with %d rules; each symbol is warmed from history when "
                     "it is first read", len(self._engine.rules))
        return self._engine

    def _warm(self, engine: AnomalyEngine, trades, quotes, watermark: datetime | None) -> list[AlertSignal]:
        """Warm each symbol the engine holds no state of yet, from the history before where this
        process reads it: its first event in this batch; for a symbol read before a rules change
        built the engine, through its latest event read; for a symbol not read at all once
        `watermark` is known (every partition read up to it), up to the watermark (it has not
        traded since, and stale_feed must know when it last did). Every read comes before any
        state changes: after a database error the runner prepares the same batch again.
        A symbol not read in this batch is settled (a silence longer than stale_feed's gap taken
        as noticed) at the market time the run or engine before had reached with it: for a quiet
        one, where the run before had got to (its silence since then is this run's to alert); after a
        rules change that kept the stale_feed rules, the last watermark. (A symbol read in this
        batch trades: its silence ends anyway.) Returns the signals of episodes that rules a
        rebuild found new or changed find open in the history (AnomalyEngine.warm's announce)."""
        if self._resumed_at is None and trades:
            # Where the run before had got to, or the first batch's earliest trade if later (its offsets
            # reset ahead). Not that trade if earlier: it may be of a file replayed beside the live feed.
            reached = alert_selectors.detector_progress(topic=self._trades_topic)
            earliest = min(trade.ts for trade in trades)
            self._resumed_at = earliest if reached is None else max(reached, earliest)
        trade_bounds = _first_of_new_symbols(trades, self._warm_trades, lambda trade: (trade.ts, trade.seq))
        quote_bounds = _first_of_new_symbols(quotes, self._warm_quotes, lambda quote: quote.ts)
        settled_at: dict[str, datetime] = {}
        changed_to = self._advanced_to if self._stale_rules_kept else None  # after a rules change
        if self._warm_read_before:
            for symbol, (ts, seq) in self._read_trades.items():
                if symbol not in trade_bounds:
                    trade_bounds[symbol] = (ts, seq + 1)
                    if changed_to is not None:
                        settled_at[symbol] = max(ts, changed_to)
            for symbol, ts in self._read_quotes.items():
                quote_bounds.setdefault(symbol, ts + ONE_MICROSECOND)
        warm_quiet = watermark is not None and not self._warm_quiet
        if warm_quiet:
            settle = self._resumed_at if self._advanced_to is None else changed_to
            for symbol in market_selectors.symbol_tickers():
                if symbol not in self._warm_trades and symbol not in trade_bounds:
                    trade_bounds[symbol] = (watermark, -1)
                    if settle is not None:
                        settled_at[symbol] = settle
        trade_times = {symbol: ts for symbol, (ts, _seq) in trade_bounds.items()}
        candles = market_selectors.minute_candles_before(until=trade_times, span=WARM_CANDLES)
        history = market_selectors.trades_before(until=trade_bounds, span=WARM_TRADES)
        quote_history = market_selectors.quotes_before(until=quote_bounds, span=WARM_QUOTES)
        # Each side's rules' episodes for the symbols warmed on that side only: another side's
        # episodes of the symbol are live.
        episodes = [
            *alert_selectors.alert_episodes_before(until=trade_times, within=WARM_EPISODES, types=TRADE_EPISODE_TYPES),
            *alert_selectors.alert_episodes_before(until=quote_bounds, within=WARM_EPISODES, types=QUOTE_EPISODE_TYPES),
        ]
        # The market's present before this history: the last watermark; on a cold start, once every
        # partition is known to have reached a time (before, a partition behind holds older trades
        # that are live), that time or where reading resumed if earlier. After a rebuild whose
        # engine before did not watch (no stale_feed rule), nothing is known: all is present.
        present = self._advanced_to
        if present is None and watermark is not None:
            present = watermark if self._resumed_at is None else min(self._resumed_at, watermark)
        if self._watched_before is None:
            present = None
        announced = engine.warm(candles=candles, trades=history, quotes=quote_history, settled_at=settled_at,
                                episodes=episodes, present=present, watched=self._watched_before or frozenset(),
                                announce=self._announce)
        # A trade read later that is in the history (a late print, or one stored just before the
        # watermark warm-up) must not count twice.
        self._fresh(history)
        self._warm_trades.update(trade_bounds)
        self._warm_quotes.update(quote_bounds)
        self._warm_quiet = self._warm_quiet or warm_quiet
        self._warm_read_before = False
        if self._warm_quiet:  # every symbol is warmed: the engine before's knowledge is spent
            self._watched_before = frozenset()
        return announced

    def _note_read(self, trades, quotes) -> None:
        read_trades, read_quotes = self._read_trades, self._read_quotes
        for trade in trades:
            key = (trade.ts, trade.seq)
            if key > read_trades.get(trade.symbol, _NOTHING_READ):
                read_trades[trade.symbol] = key
        for quote in quotes:
            if quote.ts > read_quotes.get(quote.symbol, _NOTHING_READ[0]):
                read_quotes[quote.symbol] = quote.ts

    def _fresh(self, trades):
        """Drop trades seen before (a duplicated message must not add volume twice)."""
        recent = self._recent_ids
        fresh = []
        for trade in trades:
            key = (trade.symbol, trade.ts, trade.id)
            if key in recent:
                continue
            recent[key] = None
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
        quotes = sorted(events.get(QUOTES, ()), key=_by_symbol)
        # Not the batch's latest trade: a symbol on a partition that is behind would look silent.
        watermark = events.event_time.get(TRADES)
        signals = self._warm(engine, events.get(TRADES, ()), quotes, watermark)
        # A new engine (a restart, a rules change) has not been advanced: where the market was.
        known = self._advanced_to or self._resumed_at
        if known is not None:
            engine.market_time_known(known)
        trades = sorted(self._fresh(events.get(TRADES, ())), key=_by_symbol)
        signals += engine.on_trades(trades) + engine.on_quotes(quotes)
        self._note_read(trades, quotes)
        if watermark is not None:
            signals += engine.advance(watermark)
            self._advanced_to = watermark
        self._detected_for = (events, signals)

    def store(self, events: Events) -> Detected:
        signals = self._detected_for[1] if self._detected_for else []
        if self._advanced_to is not None:
            services.detector_progress_save(topic=self._trades_topic, watermark=self._advanced_to)
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
