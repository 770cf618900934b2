"""volume_anomaly: a completed 1-minute bucket whose volume is far above the symbol's baseline.

Definition (docs/alerts.md has worked examples):

* Buckets are UTC minutes, ``[60 n, 60 (n + 1))`` in POSIX seconds. A symbol's volume of a
  bucket is the sum of the sizes of its trades in it (float: it is a statistic, not money).
* A bucket is *completed* when a trade of the symbol arrives at or after the bucket's end, or
  when ``advance(w)`` sees ``w >= end + grace_seconds + behind`` (a quiet symbol; the grace
  allows for skew between Kafka partitions). ``behind`` is how far the symbol's latest trade was
  behind the market's event time (the last ``w``) when it arrived: 0 for a live symbol, the
  distance in time of a file replayed beside the live feed, whose minutes are thus completed on
  its own clock rather than as soon as it arrives. Completion is final: a later trade for a completed bucket is
  dropped here and counted in ``late_dropped``. A late trade whose bucket is still open counts.
* Minutes without trades are skipped, not counted as zero: the baseline is the volume of the
  symbol's last ``baseline_buckets`` *traded* minutes. Zero-filling would fill the baseline with
  zeros across every market close, halt and quiet spell of an illiquid symbol, and every ordinary
  minute afterwards would be "more than 3 sigma" above a baseline of zeros; a symbol that stops
  trading is the stale_feed rule's business.
* A completed bucket of volume ``v`` is compared with the baseline *before* it joins it. With
  ``centre, spread`` = mean and population standard deviation (``method="mean"``) or median
  and 1.4826 * MAD (``method="mad"``) of the baseline, and ``scale = max(spread, epsilon *
  centre)`` (the flat-baseline guard), the rule holds when ``v > centre + k_sigma * scale``.
  ``z = (v - centre) / scale`` sets the severity: medium, high above ``high_sigma``, critical
  above ``critical_sigma``. Until the baseline is full (warm-up) nothing is compared.
* With ``min_ratio`` > 0 (the default is 5) the volume must also be more than
  ``min_ratio * centre``: a guard on relative volume, because a sigma test alone fires on about
  one ordinary minute in a hundred (a minute's volume is a sum of heavy-tailed trade sizes,
  and 30 minutes estimate its sigma loosely). It only removes alerts; ``z`` and the severity
  are unchanged. It is waived when ``z > decisive_sigma`` (20; 0 never): against a steady
  baseline, 3 or 4 times the usual volume is that far out, beyond the heavy tails' reach.
* The alert's event time is the end of the bucket, the instant its measurement completed,
  which is the same whichever event completed it.

Every completed bucket, anomalous or not, joins the baseline. State per symbol: the open bucket
and a deque of at most ``baseline_buckets`` floats.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from .rules import RuleConfig, VolumeAnomalyParams
from .signals import AlertSignal, Episode, fmt_qty, format_ts

__all__ = ["BUCKET_SECONDS", "VolumeAnomalyDetector", "baseline_stats"]

BUCKET_SECONDS = 60
MAD_SCALE = 1.4826  # makes the MAD a consistent estimator of sigma for normal data


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _deadline(st: _SymbolState) -> float:
    """The market event time by which the symbol's open bucket is completed if no trade does it."""
    return (st.bucket + 1) * BUCKET_SECONDS + st.params.grace_seconds + st.behind


def baseline_stats(volumes: Sequence[float], method: str) -> tuple[float, float]:
    """``(centre, spread)`` of a baseline: mean and population sigma, or median and 1.4826 * MAD."""
    if method == "mean":
        mean = math.fsum(volumes) / len(volumes)
        return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in volumes) / len(volumes))
    median = _median(sorted(volumes))
    return median, MAD_SCALE * _median(sorted(abs(v - median) for v in volumes))


class _SymbolState:
    __slots__ = ("params", "bucket", "volume", "behind", "closed_through", "baseline", "episode")

    def __init__(self, params: VolumeAnomalyParams) -> None:
        self.params = params
        self.bucket = -1  # open bucket number (POSIX minute), -1 when none is open
        self.volume = 0.0
        self.behind = 0.0  # seconds the latest trade was behind the market's event time
        self.closed_through = -1  # every bucket up to this one is completed
        self.baseline: deque[float] = deque(maxlen=params.baseline_buckets)
        self.episode = Episode()


