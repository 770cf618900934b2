"""The quote rules: spread_blowout and crossed_quote.

spread_blowout (docs/alerts.md has examples). A quote with ``bid < ask`` has a spread of
``10000 * (ask - bid) / mid`` basis points, ``mid = (bid + ask) / 2`` (float). Each UTC second
in which the symbol had such a quote contributes one *sample*: the spread of its last such
quote, the one standing at the end of that second (time sampling, so a burst of quotes does not
outvote a quiet minute). For a quote in second ``s`` the baseline is the median of the samples
of seconds ``[s - window_seconds, s - 1]``, and the rule holds when ``spread > multiple *
median`` once at least ``min_samples`` samples exist (warm-up). The severity is medium, high
above ``high_multiple`` and critical above ``critical_multiple``. Samples taken during a blowout
join the baseline like any other; the median ignores them until they are half the window.
State per symbol: at most ``window_seconds`` samples.

crossed_quote. A quote with ``bid > ask`` is crossed (``crossed_severity``) and with ``bid ==
ask`` locked (``locked_severity``, only if ``include_locked``). The comparison is exact, in
Decimal. A crossed or locked quote is not a spread sample.

Both rules ignore late quotes (event time before the symbol's latest quote): the book they
describe has already been replaced.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

from market.domain.candles import decimal_text  # the API writes decimals so too

from .rules import CrossedQuoteParams, RuleConfig, SpreadBlowoutParams
from .signals import AlertSignal, Episode

__all__ = ["CrossedQuoteDetector", "SpreadBlowoutDetector"]


class _SpreadState:
    __slots__ = ("params", "second", "last_bps", "samples", "ordered", "median", "episode")

    def __init__(self, params: SpreadBlowoutParams) -> None:
        self.params = params
        self.second = -1
        self.last_bps: float | None = None  # spread of the latest uncrossed quote of ``second``
        # Seconds strictly increase and older ones are pruned before each append, so the
        # window never holds more than ``window_seconds`` samples: maxlen is only the bound.
        self.samples: deque[tuple[int, float]] = deque(maxlen=params.window_seconds)
        # The same spreads kept sorted, so that the median costs a bisect per second instead of
        # sorting up to 300 samples (that sort was most of the engine's time for quotes).
        self.ordered: list[float] = []
        self.median: float | None = None  # baseline for quotes of ``second``; None while warming up
        self.episode = Episode()


class SpreadBlowoutDetector:
    """Feed it quote rows ``(quote, ts, bid, ask)``, non-late, in event-time order per symbol."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._states: dict[str, _SpreadState] = {}

    def episode_for(self, symbol: str) -> Episode:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = _SpreadState(self.config.params_for(symbol))  # type: ignore[arg-type]
        return st.episode

    def on_quotes(self, rows: list, out: list[AlertSignal]) -> None:
        states = self._states
        for quote, t, bid, ask in rows:
            st = states.get(quote.symbol)
            if st is None:
                st = states[quote.symbol] = _SpreadState(self.config.params_for(quote.symbol))  # type: ignore[arg-type]
            second = int(t)
            if second != st.second:
                self._next_second(st, second)
            if quote.bid < quote.ask:
                bps = 20_000.0 * (ask - bid) / (ask + bid)
                st.last_bps = bps
                if st.median is not None and bps > st.params.multiple * st.median:
                    self._alert(quote, t, st, bps, out)

    @staticmethod
    def _next_second(st: _SpreadState, second: int) -> None:
        samples, ordered = st.samples, st.ordered
        oldest = second - st.params.window_seconds
        # Prune first, so that the append below never makes the deque drop a sample on its own
        # (which ``ordered`` would not know about).
        while samples and samples[0][0] < oldest:
            del ordered[bisect_left(ordered, samples.popleft()[1])]
        if st.last_bps is not None and st.second >= oldest:
            samples.append((st.second, st.last_bps))
            insort(ordered, st.last_bps)
        st.second, st.last_bps = second, None
        if len(samples) >= st.params.min_samples:
            middle = len(ordered) // 2
            st.median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        else:
            st.median = None

    def _alert(self, quote, t: float, st: _SpreadState, bps: float, out: list[AlertSignal]) -> None:
        params = st.params
        assert st.median is not None
        ratio = bps / st.median
        severity = (
            "critical" if ratio > params.critical_multiple else "high" if ratio > params.high_multiple else "medium"
        )
        stage = st.episode.trigger(t, quote.ts, severity, self.config.cooldown_seconds)
        if stage is None:
            return
        out.append(
            st.episode.signal(
                stage=stage,
                rule=self.config.rule,
                type="spread_blowout",
                severity=severity,  # type: ignore[arg-type]
                symbol=quote.symbol,
                message=(
                    f"{quote.symbol} spread {bps:.1f} bps is {ratio:.1f}× its median of {st.median:.1f} bps over "
                    f"the last {params.window_seconds} s (bid {quote.bid}, ask {quote.ask})"
                ),
                ts=quote.ts,
                observed={
                    "spread_bps": round(bps, 6),
                    "median_bps": round(st.median, 6),
                    "ratio": round(ratio, 6),
                    "bid": decimal_text(quote.bid),
                    "ask": decimal_text(quote.ask),
                    "multiple": params.multiple,
                    "samples": len(st.samples),
                    "quote_id": quote.id,
                },
            )
        )

    def state_size(self) -> int:
        return sum(1 + len(st.samples) for st in self._states.values())


class CrossedQuoteDetector:
    """Feed it quote rows ``(quote, ts, bid, ask)``, non-late, in event-time order per symbol."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._episodes: dict[str, Episode] = {}

    def episode_for(self, symbol: str) -> Episode:
        return self._episodes.setdefault(symbol, Episode())

    def on_quotes(self, rows: list, out: list[AlertSignal]) -> None:
        for quote, t, _bid, _ask in rows:
            if quote.bid < quote.ask:
                continue
            params: CrossedQuoteParams = self.config.params_for(quote.symbol)  # type: ignore[assignment]
            crossed = quote.bid > quote.ask
            if not crossed and not params.include_locked:
                continue
            severity = params.crossed_severity if crossed else params.locked_severity
            episode = self._episodes.get(quote.symbol)
            if episode is None:
                episode = self._episodes[quote.symbol] = Episode()
            stage = episode.trigger(t, quote.ts, severity, self.config.cooldown_seconds)
            if stage is None:
                continue
            state = "crossed" if crossed else "locked"
            out.append(
                episode.signal(
                    stage=stage,
                    rule=self.config.rule,
                    type="crossed_quote",
                    severity=severity,  # type: ignore[arg-type]
                    symbol=quote.symbol,
                    message=(f"{quote.symbol} quote {state}: bid {decimal_text(quote.bid)} "
                             f"{'>' if crossed else '='} ask {decimal_text(quote.ask)}"),
                    ts=quote.ts,
                    observed={
                        "state": state,
                        "bid": decimal_text(quote.bid),
                        "ask": decimal_text(quote.ask),
                        "bid_size": decimal_text(quote.bid_size),
                        "ask_size": decimal_text(quote.ask_size),
                        "quote_id": quote.id,
                    },
                )
            )

    def state_size(self) -> int:
        return len(self._episodes)

