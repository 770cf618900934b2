"""The anomaly engine: every configured rule over the trade and quote streams.

Pure: no Django, no I/O, and it never reads the clock; event time comes from the messages and
from ``advance(ts)``. ``docs/alerts.md`` defines each rule exactly. How the anomaly consumer
uses it, per Kafka batch::

    signals = engine.on_trades(trades)            # grouped by symbol, sorted by (ts, seq)
    signals += engine.on_quotes(quotes)           # likewise
    signals += engine.advance(watermark)  # closes quiet symbols' minutes, finds stale feeds
    alerts = [to_message(s, detected_at=now) for s in signals]

Event order. Each symbol's events must come in (ts, seq) order; across symbols the order does
not matter. A trade whose event time is before the symbol's latest trade is *late*: it is
counted in ``counters().late_trades``, ignored by price_spike and stale_feed, and counted by
volume_anomaly only if its minute is still open (else ``late_volume_dropped``). A late quote is
ignored by the quote rules and counted in ``late_quotes``.

Determinism. The engine's output is a function of the sequence of calls: the same events fed
twice give the same signals with the same ids, and so do the same events split into batches
differently, as long as no trade arrives more than the volume rule's ``grace_seconds`` after an
``advance`` passed its minute and batches span less than stale_feed's ``gap_seconds`` (see
docs/alerts.md, "Batches, replays and restarts").

Restart. State is memory only. After a restart the consumer calls ``warm(...)`` with each symbol's
history from the database before where it resumes reading that symbol (1-minute candles for the
volume baseline, the last minutes of trades and quotes); ``warm`` feeds them through the same
code with every signal discarded, so an
episode that was open before the crash stays open and raises nothing new, and one that gets
re-raised has the same id as before (the alert insert ignores it). After a rule change, the
(rule, symbol) pairs whose condition is new or changed, and that the engine before had no
episode of open, are ``announce``d: the episodes found open in the history were alerted under no
run's rules, and ``warm`` returns them.

Memory is O(symbols): per symbol and rule a bounded deque or a few numbers, whatever the trade
rate (``state_size()`` counts the entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from streaming.schemas import Candle, Quote, Trade

from .price_spike import PriceSpikeDetector
from .quote_rules import CrossedQuoteDetector, SpreadBlowoutDetector
from .rules import DEFAULT_RULES, RuleConfig, RuleConfigError
from .signals import AlertSignal, Episode, EpisodeSeed, alert_id, to_message
from .stale_feed import StaleFeedDetector
from .volume_anomaly import VolumeAnomalyDetector

__all__ = [
    "DEFAULT_RULES",
    "AlertSignal",
    "AnomalyEngine",
    "EngineCounters",
    "RuleConfig",
    "alert_id",
    "to_message",
]

_TRADE_RULES = {"price_spike": PriceSpikeDetector, "volume_anomaly": VolumeAnomalyDetector,
                "stale_feed": StaleFeedDetector}
_QUOTE_RULES = {"spread_blowout": SpreadBlowoutDetector, "crossed_quote": CrossedQuoteDetector}

WARM_CHUNK = 10_000
# The rules whose episodes a warm-up continues from the stored alerts, by the side they read.
TRADE_EPISODE_TYPES = ("price_spike", "volume_anomaly")
QUOTE_EPISODE_TYPES = ("spread_blowout", "crossed_quote")
EPISODE_TYPES = TRADE_EPISODE_TYPES + QUOTE_EPISODE_TYPES


@dataclass(frozen=True, slots=True)
class EngineCounters:
    late_trades: int
    late_quotes: int
    late_volume_dropped: int


def _event_time(ts: datetime) -> float:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"event time must be timezone-aware (UTC), got naive {ts.isoformat()}")
    return ts.timestamp()


class AnomalyEngine:
    """Runs every enabled rule; one instance per consumer process, fed by one thread.

    Raises ``RuleConfigError`` if two rules share an id (their alert ids would collide).
    """

    def __init__(self, rules: Sequence[RuleConfig] = DEFAULT_RULES) -> None:
        seen: set[str] = set()
        for config in rules:
            if config.rule in seen:
                raise RuleConfigError(f"rule id {config.rule!r} is used twice; rule ids must be unique")
            seen.add(config.rule)
        self.rules = tuple(rules)
        enabled = [config for config in self.rules if config.enabled]
        self._trade_detectors = [_TRADE_RULES[c.type](c) for c in enabled if c.type in _TRADE_RULES]
        self._quote_detectors = [_QUOTE_RULES[c.type](c) for c in enabled if c.type in _QUOTE_RULES]
        self._volume = [d for d in self._trade_detectors if isinstance(d, VolumeAnomalyDetector)]
        # Whose episodes a warm-up continues from the stored alerts. Not stale_feed's: a silence
        # is settled instead (warm's settled_at), and its state would make a symbol watched.
        self._episodes_of = {d.config.rule: d for d in [*self._trade_detectors, *self._quote_detectors]
                             if d.config.type in EPISODE_TYPES}
        self._stale = [d for d in self._trade_detectors if isinstance(d, StaleFeedDetector)]
        self._latest_trade: dict[str, float] = {}
        self._latest_quote: dict[str, float] = {}
        self._late_trades = 0
        self._late_quotes = 0

    def on_trades(self, trades: Iterable[Trade]) -> list[AlertSignal]:
        """Feed trades (each symbol's in (ts, seq) order); return the signals they raise."""
        latest = self._latest_trade
        rows = []
        append = rows.append
        late_trades = 0
        for trade in trades:
            t = trade.ts.timestamp()  # msgspec guarantees an aware UTC datetime
            symbol = trade.symbol
            late = t < latest.get(symbol, -math.inf)
            if late:
                late_trades += 1
            else:
                latest[symbol] = t
            append((trade, t, float(trade.price), float(trade.size), late))
        self._late_trades += late_trades
        out: list[AlertSignal] = []
        for detector in self._trade_detectors:
            detector.on_trades(rows, out)
        return out

    def on_quotes(self, quotes: Iterable[Quote]) -> list[AlertSignal]:
        """Feed quotes (each symbol's in ts order); return the signals they raise."""
        latest = self._latest_quote
        rows = []
        for quote in quotes:
            t = quote.ts.timestamp()
            if t < latest.get(quote.symbol, -math.inf):
                self._late_quotes += 1
                continue
            latest[quote.symbol] = t
            rows.append((quote, t, float(quote.bid), float(quote.ask)))
        out: list[AlertSignal] = []
        for detector in self._quote_detectors:
            detector.on_quotes(rows, out)
        return out

    def advance(self, ts: datetime) -> list[AlertSignal]:
        """Tell the engine the market's event time reached ``ts`` (the consumer passes the trades
        topic's watermark: a time every partition has reached, streaming/event_time.py):
        completes quiet symbols' volume buckets and finds stale feeds.
        Raises ``ValueError`` for a naive datetime."""
        w = _event_time(ts)
        out: list[AlertSignal] = []
        for detector in self._trade_detectors:
            if isinstance(detector, VolumeAnomalyDetector | StaleFeedDetector):
                detector.advance(w, out)
        return out

    def market_time_known(self, ts: datetime) -> None:
        """The market's event time is known to have reached ``ts`` (where the consumer's run, or the
        engine, before this one had got to): how far each symbol's trades run behind the market is
        measured from there rather than from nothing. Completes nothing."""
        w = _event_time(ts)
        for detector in self._volume:
            detector.market_time_known(w)

    def warm(
        self, *, candles: Iterable[Candle] = (), trades: Iterable[Trade] = (), quotes: Iterable[Quote] = (),
        settled_at: Mapping[str, datetime] | None = None, episodes: Iterable[EpisodeSeed] = (),
        present: datetime | None = None, watched: Collection[str] = (),
        announce: Callable[[str, str], bool] | None = None,
    ) -> list[AlertSignal]:
        """Rebuild the state of the symbols in the history given, emitting nothing but what
        ``announce`` asks for; the other symbols' state is untouched, so a running engine can
        warm a symbol it reads for the first time.

        ``candles``: completed 1-minute candles, oldest first per symbol, of the minutes before
        the symbol's first trade passed here: each becomes a volume baseline bucket and a
        last-trade time for stale_feed. ``trades`` and ``quotes``: each symbol's in (ts, seq)
        order, fed in chunks of ``WARM_CHUNK`` like consumer batches. Time does not advance
        here: that would complete other symbols' minutes and silences unseen. A warmed symbol's
        open minute is completed by its next trade or ``advance``, as it would have been live.
        ``settled_at``: symbol -> the market time the run (or engine) before this one had reached
        with it; a silence already longer than stale_feed's gap there is taken as noticed, not
        alerted (that run alerted it, or the symbol's trades were history, a replayed file's).
        ``episodes``: the latest episode of each (rule, symbol) as the stored alerts tell it,
        for symbols warmed here on that rule's side (trades or quotes), continued once the
        history is fed (``Episode.resume``): a condition that comes back within the cooldown is
        the same episode, as it was for the run that alerted it (the history alone covers only
        minutes). A seed of a rule not in this engine, or now of another type, is skipped.
        ``present``: the market's event time known before this history (the last watermark, or
        on a cold start once known, the watermark or where reading resumed; None: not known, and
        the whole history counts as present); ``watched``: the symbols stale_feed watched in the
        engine before this one (``watched_symbols()``), for this warm-up only. Another symbol
        whose history is older than stale_feed's gap before ``present`` (a file replayed beside
        the live feed) is not watched, as it was not when its trades were read.
        ``announce(rule, symbol)``: whether no engine before this one can have alerted the
        rule's episodes of the symbol (its condition is new or changed there, and the engine
        before had no episode of it open). The history's signals of each such episode still open
        at the end of its symbol's history, and not continued from a stored alert, are returned
        in order: left to the warm-up, the condition could hold on without an alert ever.
        Raises ``ValueError`` for a candle, or a seed, of another interval or a naive time.
        """
        for stale in self._stale:
            stale.warming(None if present is None else _event_time(present), watched)
        try:
            raised = self._warm(candles, trades, quotes)
        finally:
            for stale in self._stale:
                stale.warmed()
        for symbol, ts in (settled_at or {}).items():
            w = _event_time(ts)
            for stale in self._stale:
                stale.settle(symbol, w)
        continued = set()  # (rule, symbol) whose episode a stored alert tells
        for seed in episodes:
            start, last = _event_time(seed.start), _event_time(seed.last)
            detector = self._episodes_of.get(seed.rule)
            if detector is not None and detector.config.type == seed.type:
                if detector.episode_for(seed.symbol).resume(seed, start=start, last=last):
                    continued.add((seed.rule, seed.symbol))
        if announce is None:
            return []
        return [signal for signal in raised
                if (signal.rule, signal.symbol) not in continued and announce(signal.rule, signal.symbol)
                and (episode := self._open_episode(signal.rule, signal.symbol)) is not None
                and episode.start == signal.episode_start]

    def open_episodes(self) -> frozenset[tuple[str, str]]:
        """(rule, symbol) of every episode open: its condition held within the cooldown before the
        symbol's latest event (stale_feed's silences are not episodes here)."""
        return frozenset((rule, symbol) for rule, detector in self._episodes_of.items()
                         for symbol in self._latest_of(detector) if self._open_episode(rule, symbol) is not None)

    def _latest_of(self, detector) -> dict[str, float]:
        return self._latest_trade if detector.config.type in TRADE_EPISODE_TYPES else self._latest_quote

    def _open_episode(self, rule: str, symbol: str) -> Episode | None:
        detector = self._episodes_of.get(rule)
        if detector is None:
            return None
        episode = detector.episode_for(symbol)
        if episode.start is None:
            return None
        latest = self._latest_of(detector).get(symbol, -math.inf)
        return episode if latest - episode.last_true < detector.config.cooldown_seconds else None

    def _warm(self, candles: Iterable[Candle], trades: Iterable[Trade], quotes: Iterable[Quote]) -> list[AlertSignal]:
        for candle in sorted(candles, key=lambda c: (c.symbol, c.start)):
            if candle.interval != "1m":
                raise ValueError(f"warm takes 1-minute candles for the volume baseline, got {candle.interval}")
            for volume in self._volume:
                volume.seed(candle.symbol, candle.start.timestamp(), float(candle.volume))
            for stale in self._stale:
                stale.seed(candle.symbol, candle.last_trade_ts.timestamp(), candle.last_trade_ts)
        raised: list[AlertSignal] = []
        trades = iter(trades)
        while chunk := list(islice(trades, WARM_CHUNK)):
            raised += self.on_trades(chunk)
        quotes = iter(quotes)
        while chunk := list(islice(quotes, WARM_CHUNK)):
            raised += self.on_quotes(chunk)
        return raised

    def watched_symbols(self) -> frozenset[str] | None:
        """The symbols stale_feed watches: those whose trades came as the market's present (None
        without a stale_feed rule enabled: then nothing tells)."""
        return frozenset().union(*(stale.watched() for stale in self._stale)) if self._stale else None

    def counters(self) -> EngineCounters:
        return EngineCounters(
            late_trades=self._late_trades,
            late_quotes=self._late_quotes,
            late_volume_dropped=sum(d.late_dropped for d in self._volume),
        )

    def state_size(self) -> int:
        """How many entries the state holds (symbols, deque entries, baseline buckets): bounded by
        a constant per symbol and rule, never by time or trade rate."""
        detectors = [*self._trade_detectors, *self._quote_detectors]
        return len(self._latest_trade) + len(self._latest_quote) + sum(d.state_size() for d in detectors)
