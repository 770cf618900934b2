"""price_spike: a trade more than ``threshold_pct`` away from the extreme prices of the last minute.

Definition (docs/alerts.md has worked examples). For a trade at event time ``t`` (POSIX
seconds) with price ``p``, the window is every earlier non-late trade of the symbol whose whole
UTC second ``floor(ts)`` is in ``[floor(t) - window_seconds, floor(t)]``, and the trade itself:
between 60 and 61 seconds of event time with the default window. With ``lo`` and ``hi`` the
lowest and highest price in the window:

    rise = p / lo - 1        fall = 1 - p / hi        move = max(rise, fall)

and the rule holds when ``move > threshold`` (strictly; the decision is exact, in Decimal).
The reference of the alert is ``lo`` for a rise and ``hi`` for a fall.

State per symbol is two monotonic deques of per-second extremes (one for the window maximum,
one for the minimum). Trades of the same second are folded into one entry, so each deque holds
at most ``window_seconds + 1`` entries whatever the trade rate: memory grows with the number of
symbols, never with time or with a burst. Each trade costs amortised O(1).

Late trades (event time before the symbol's latest) are ignored here, as a consolidated tape
ignores out-of-sequence prints for last price and high/low: their time has passed and their
price is often off-market.
"""

from __future__ import annotations

import decimal
from collections import deque
from decimal import Decimal

from market.domain.candles import decimal_text  # the API writes decimals so too

from .rules import PriceSpikeParams, RuleConfig
from .signals import MAX_LEVEL, AlertSignal, Episode, fmt_seconds, format_ts

__all__ = ["PriceSpikeDetector"]

# The per-trade screen runs in float; moves within this of a threshold are decided exactly.
_SLACK = 1e-9
# Products of a 20-digit price and a threshold factor stay exact in 100 digits; Inexact traps
# would say otherwise instead of silently rounding a boundary decision.
_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation])
_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)


class _Limits:
    __slots__ = ("window", "maybe", "surely", "levels", "threshold_pct")

    def __init__(self, params: PriceSpikeParams) -> None:
        self.window = params.window_seconds
        fraction = params.threshold_pct / 100
        self.maybe = fraction - _SLACK
        self.surely = fraction + _SLACK
        self.threshold_pct = params.threshold_pct
        # (fraction, severity), highest first; the first one beyond which the move lies wins.
        self.levels = tuple(
            (Decimal(repr(pct)).scaleb(-2), severity)
            for pct, severity in (
                (params.critical_pct, "critical"),
                (params.high_pct, "high"),
                (params.threshold_pct, "medium"),
            )
        )


class _SymbolState:
    __slots__ = ("limits", "maybe", "surely", "window", "highs", "lows", "episode")

    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.maybe = limits.maybe
        self.surely = limits.surely
        self.window = limits.window
        # Entries are (second, float price, trade); seconds strictly increase from left to
        # right, prices strictly decrease in ``highs`` and increase in ``lows``.
        self.highs: deque[tuple[int, float, object]] = deque()
        self.lows: deque[tuple[int, float, object]] = deque()
        self.episode = Episode()


def _beyond(price: Decimal, ref: Decimal, fraction: Decimal, up: bool) -> bool:
    if up:
        return price > _EXACT.multiply(ref, _EXACT.add(1, fraction))
    return price < _EXACT.multiply(ref, _EXACT.subtract(1, fraction))


class PriceSpikeDetector:
    """Feed it trade rows ``(trade, ts, price, size, late)`` in event-time order per symbol."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._cooldown = config.cooldown_seconds
        self._limits = {None: _Limits(config.params)}  # type: ignore[arg-type]
        for symbol, params in config.symbol_overrides.items():
            self._limits[symbol] = _Limits(params)  # type: ignore[arg-type]
        self._states: dict[str, _SymbolState] = {}

    def episode_for(self, symbol: str) -> Episode:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = _SymbolState(self._limits.get(symbol) or self._limits[None])
        return st.episode

    def on_trades(self, rows: list, out: list[AlertSignal]) -> None:
        states = self._states
        for trade, t, p, _size, late in rows:
            if late:
                continue
            st = states.get(trade.symbol)
            if st is None:
                limits = self._limits.get(trade.symbol) or self._limits[None]
                st = states[trade.symbol] = _SymbolState(limits)
            sec = int(t)
            highs = st.highs
            while highs and highs[-1][1] <= p:
                highs.pop()
            if not highs or highs[-1][0] != sec:
                highs.append((sec, p, trade))
            lows = st.lows
            while lows and lows[-1][1] >= p:
                lows.pop()
            if not lows or lows[-1][0] != sec:
                lows.append((sec, p, trade))
            oldest = sec - st.window
            while highs[0][0] < oldest:
                highs.popleft()
            while lows[0][0] < oldest:
                lows.popleft()
            rise = p / lows[0][1] - 1.0
            fall = 1.0 - p / highs[0][1]
            if rise > st.maybe or fall > st.maybe:
                self._check(st, trade, t, rise, fall, out)

    def _check(self, st: _SymbolState, trade, t: float, rise: float, fall: float, out: list[AlertSignal]) -> None:
        episode = st.episode
        if episode.level == MAX_LEVEL and (rise > st.surely or fall > st.surely) and not episode.is_new(
            t, self._cooldown
        ):
            # Hot path of a long critical episode: only the episode's end moves.
            episode.last_true = t
            return
        price: Decimal = trade.price
        low, high = st.lows[0][2], st.highs[0][2]
        # rise >= fall  <=>  p/lo - 1 >= 1 - p/hi  <=>  p * (hi + lo) >= 2 * lo * hi   (exact)
        up = _EXACT.multiply(price, _EXACT.add(high.price, low.price)) >= _EXACT.multiply(
            2, _EXACT.multiply(low.price, high.price)
        )
        ref_trade = low if up else high
        ref: Decimal = ref_trade.price
        if not _beyond(price, ref, st.limits.levels[-1][0], up):
            return  # within the float screen's slack, and exactly not beyond the threshold
        # The threshold itself is the last level, so a level always matches here.
        severity = next(sev for fraction, sev in st.limits.levels if _beyond(price, ref, fraction, up))
        stage = episode.trigger(t, trade.ts, severity, self._cooldown)
        if stage is None:
            return
        move = price / ref - 1 if up else 1 - price / ref
        seconds = t - ref_trade.ts.timestamp()
        symbol = trade.symbol
        out.append(
            episode.signal(
                stage=stage,
                rule=self.config.rule,
                type="price_spike",
                severity=severity,  # type: ignore[arg-type]
                symbol=symbol,
                message=(
                    f"{symbol} {'rose' if up else 'fell'} {(move * _HUNDRED).quantize(_CENT)}% in "
                    f"{fmt_seconds(seconds)} ({decimal_text(ref)} → {decimal_text(price)})"
                ),
                ts=trade.ts,
                observed={
                    "direction": "up" if up else "down",
                    "move_pct": round(float(move * _HUNDRED), 6),
                    "price": decimal_text(price),
                    "reference_price": decimal_text(ref),
                    "reference_ts": format_ts(ref_trade.ts),
                    "seconds": round(seconds, 6),
                    "threshold_pct": st.limits.threshold_pct,
                    "window_seconds": st.window,
                    "trade_id": trade.id,
                },
            )
        )

    def state_size(self) -> int:
        """Entries held: one per symbol plus every deque entry (at most 2 * (window + 1) each)."""
        return sum(1 + len(st.highs) + len(st.lows) for st in self._states.values())
