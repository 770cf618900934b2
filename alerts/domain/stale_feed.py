"""stale_feed: a symbol that stopped trading while the rest of the market kept trading.

Definition (docs/alerts.md has examples). The detector keeps, per symbol, the event time of its
latest trade ``last``; and for the market, the latest trade time of any symbol ``market_last``
and ``resumed``, the start of the current trading session: the first trade of a batch that
begins more than ``gap_seconds`` (of the rule's base params) after ``market_last``, i.e. after a
market-wide silence. A symbol's silence is measured from ``start = max(last, resumed)`` so that
a market close or halt, or this consumer being down, does not count against every symbol. A
symbol is watched from its first trade no more than ``gap_seconds`` behind the watermark of the
last ``advance`` (before its batch): trades of a symbol that only ever came as history (a file
replayed beside the live feed) never make it stale. The watermark, not the market's latest trade:
it waits for every partition, so a symbol on a partition being caught up is watched. (In the
first batch after a cold start there is no watermark yet, and history there is watched.)

``advance(w)`` (``w`` = the market's event time, the consumer passes the trades topic's
watermark) raises an alert for each symbol with ``w - start > gap_seconds``, unless the market itself
is silent (``w - market_last > gap_seconds``). One alert per silence: the next needs the symbol
to trade again (or the market to resume after a market-wide silence), and the rule's cooldown
still applies between silences. The alert's event time is ``start + gap_seconds``, the instant
the symbol became stale, whichever ``advance`` call noticed it.

Staleness is decided in ``advance`` only: a silence that begins and ends between two
``advance`` calls is not reported (live batches span well under a second of event time, replay
batches may span more). State: O(1) per symbol.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime, timedelta

from .rules import RuleConfig, StaleFeedParams
from .signals import AlertSignal, Episode, format_ts

__all__ = ["StaleFeedDetector"]


class _SymbolState:
    __slots__ = ("params", "last", "last_ts", "alerted_for", "episode")

    def __init__(self, params: StaleFeedParams) -> None:
        self.params = params
        self.last = -math.inf
        self.last_ts: datetime | None = None
        self.alerted_for: float | None = None  # the ``start`` of the silence already alerted on
        self.episode = Episode()


class StaleFeedDetector:
    """Feed it trade rows ``(trade, ts, price, size, late)`` per batch, then ``advance(w)``."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._market_gap = config.params.gap_seconds  # type: ignore[union-attr]
        self._states: dict[str, _SymbolState] = {}
        self.market_last = -math.inf
        self.resumed = -math.inf
        self.resumed_ts: datetime | None = None
        self._watermark = -math.inf  # the latest advance(w)
        self._watched_before: frozenset[str] = frozenset()  # see warming
        # A lower bound of every symbol's due time (start + gap), so that most advance() calls
        # return without visiting every symbol.
        self._next_check = math.inf

    def _state(self, symbol: str) -> _SymbolState:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = _SymbolState(self.config.params_for(symbol))  # type: ignore[arg-type]
        return st

    def _seen(self, st: _SymbolState, t: float, ts: datetime) -> None:
        if st.alerted_for is not None or st.last_ts is None:
            # A stale symbol trades again (or a new one appears): its silence ends here, and
            # its next due time may be earlier than the bound.
            if st.alerted_for is not None and t > st.episode.last_true:
                st.episode.last_true = t
            st.alerted_for = None
            self._next_check = min(self._next_check, t + st.params.gap_seconds)
        st.last, st.last_ts = t, ts

    def on_trades(self, rows: list, out: list[AlertSignal]) -> None:
        first, first_ts, latest = math.inf, None, -math.inf
        states = self._states
        for trade, t, _price, _size, late in rows:
            if late:
                continue
            st = states.get(trade.symbol)
            if st is None:
                if self._is_history(trade.symbol, t):
                    continue
                st = self._state(trade.symbol)
            if t > st.last:
                self._seen(st, t, trade.ts)
            if t < first:
                first, first_ts = t, trade.ts
            if t > latest:
                latest = t
        if first_ts is None:
            return
        if first - self.market_last > self._market_gap:
            self.resumed, self.resumed_ts = first, first_ts
            # Every silence now counts from here, including ones already alerted on: the
            # cached bound no longer covers them, so the next advance visits every symbol.
            self._next_check = -math.inf
        if latest > self.market_last:
            self.market_last = latest

    def seed(self, symbol: str, t: float, ts: datetime) -> None:
        """Record a symbol's latest trade time without it counting as market activity (warm-up
        from candles' last trade times). A symbol not watched yet whose trade is history next to
        the watermark (``warming``) is left unwatched, as ``on_trades`` leaves it."""
        st = self._states.get(symbol)
        if st is None:
            if self._is_history(symbol, t):
                return
            st = self._state(symbol)
        if t > st.last:
            self._seen(st, t, ts)

    def _is_history(self, symbol: str, t: float) -> bool:
        """Whether a trade at ``t`` of a symbol not watched yet is history next to the market's
        present, so that it does not make the symbol watched. A symbol is watched from its first
        trade in the present: one whose trades are history next to the rest (a replayed file beside
        the live feed) never "kept trading"."""
        return t < self._watermark - self._market_gap and symbol not in self._watched_before

    def warming(self, w: float | None, watched: Collection[str]) -> None:
        """Before a warm-up's history: the market's event time had reached ``w`` (None: not
        known, the history is taken as present), and the engine before this one watched
        ``watched``. Nothing is alerted and time does not advance: this decides only which
        symbols the history makes watched (those watched before, and those whose trades there
        are the market's present). Until ``warmed()``."""
        if w is not None:
            self._watermark = max(self._watermark, w)
        self._watched_before = frozenset(watched)

    def warmed(self) -> None:
        self._watched_before = frozenset()

    def watched(self) -> frozenset[str]:
        return frozenset(self._states)

    def settle(self, symbol: str, w: float) -> None:
        """Warm-up: the symbol's silence, if already longer than its gap at ``w``, counts as noticed
        (it was alerted before the restart, or its trades were history): only a trade ends it."""
        st = self._states.get(symbol)
        # Its own last trade, not the resumption: a cold engine's "market resumed" is the first
        # trade it was warmed with, which says nothing of how long the symbol had been silent.
        if st is not None and w - st.last > st.params.gap_seconds:
            st.alerted_for = st.last if st.last >= self.resumed else self.resumed

    def advance(self, w: float, out: list[AlertSignal]) -> None:
        self._watermark = max(self._watermark, w)
        if w < self._next_check or w - self.market_last > self._market_gap:
            return
        next_check = math.inf
        for symbol, st in self._states.items():
            start = st.last if st.last >= self.resumed else self.resumed
            if st.alerted_for == start:
                continue
            gap = st.params.gap_seconds
            if w - start > gap:
                st.alerted_for = start
                self._alert(symbol, st, start, gap, out)
            elif start + gap < next_check:
                next_check = start + gap
        self._next_check = next_check

    def _alert(self, symbol: str, st: _SymbolState, start: float, gap: int, out: list[AlertSignal]) -> None:
        from_resume = start > st.last
        start_ts = self.resumed_ts if from_resume else st.last_ts
        assert start_ts is not None
        ts = start_ts + timedelta(seconds=gap)
        stage = st.episode.trigger(start + gap, ts, st.params.severity, self.config.cooldown_seconds)
        if stage is None:
            return
        since = f"the market resumed at {start_ts:%H:%M:%S} UTC" if from_resume else f"{start_ts:%H:%M:%S} UTC"
        observed: dict[str, str | int | float] = {"silent_since": format_ts(start_ts), "gap_seconds": gap}
        if st.last_ts is not None:
            observed["last_trade_ts"] = format_ts(st.last_ts)
        out.append(
            st.episode.signal(
                stage=stage,
                rule=self.config.rule,
                type="stale_feed",
                severity=st.params.severity,  # type: ignore[arg-type]
                symbol=symbol,
                message=f"{symbol} has not traded for more than {gap} s since {since} while the market kept trading",
                ts=ts,
                observed=observed,
            )
        )

    def state_size(self) -> int:
        return len(self._states)