class VolumeAnomalyDetector:
    """Feed it trade rows ``(trade, ts, price, size, late)`` in event-time order per symbol, and
    ``advance(w)`` with the market's event time to complete quiet symbols' buckets."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._states: dict[str, _SymbolState] = {}
        # A lower bound of every open bucket's advance deadline, so that most advance() calls
        # return without visiting every symbol.
        self._next_close = math.inf
        self._market_time = -math.inf  # the latest advance()
        self.late_dropped = 0

    def _state(self, symbol: str) -> _SymbolState:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = _SymbolState(self.config.params_for(symbol))  # type: ignore[arg-type]
        return st

    def episode_for(self, symbol: str) -> Episode:
        return self._state(symbol).episode

    def on_trades(self, rows: list, out: list[AlertSignal]) -> None:
        states = self._states
        market_time = self._market_time
        for trade, t, _price, size, late in rows:
            st = states.get(trade.symbol)
            if st is None:
                st = self._state(trade.symbol)
            bucket = int(t) // BUCKET_SECONDS
            opened = bucket != st.bucket
            if not opened:
                st.volume += size
            elif bucket <= st.closed_through:
                self.late_dropped += 1
                continue
            else:
                if st.bucket >= 0:
                    self._close(trade.symbol, st, out)
                st.bucket, st.volume, st.closed_through = bucket, size, bucket - 1
            behind = st.behind if late else max(0.0, market_time - t)
            # A new bucket, or a replay faster than the market catching up: a deadline sooner than the bound.
            sooner = opened or behind < st.behind
            st.behind = behind
            if sooner:
                deadline = _deadline(st)
                if deadline < self._next_close:
                    self._next_close = deadline

    def market_time_known(self, w: float) -> None:
        self._market_time = max(self._market_time, w)

    def advance(self, w: float, out: list[AlertSignal]) -> None:
        self.market_time_known(w)
        if w < self._next_close:
            return
        next_close = math.inf
        for symbol, st in self._states.items():
            if st.bucket < 0:
                continue
            deadline = _deadline(st)
            if deadline <= w:
                self._close(symbol, st, out)
            elif deadline < next_close:
                next_close = deadline
        self._next_close = next_close

    def seed(self, symbol: str, bucket_start: float, volume: float) -> None:
        """Add a completed bucket to the baseline without evaluating it (warm-up from 1-minute
        candles). Buckets must come in time order before the symbol's trades; one that is not
        after the symbol's completed buckets, or not before its open one, is ignored."""
        st = self._state(symbol)
        bucket = int(bucket_start) // BUCKET_SECONDS
        if bucket <= st.closed_through or (st.bucket >= 0 and bucket >= st.bucket):
            return
        st.baseline.append(volume)
        st.closed_through = bucket

    def _close(self, symbol: str, st: _SymbolState, out: list[AlertSignal]) -> None:
        bucket, volume, baseline, params = st.bucket, st.volume, st.baseline, st.params
        st.bucket, st.closed_through = -1, bucket
        if len(baseline) == params.baseline_buckets:
            centre, spread = baseline_stats(baseline, params.method)
            scale = max(spread, params.epsilon * centre)
            if volume > centre + params.k_sigma * scale and (
                    volume > params.min_ratio * centre
                    or (params.decisive_sigma and volume > centre + params.decisive_sigma * scale)):
                self._alert(symbol, st, bucket, volume, centre, spread, scale, out)
        baseline.append(volume)

    def _alert(
        self, symbol: str, st: _SymbolState, bucket: int, volume: float, centre: float, spread: float, scale: float,
        out: list[AlertSignal],
    ) -> None:
        params = st.params
        z = (volume - centre) / scale
        severity = "critical" if z > params.critical_sigma else "high" if z > params.high_sigma else "medium"
        end = (bucket + 1) * BUCKET_SECONDS
        ts = datetime.fromtimestamp(end, UTC)
        stage = st.episode.trigger(end, ts, severity, self.config.cooldown_seconds)
        if stage is None:
            return
        start = datetime.fromtimestamp(end - BUCKET_SECONDS, UTC)
        centre_name, spread_name = ("mean", "σ") if params.method == "mean" else ("median", "scaled MAD")
        out.append(
            st.episode.signal(
                stage=stage,
                rule=self.config.rule,
                type="volume_anomaly",
                severity=severity,  # type: ignore[arg-type]
                symbol=symbol,
                message=(
                    f"{symbol} traded {fmt_qty(volume)} in the minute from {start:%H:%M} UTC, {z:.1f}σ above the "
                    f"{centre_name} of its last {params.baseline_buckets} traded minutes, {fmt_qty(centre)} "
                    f"({spread_name} {fmt_qty(spread)})"
                ),
                ts=ts,
                observed={
                    "bucket_start": format_ts(start),
                    "volume": volume,
                    "centre": centre,
                    "spread": spread,
                    "scale": scale,
                    "z": round(z, 6),
                    "method": params.method,
                    "baseline_buckets": params.baseline_buckets,
                    "k_sigma": params.k_sigma,
                },
            )
        )

    def state_size(self) -> int:
        """Entries held: one per symbol plus its baseline (at most ``baseline_buckets``)."""
        return sum(1 + len(st.baseline) for st in self._states.values())
