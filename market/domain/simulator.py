"""Simulated market data: trades and quotes for a set of symbols, deterministic from a seed.

Pure: no Django, no I/O, no clock. ``MarketSimulator`` produces an infinite
stream of ``Trade`` and ``Quote`` messages in *event time*, a virtual clock
that starts at ``start``; the caller paces it against the wall clock
(``market.domain.pacing``). The same arguments give the same stream, ids
included, so a run can be reproduced exactly, as structs (``events()``) or as
their wire bytes, ready to publish (``wire_messages()``); with the same numpy
(requirements.lock pins it), whose random streams may change between versions.

The model, and why:

* **Arrivals.** Events form one Poisson process at ``rate * (1 + quotes_per_trade)``;
  each event is a quote with probability ``quotes_per_trade / (1 + quotes_per_trade)``,
  otherwise a trade. Thinning a Poisson process gives a Poisson process, so
  trades arrive at exactly ``rate`` per second on average, whatever else the
  simulator does: the caller paces by event time, and ``--rate 100`` must mean
  100 trades per second. The symbol of an event is drawn by ``volume_weight``.
* **Intraday shape.** The U-shaped activity of the US session (14:30-21:00
  UTC) is put into trade *size*, not count, so that it cannot disturb the rate:
  see ``intraday_volume_factor``. Outside the session sizes are about a third of
  the session average; the curve ramps smoothly over two hours into the open
  and out of the close so that a volume detector does not fire every morning.
  Every day is a trading day (no weekends or holidays).
* **Prices.** Each symbol's mid follows geometric Brownian motion plus rare
  small jumps, advanced at that symbol's quote events by the event time since
  its previous quote. Time is measured in *trading years* of 252 x 6.5 h
  (5,896,800 s) all day long, so an hour of simulation moves a price as much as
  an hour of a real session, also at night. ``volatility`` is the total
  annualised volatility (jumps carry 10 % of the variance) and ``drift`` the
  expected annual return, so log returns drift at ``drift - volatility**2 / 2``.
  The mid is kept unrounded in log space; only the published quotes are
  rounded to the cent, so rounding never biases the walk.
* **Quotes and trades.** A quote is the book around the mid: a spread of whole
  ticks that grows with price x volatility (AAPL 1 tick, META 4), a random
  extra tick or two, four times wider during an injected price spike; bid <
  ask always, sizes in round lots. Trades do not move the price: a buyer lifts
  the current (last published) ask and a seller hits the bid, and sometimes a
  trade prints strictly inside a spread of 3 ticks or more. Every trade is
  therefore at or inside the quote that precedes it in the stream; the first
  events of a run are one quote per symbol at ``start``.
* **Sizes** are heavy-tailed: mostly 1-9 round lots, a quarter odd lots, some
  500-4,900 share prints and one in a thousand a block of 10,000-100,000,
  then scaled by the intraday factor (and an injected burst) with stochastic
  rounding of the lot count, so the expected volume scales exactly.
* **Anomalies** (``anomaly_rate`` > 0) are injected per symbol with ground
  truth in ``ground_truth``: price spikes (a 6-15 % move within 5-30 s, held
  1-5 min with wide spreads, then partly reverted over 10-20 min) and volume
  bursts (1-3 whole UTC minutes with 15-25x the expected volume: the symbol
  trades twice as often and sizes make up the rest). Detectors need history:
  no spike starts in the first 5 minutes of a run, no burst in its first hour,
  and one episode ends at least an hour before the next starts on the same
  symbol, so that a detector's 30-60 minute look-back never contains the
  previous episode. Anomaly times and shapes come
  from their own random stream.

Without anomalies a 5 % move within a minute does not happen: for the most
volatile default (TSLA, 60 %) a minute's standard deviation is 0.2 % and the
largest jumps about 2 %.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, islice
from typing import Literal

import numpy as np

from streaming.schemas import MAX_PRICE, SYMBOL_RULE, Quote, Trade, is_valid_symbol
from streaming.wire import UtcTexts, WireMessage, cents_text, epoch_us, quote_bytes, trade_bytes

DEFAULT_SYMBOLS = ("AAPL", "GOOGL", "MSFT", "AMZN", "META", "NVDA", "TSLA", "JPM", "V", "JNJ")

# Volatility and drift are per trading year: 252 sessions of 6.5 hours.
TRADING_YEAR_SECONDS = 252 * 6.5 * 3600

SESSION_OPEN_UTC = 14 * 3600 + 30 * 60  # 09:30 New York in winter, seconds of the UTC day
SESSION_CLOSE_UTC = 21 * 3600

JUMPS_PER_TRADING_DAY = 4.0
JUMP_VARIANCE_SHARE = 0.1  # of the total variance; the diffusion carries the rest
SPREAD_PER_VOLATILE_DOLLAR = 0.0002  # spread in dollars ~ price x volatility x this
PRICE_IMPROVEMENT_SHARE = 0.15  # trades printing strictly inside a wide spread

# No anomaly of a kind starts earlier in a run: a price spike is measured against the last minute's
# trades, a volume burst against the last 30-60 minutes'.
WARM_UP_SECONDS = {"price_spike": 300.0, "volume_burst": 3600.0}
ANOMALY_GAP_SECONDS = 3600.0  # from the end of one episode to the start of the next, per symbol
SPIKE_SPREAD_FACTOR = 4
BURST_FREQUENCY_FACTOR = 2.0

AnomalyKind = Literal["price_spike", "volume_burst"]

MIN_PRICE = Decimal("0.01")  # a start price: the simulator's prices move in cents
_MAX_SEQ_DIGITS = 15  # ids stay within the schema's 64 characters up to seq 10**15
_MAX_CENTS = int(MAX_PRICE * 100)
_BLOCK = 4096  # events drawn at a time: enough to make numpy's per-call cost vanish, small enough to stay in cache


@dataclass(frozen=True)
class SymbolProfile:
    """How one symbol behaves: start price, annualised volatility and drift, share of activity.

    ``volume_weight`` is relative: a symbol with twice the weight of another
    gets twice its trades and quotes.
    """

    symbol: str
    price: Decimal
    volatility: float
    drift: float
    volume_weight: float

    def __post_init__(self) -> None:
        if not is_valid_symbol(self.symbol):
            raise ValueError(f"{self.symbol!r} is not a valid symbol: use {SYMBOL_RULE}")
        if not (self.price.is_finite() and self.price >= MIN_PRICE):
            raise ValueError(f"{self.symbol}: start price must be at least 0.01, got {self.price}")
        if not (math.isfinite(self.volatility) and 0 <= self.volatility <= 5):
            raise ValueError(f"{self.symbol}: volatility is annualised, between 0 and 5; got {self.volatility}")
        if not (math.isfinite(self.drift) and abs(self.drift) <= 100):
            raise ValueError(f"{self.symbol}: drift is an annual return, at most 100 in size; got {self.drift}")
        if not (math.isfinite(self.volume_weight) and self.volume_weight > 0):
            raise ValueError(f"{self.symbol}: volume_weight must be positive, got {self.volume_weight}")


DEFAULT_PROFILES: dict[str, SymbolProfile] = {
    p.symbol: p
    for p in (
        SymbolProfile("AAPL", Decimal("230.00"), 0.25, 0.08, 0.16),
        SymbolProfile("GOOGL", Decimal("175.00"), 0.28, 0.08, 0.08),
        SymbolProfile("MSFT", Decimal("420.00"), 0.24, 0.08, 0.08),
        SymbolProfile("AMZN", Decimal("200.00"), 0.30, 0.09, 0.10),
        SymbolProfile("META", Decimal("580.00"), 0.35, 0.10, 0.06),
        SymbolProfile("NVDA", Decimal("140.00"), 0.50, 0.12, 0.22),
        SymbolProfile("TSLA", Decimal("250.00"), 0.60, 0.05, 0.14),
        SymbolProfile("JPM", Decimal("240.00"), 0.22, 0.07, 0.05),
        SymbolProfile("V", Decimal("300.00"), 0.18, 0.07, 0.04),
        SymbolProfile("JNJ", Decimal("155.00"), 0.15, 0.05, 0.04),
    )
}


def profile_for(symbol: str) -> SymbolProfile:
    """The default profile of ``symbol``; for an unknown one, a plausible profile derived from its name.

    The derivation hashes the name (not ``hash()``, which changes per process),
    so the same unknown symbol behaves the same in every run: a price between
    10 and 500, a volatility between 20 % and 50 %, half the weight of a typical
    default symbol.
    """
    if symbol in DEFAULT_PROFILES:
        return DEFAULT_PROFILES[symbol]
    if not is_valid_symbol(symbol):
        raise ValueError(f"{symbol!r} is not a valid symbol: use {SYMBOL_RULE}")
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    u_price, u_vol = digest[0:4], digest[4:8]
    price = Decimal(1000 + int.from_bytes(u_price, "big") % 49_001).scaleb(-2)
    volatility = 0.20 + 0.30 * int.from_bytes(u_vol, "big") / 2**32
    return SymbolProfile(symbol, price, round(volatility, 4), 0.07, 0.05)


def _raw_session_shape(x: float) -> float:
    # x in [0, 1] through the session: heavy open, quiet lunch, busy close.
    return 0.75 + 1.05 * math.exp(-x / 0.08) + 0.6 * math.exp(-(1.0 - x) / 0.08)


_SESSION_MEAN = sum(_raw_session_shape((i + 0.5) / 10_000) for i in range(10_000)) / 10_000
_OVERNIGHT = 0.3  # raw level outside the session and its ramps
_RAMP_SECONDS = 2 * 3600.0


def intraday_volume_factor(seconds_of_day: float) -> float:
    """The multiplier of expected trade size at a UTC time of day (seconds since midnight).

    1.0 is the session average: about 2.0 at the open (14:30 UTC), 0.85 at
    midday, 1.5 at the close (21:00 UTC), 0.34 overnight, with cosine ramps over
    the two hours before the open and after the close.
    """
    s = seconds_of_day % 86400.0
    if SESSION_OPEN_UTC <= s <= SESSION_CLOSE_UTC:
        raw = _raw_session_shape((s - SESSION_OPEN_UTC) / (SESSION_CLOSE_UTC - SESSION_OPEN_UTC))
    elif SESSION_OPEN_UTC - _RAMP_SECONDS < s < SESSION_OPEN_UTC:
        w = (1.0 - math.cos(math.pi * (s - SESSION_OPEN_UTC + _RAMP_SECONDS) / _RAMP_SECONDS)) / 2.0
        raw = _OVERNIGHT + (_raw_session_shape(0.0) - _OVERNIGHT) * w
    elif SESSION_CLOSE_UTC < s < SESSION_CLOSE_UTC + _RAMP_SECONDS:
        w = (1.0 + math.cos(math.pi * (s - SESSION_CLOSE_UTC) / _RAMP_SECONDS)) / 2.0
        raw = _OVERNIGHT + (_raw_session_shape(1.0) - _OVERNIGHT) * w
    else:
        raw = _OVERNIGHT
    return raw / _SESSION_MEAN


# Sampled once per minute (at the middle of the minute): a table lookup per trade.
_FACTOR_BY_MINUTE = tuple(intraday_volume_factor(m * 60.0 + 30.0) for m in range(1440))


@dataclass(frozen=True)
class InjectedAnomaly:
    """One injected anomaly: what a detector should find, for evaluating it.

    * ``price_spike``: between ``start`` and ``end`` (under a minute) the mid
      moves by ``magnitude``, a signed relative change (0.08 is +8 %, -0.1 is
      -10 %). Afterwards the price holds for 1-5 minutes and then partly reverts
      over 10-20 minutes.
    * ``volume_burst``: from ``start`` to ``end`` (whole UTC minutes) the symbol's
      expected volume is ``magnitude`` times what it would have been.
    """

    symbol: str
    kind: AnomalyKind
    start: datetime
    end: datetime
    magnitude: float

    def to_json(self) -> dict[str, str | float]:
        return {
            "symbol": self.symbol,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "magnitude": self.magnitude,
        }

    @classmethod
    def from_json(cls, data: dict[str, str | float]) -> InjectedAnomaly:
        kind = str(data["kind"])
        if kind not in ("price_spike", "volume_burst"):
            raise ValueError(f"unknown anomaly kind {kind!r}: expected price_spike or volume_burst")
        return cls(
            symbol=str(data["symbol"]),
            kind=kind,  # type: ignore[arg-type]
            start=datetime.fromisoformat(str(data["start"])),
            end=datetime.fromisoformat(str(data["end"])),
            magnitude=float(data["magnitude"]),
        )


def ground_truth_json(anomalies: Sequence[InjectedAnomaly]) -> str:
    """The anomalies as a JSON array, one object per anomaly, for a ground-truth file."""
    return json.dumps([a.to_json() for a in anomalies], indent=1)


def ground_truth_from_json(text: str) -> list[InjectedAnomaly]:
    return [InjectedAnomaly.from_json(item) for item in json.loads(text)]


@dataclass(frozen=True)
class _Spike:
    """The log-price offset of an injected spike as a function of event time."""

    start: float
    ramp_end: float
    hold_end: float
    revert_end: float
    log_move: float
    revert_fraction: float

    def offset(self, t: float) -> float:
        if t <= self.start:
            return 0.0
        if t < self.ramp_end:
            return self.log_move * (t - self.start) / (self.ramp_end - self.start)
        if t < self.hold_end:
            return self.log_move
        if t < self.revert_end:
            done = (t - self.hold_end) / (self.revert_end - self.hold_end)
            return self.log_move * (1.0 - self.revert_fraction * done)
        return self.log_move * (1.0 - self.revert_fraction)


class _SymbolState:
    __slots__ = (
        "ask_c",
        "base_spread",
        "bid_c",
        "burst_end",
        "diffusion",
        "drift",
        "index",
        "jump_rate",
        "jump_sd",
        "last_t",
        "log_mid_c",
        "next_anomaly",
        "next_jump_t",
        "profile",
        "quote_prefix",
        "quote_seq",
        "size_mult",
        "spike",
        "spike_offset",
        "symbol",
        "trade_prefix",
        "trade_seq",
    )

    def __init__(self, profile: SymbolProfile, index: int, run: str) -> None:
        sigma = profile.volatility
        jumps_per_year = JUMPS_PER_TRADING_DAY * 252
        self.profile = profile
        self.symbol = profile.symbol
        self.index = index
        self.drift = (profile.drift - sigma * sigma / 2.0) / TRADING_YEAR_SECONDS
        self.diffusion = sigma * math.sqrt(1.0 - JUMP_VARIANCE_SHARE) / math.sqrt(TRADING_YEAR_SECONDS)
        self.jump_sd = sigma * math.sqrt(JUMP_VARIANCE_SHARE / jumps_per_year)
        self.jump_rate = jumps_per_year / TRADING_YEAR_SECONDS
        self.next_jump_t = 0.0  # drawn at the start of the stream
        price_c = float(profile.price) * 100.0
        self.log_mid_c = math.log(price_c)
        self.last_t = 0.0
        self.base_spread = max(1, round(price_c * sigma * SPREAD_PER_VOLATILE_DOLLAR))
        self.bid_c = self.ask_c = 0
        self.trade_seq = self.quote_seq = 0
        self.trade_prefix = f"sim-{run}-{profile.symbol}-"
        self.quote_prefix = f"simq-{run}-{profile.symbol}-"
        self.spike: _Spike | None = None
        self.spike_offset = 0.0
        self.size_mult = 1.0
        self.burst_end = math.inf
        # (start, kind) of the next anomaly, or None when anomalies are off.
        self.next_anomaly: tuple[float, AnomalyKind] | None = None


def _cents(c: int) -> Decimal:
    """Whole cents as a decimal that encodes as cents_text writes them (230, not 230.00)."""
    return Decimal(cents_text(c))


class MarketSimulator:
    """An infinite, deterministic stream of simulated trades and quotes (see the module docstring).

    ``symbols`` are names (profiles from ``profile_for``) or ``SymbolProfile``s;
    ``start`` is the event time of the first events (timezone-aware); ``rate``
    is trades per second across all symbols; ``anomaly_rate`` the expected
    number of injected anomalies per symbol per simulated hour (the warm-up
    and the hour between episodes cap it at about 0.8);
    ``quotes_per_trade`` the mean number of quotes per trade (> 0: quotes are
    what move prices).

    Ids are ``sim-{seed}-{start}-{symbol}-{seq}`` for trades and
    ``simq-{seed}-{start}-{symbol}-{n}`` for quotes, ``start`` the first
    events' time in epoch microseconds, base 36: a run with the same seed and
    start is the same stream under the same ids (consumers store it once); any
    other run's ids are its own, so that an id names one trade.
    """

    def __init__(
        self,
        *,
        symbols: Sequence[str | SymbolProfile],
        seed: int,
        start: datetime,
        rate: float,
        anomaly_rate: float = 0.0,
        quotes_per_trade: float = 1.0,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(f"start must be timezone-aware (UTC), got naive {start.isoformat()}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate is trades per second and must be positive, got {rate}")
        if not (math.isfinite(anomaly_rate) and anomaly_rate >= 0):
            raise ValueError(f"anomaly_rate is per symbol per hour and must be >= 0, got {anomaly_rate}")
        if not (math.isfinite(quotes_per_trade) and quotes_per_trade > 0):
            raise ValueError(
                f"quotes_per_trade must be positive (quotes move the price), got {quotes_per_trade}"
            )
        profiles = tuple(s if isinstance(s, SymbolProfile) else profile_for(s) for s in symbols)
        if not profiles:
            raise ValueError("symbols is empty: give at least one, e.g. DEFAULT_SYMBOLS")
        names = [p.symbol for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"symbols must be distinct, got {names}")
        run = f"{seed}-{np.base_repr(epoch_us(start), 36).lower()}"
        longest = max(len(f"simq-{run}-{name}-") for name in names) + _MAX_SEQ_DIGITS
        if longest > 64:
            raise ValueError(f"seed {seed} is too long: message ids would exceed 64 characters")

        self.seed = seed
        self.start = start.astimezone(UTC)
        self.rate = float(rate)
        self.anomaly_rate = float(anomaly_rate)
        self.quotes_per_trade = float(quotes_per_trade)
        self.profiles = profiles
        self.ground_truth: list[InjectedAnomaly] = []

        self._rng = random.Random(seed)
        # What every event draws, a block at a time (see _generate).
        self._draws = np.random.default_rng(self._rng.getrandbits(128))
        # Anomaly times and shapes have their own stream, so that they do not
        # depend on how many events happen to come before them.
        self._anomaly_rng = random.Random(f"finstream-anomalies-{seed}")
        self._states = [_SymbolState(p, i, run) for i, p in enumerate(profiles)]
        self._weights = [p.volume_weight for p in profiles]
        self._cum = list(accumulate(self._weights))
        self._start_sod = (self.start - self.start.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        if self.anomaly_rate > 0:
            for state in self._states:
                self._schedule_anomaly(state)
        self._stream: Iterator | None = None
        self._form: str | None = None

    def events(self) -> Iterator[Trade | Quote]:
        """The stream as ``Trade`` and ``Quote`` structs, infinite and in nondecreasing event time; every call
        continues the same stream."""
        start = self.start

        def quote(st: _SymbolState, t_us: int, seq: int, bid_c: int, ask_c: int, bid_size: int,
                  ask_size: int) -> Quote:
            return Quote(id=f"{st.quote_prefix}{seq}", symbol=st.symbol, ts=start + timedelta(microseconds=t_us),
                         bid=_cents(bid_c), ask=_cents(ask_c), bid_size=Decimal(bid_size),
                         ask_size=Decimal(ask_size))

        def trade(st: _SymbolState, t_us: int, seq: int, price_c: int, size: int, side: str) -> Trade:
            return Trade(id=f"{st.trade_prefix}{seq}", symbol=st.symbol, ts=start + timedelta(microseconds=t_us),
                         seq=seq, price=_cents(price_c), size=Decimal(size), side=side)  # type: ignore[arg-type]

        return self._stream_as("structs", quote, trade, math.inf)

    def next_batch(self, n: int) -> list[Trade | Quote]:
        """The next ``n`` events of the stream."""
        return list(islice(self.events(), n))

    def wire_messages(self, *, trades_topic: str, quotes_topic: str,
                      until: datetime | None = None) -> Iterator[WireMessage]:
        """The same stream as ``events()`` (same arguments, same events) as ready-to-publish wire messages,
        keyed by symbol, each value byte for byte ``encode(event)``; it ends before ``until`` if given (on
        the first call, which starts the stream).

        The events are never built: a struct and its validated decimals would cost more than Kafka takes
        to accept the message. Every call continues the same stream; a simulator streams either structs
        or wire messages, not both.
        """
        start_us = epoch_us(self.start)
        utc_text = UtcTexts().text
        # Prices stay within a few hundred cents of each other: each is formatted once.
        price_texts: dict[int, str] = {}
        cached = price_texts.get

        def new_price_text(cents: int) -> str:
            if len(price_texts) >= 100_000:
                price_texts.clear()
            text = price_texts[cents] = cents_text(cents)
            return text

        def quote(st: _SymbolState, t_us: int, seq: int, bid_c: int, ask_c: int, bid_size: int,
                  ask_size: int) -> WireMessage:
            epoch_us = start_us + t_us
            value = quote_bytes(st.quote_prefix, seq, st.symbol, utc_text(epoch_us),
                               cached(bid_c) or new_price_text(bid_c), cached(ask_c) or new_price_text(ask_c),
                               bid_size, ask_size)
            return quotes_topic, st.symbol, value, epoch_us // 1000

        def trade(st: _SymbolState, t_us: int, seq: int, price_c: int, size: int, side: str) -> WireMessage:
            epoch_us = start_us + t_us
            value = trade_bytes(st.trade_prefix, seq, st.symbol, utc_text(epoch_us), seq,
                               cached(price_c) or new_price_text(price_c), size, side)
            return trades_topic, st.symbol, value, epoch_us // 1000

        end = math.inf if until is None else (until - self.start).total_seconds()
        return self._stream_as("wire messages", quote, trade, end)

    def _stream_as(self, form: str, quote: Callable, trade: Callable, end: float) -> Iterator:
        if self._stream is None:
            self._stream, self._form = self._generate(quote, trade, end), form
        elif form != self._form:
            raise RuntimeError(f"this simulator already streams {self._form}: make another for {form}")
        return self._stream

    def event_time(self, t: float) -> datetime:
        """The timestamp of virtual second ``t`` (seconds since ``start``), to the microsecond."""
        return self.start + timedelta(microseconds=int(t * 1e6))

    # The one event loop, for both forms of the stream: it yields ``quote(state, microseconds since start,
    # seq, bid_c, ask_c, bid_size, ask_size)`` and ``trade(state, microseconds, seq, price_c, size, side)``
    # with prices in whole cents and sizes in shares, and stops at event time ``end`` (seconds since start).
    #
    # It is the hot path. What every event needs (its time, symbol, kind, minute of the day and the normal
    # draw of a quote's price step) is drawn with numpy a block at a time, up to the next anomaly change,
    # which changes the symbols' weights; arrivals are memoryless, so a block restarts from the change.
    # The rest (a few uniforms per event, the rare jump) is drawn one at a time from ``_rng``.
    def _generate(self, quote: Callable, trade: Callable, end: float) -> Iterator:
        draws = self._draws
        random_ = self._rng.random
        gauss = self._rng.gauss
        expovariate = self._rng.expovariate
        paretovariate = self._rng.paretovariate
        exp = math.exp
        log = math.log
        sqrt = math.sqrt
        states = self._states
        last_index = len(states) - 1
        factors = _FACTOR_BY_MINUTE
        start_minute = self._start_sod / 60.0
        event_rate = self.rate * (1.0 + self.quotes_per_trade)
        quote_share = self.quotes_per_trade / (1.0 + self.quotes_per_trade)

        for state in states:
            state.next_jump_t = expovariate(state.jump_rate)
        if end <= 0.0:
            return  # even the opening quotes, at the start, are not before the end
        # The opening block: one quote per symbol at the start.
        opening = len(states)
        columns: tuple[list, ...] = ([0.0] * opening, [0] * opening, list(range(opening)), [True] * opening,
                                     [int(start_minute)] * opening, draws.standard_normal(opening).tolist())
        t = 0.0
        next_change = self._next_change()
        last_block = change_due = False
        while True:
            for t, t_us, i, is_quote, minute, z in zip(*columns):
                st = states[i]
                if is_quote:
                    # Advance the mid to t, then publish the book around it.
                    dt = t - st.last_t
                    if dt > 0.0:
                        st.log_mid_c += st.drift * dt + st.diffusion * sqrt(dt) * z
                        st.last_t = t
                        if t >= st.next_jump_t:
                            st.log_mid_c += gauss(0.0, st.jump_sd)
                            st.next_jump_t = t + expovariate(st.jump_rate)
                    spread = st.base_spread
                    u = random_()
                    if u > 0.6:
                        spread += 1 if u < 0.9 else 2
                    spike = st.spike
                    if spike is not None:
                        offset = spike.offset(t)
                        st.log_mid_c += offset - st.spike_offset
                        st.spike_offset = offset
                        if t < spike.hold_end:
                            spread *= SPIKE_SPREAD_FACTOR
                        elif t >= spike.revert_end:
                            st.spike = None
                            st.spike_offset = 0.0
                    # Round half up to a whole cent of the bid, so that the book is centred on the mid.
                    bid_c = int(exp(st.log_mid_c) - spread * 0.5 + 0.5)
                    if bid_c < 1:
                        bid_c = 1
                    ask_c = bid_c + spread
                    if ask_c > _MAX_CENTS:
                        raise OverflowError(f"{st.symbol}'s price left the contract's range: {ask_c / 100}")
                    st.bid_c = bid_c
                    st.ask_c = ask_c
                    st.quote_seq = seq = st.quote_seq + 1
                    yield quote(st, t_us, seq, bid_c, ask_c, 100 * (1 + int(random_() * 10)),
                                100 * (1 + int(random_() * 10)))
                else:
                    # Trade: against the last published book, which trades do not move.
                    bid_c = st.bid_c
                    ask_c = st.ask_c
                    buy = random_() < 0.5
                    if ask_c - bid_c > 2 and random_() < PRICE_IMPROVEMENT_SHARE:
                        price_c = bid_c + 1 + int(random_() * (ask_c - bid_c - 1))
                    else:
                        price_c = ask_c if buy else bid_c
                    st.trade_seq = seq = st.trade_seq + 1
                    # The size: heavy-tailed lots, their expectation scaled by the time of day and a burst.
                    mult = factors[minute] * st.size_mult
                    u = random_()
                    if 0.62 <= u < 0.87:
                        size = max(1, int((1 + int(random_() * 99)) * mult + 0.5))  # an odd lot
                    else:
                        if u < 0.62:
                            lots = 1 + min(8, int(-log(1.0 - random_()) / 0.7))  # rng.expovariate(0.7)
                        elif u < 0.999:
                            lots = 5 + int(45 * random_() ** 3)  # 500-4,900 shares, mostly the smaller
                        else:
                            lots = min(1000, int(100 * paretovariate(2.0)))  # a block, 10,000-100,000
                        # Rounded up with the probability of the fraction, so the expected volume scales exactly.
                        lots_f = lots * mult
                        lots = int(lots_f)
                        if random_() < lots_f - lots:
                            lots += 1
                        size = lots * 100 if lots else max(1, int(lots_f * 100 + 0.5))  # below a lot: odd
                    yield trade(st, t_us, seq, price_c, size, "buy" if buy else "sell")
            if last_block:
                return
            if change_due:
                t = next_change
                next_change = self._run_anomalies(t)
            # The next block: Poisson arrivals from t, those before the next change or the end.
            times = draws.standard_exponential(_BLOCK).cumsum()
            times /= event_rate
            times += t
            limit = next_change if next_change < end else end
            n = int(times.searchsorted(limit))
            last_block = n < _BLOCK and limit >= end
            change_due = n < _BLOCK and not last_block
            # Whole blocks are drawn even when fewer events are used, so that where the stream ends
            # (``end``) does not change the draws before it.
            cum = self._cum
            picks = np.minimum(np.searchsorted(cum, draws.random(_BLOCK) * cum[-1], side="right"), last_index)
            kinds = draws.random(_BLOCK) < quote_share
            normals = draws.standard_normal(_BLOCK)
            times = times[:n]
            columns = (times.tolist(), (times * 1e6).astype(np.int64).tolist(), picks[:n].tolist(),
                       kinds[:n].tolist(), ((start_minute + times / 60.0).astype(np.int64) % 1440).tolist(),
                       normals[:n].tolist())

    # Anomalies: schedule, start and end. Called only when event time passes
    # the next scheduled change, so it costs nothing per event.
    def _next_change(self) -> float:
        soonest = math.inf
        for st in self._states:
            if st.next_anomaly is not None and st.next_anomaly[0] < soonest:
                soonest = st.next_anomaly[0]
            if st.burst_end < soonest:
                soonest = st.burst_end
        return soonest

    def _schedule_anomaly(self, st: _SymbolState, *, not_before: float | None = None) -> None:
        """The symbol's next anomaly: after `not_before` (the end of its last episode and the gap), or
        for its first, after its kind's warm-up."""
        arng = self._anomaly_rng
        kind: AnomalyKind = "price_spike" if arng.random() < 0.5 else "volume_burst"
        if not_before is None:
            not_before = WARM_UP_SECONDS[kind]
        # Mean time between starts is 1/anomaly_rate hours; the gap and the
        # episode itself (about 10 minutes on average) come out of it.
        mean_wait = max(3600.0 / self.anomaly_rate - ANOMALY_GAP_SECONDS - 600.0, 300.0)
        at = not_before + arng.expovariate(1.0 / mean_wait)
        if kind == "volume_burst":
            # Whole UTC minutes, so that the burst fills its one-minute buckets.
            at = math.ceil((self._start_sod + at) / 60.0) * 60.0 - self._start_sod
        st.next_anomaly = (at, kind)

    def _run_anomalies(self, t: float) -> float:
        arng = self._anomaly_rng
        for st in self._states:
            if st.burst_end <= t:
                self._weights[st.index] = st.profile.volume_weight
                self._cum = list(accumulate(self._weights))
                st.size_mult = 1.0
                st.burst_end = math.inf
            if st.next_anomaly is None or st.next_anomaly[0] > t:
                continue
            at, kind = st.next_anomaly
            if kind == "price_spike":
                move = arng.uniform(0.06, 0.15) * (1 if arng.random() < 0.5 else -1)
                ramp_end = at + arng.uniform(5.0, 30.0)
                hold_end = ramp_end + arng.uniform(60.0, 300.0)
                revert_end = hold_end + arng.uniform(600.0, 1200.0)
                st.spike = _Spike(at, ramp_end, hold_end, revert_end, math.log1p(move), arng.uniform(0.3, 0.9))
                st.spike_offset = 0.0
                self.ground_truth.append(
                    InjectedAnomaly(st.symbol, "price_spike", self.event_time(at), self.event_time(ramp_end), move)
                )
                episode_end = revert_end
            else:
                magnitude = arng.uniform(15.0, 25.0)
                end = at + 60.0 * arng.randint(1, 3)
                share = self._weights[st.index] / sum(self._weights)
                frequency = BURST_FREQUENCY_FACTOR / (1.0 + (BURST_FREQUENCY_FACTOR - 1.0) * share)
                self._weights[st.index] = st.profile.volume_weight * BURST_FREQUENCY_FACTOR
                self._cum = list(accumulate(self._weights))
                st.size_mult = magnitude / frequency
                st.burst_end = end
                self.ground_truth.append(
                    InjectedAnomaly(st.symbol, "volume_burst", self.event_time(at), self.event_time(end), magnitude)
                )
                episode_end = end
            self._schedule_anomaly(st, not_before=episode_end + ANOMALY_GAP_SECONDS)
        return self._next_change()

