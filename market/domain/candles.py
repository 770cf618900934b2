"""OHLCV candle math: bucketing trades by time and folding them into candles.

Pure: no Django, no I/O, no clock. ``docs/candles.md`` explains the rules with
examples; in short:

* Buckets are aligned to the Unix epoch in UTC. A bucket of interval ``i``
  starts at ``1970-01-01T00:00Z + n * i`` and holds ``start <= ts < start + i``.
  Every interval divides a day, so 4h buckets start at 00, 04, 08, 12, 16 and
  20 UTC and ``1d`` is the UTC calendar day; a trade at exactly 00:00:00 UTC
  belongs to the new day. POSIX time has no leap seconds, so every day is
  1440 minutes long.
* The buckets nest (1m in 5m in 15m in 1h in 4h in 1d), so a coarse candle is
  the merge of the fine candles it contains. ``aggregate`` uses that: it folds
  trades into 1m candles and derives the others from those.
* A trade's order key is ``(ts, seq, trade id)``. ``open`` is the price of the
  trade with the smallest key and ``close`` of the one with the largest,
  whatever order trades arrive in. The database compares the stored key
  columns the same way (a row comparison), so a candle merged in SQL and one
  merged here agree, provided SQL compares trade ids by code point as Python
  does: ``COLLATE "C"``, not the database's default collation.
* ``volume`` and ``notional`` (the sum of price * size) are exact: the
  arithmetic runs in a decimal context whose precision holds the product of the
  largest price and size the message schema allows with room for 10**20 of
  them summed, and that traps ``Inexact``, so a result that would have to be
  rounded raises ``decimal.Inexact`` instead. Nothing is ever a float.
* ``vwap`` is ``notional / volume`` rounded half-to-even to 8 decimal places,
  the precision the database keeps for prices.

``merge`` is associative and commutative, so candles can be combined in any
grouping and order: batch by batch, shard by shard, or in SQL against a stored
row. That holds as long as order keys are unique, which they are because trade
ids are. ``aggregate`` does not drop duplicate trades: pass each trade once
(the pipeline aggregates only the trades the ingest newly stored).
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

import msgspec

from streaming.schemas import Interval, Trade

__all__ = [
    "INTERVALS",
    "VWAP_PLACES",
    "CandleAggregate",
    "CandleKey",
    "UnknownInterval",
    "aggregate",
    "bucket_start",
    "merge",
    "merge_maps",
    "parse_interval",
    "vwap",
]

INTERVALS: Mapping[str, timedelta] = MappingProxyType(
    {
        "1m": timedelta(minutes=1),
        "5m": timedelta(minutes=5),
        "15m": timedelta(minutes=15),
        "1h": timedelta(hours=1),
        "4h": timedelta(hours=4),
        "1d": timedelta(days=1),
    }
)
"""The candle intervals, finest first, each a multiple of the one before."""

VWAP_PLACES = 8

# Interval lengths in whole minutes: the hot path works on integer minute
# numbers since the epoch instead of on datetimes, which are slow to build.
_MINUTES: dict[str, int] = {name: length // timedelta(minutes=1) for name, length in INTERVALS.items()}
assert all(INTERVALS[name] == timedelta(minutes=m) for name, m in _MINUTES.items()), "intervals are whole minutes"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_ALLOWED = ", ".join(INTERVALS)

# The largest product is price (20 digits) * size (24 digits) = 44 digits; 64
# leaves room for summing 10**20 of them. Inexact is trapped, so if that were
# ever not enough the sum raises instead of being silently rounded.
_CONTEXT = decimal.Context(
    prec=64,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_ONE = Decimal(1)

CandleKey = tuple[str, str, datetime]  # (symbol, interval, bucket start)


class UnknownInterval(ValueError):
    """An interval name that is not one of ``INTERVALS``."""

    def __init__(self, text: object) -> None:
        super().__init__(f"Unknown candle interval {text!r}: use one of {_ALLOWED}.")
        self.text = text


def parse_interval(text: str) -> Interval:
    """Return ``text`` if it names an interval; raise ``UnknownInterval`` (a ValueError) if not.

    Exact match only: "1M" is refused rather than guessed (minute or month?).
    """
    if text in _MINUTES:
        return text  # type: ignore[return-value]
    raise UnknownInterval(text)


def _as_utc(ts: datetime) -> datetime:
    if ts.tzinfo is UTC:
        return ts
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"Naive datetime {ts.isoformat()}: pass a timezone-aware datetime (UTC).")
    return ts.astimezone(UTC)


# Bucket starts by minute number. Building a datetime costs ~0.5 us and a batch
# asks for the same few starts again and again; the cache is bounded by
# clearing it, which only costs recomputation.
_START_CACHE: dict[int, datetime] = {}
_START_CACHE_LIMIT = 100_000


def _start_of_minute(minute: int) -> datetime:
    start = _START_CACHE.get(minute)
    if start is None:
        if len(_START_CACHE) >= _START_CACHE_LIMIT:
            _START_CACHE.clear()
        start = _START_CACHE[minute] = _EPOCH + timedelta(minutes=minute)
    return start


def bucket_start(ts: datetime, interval: str) -> datetime:
    """The start (UTC) of the ``interval`` bucket that holds ``ts``.

    ``start <= ts < start + INTERVALS[interval]``. ``ts`` must be timezone
    aware (any zone; it is converted to UTC). Raises ``UnknownInterval`` for an
    unknown interval and ValueError for a naive datetime.
    """
    step = _MINUTES.get(interval)
    if step is None:
        raise UnknownInterval(interval)
    if ts.tzinfo is not UTC:
        ts = _as_utc(ts)
    # Every interval is whole minutes, so integer minutes since the epoch are
    # enough. Datetime and timedelta arithmetic costs ~0.5 us per operation and
    # a Python call ~80 ns, so the start comes from the cache, looked up inline.
    minute = (ts.toordinal() - _EPOCH_ORDINAL) * 1440 + ts.hour * 60 + ts.minute
    minute -= minute % step
    start = _START_CACHE.get(minute)
    return _start_of_minute(minute) if start is None else start


class CandleAggregate(msgspec.Struct, frozen=True, gc=False):
    """One candle: the trades of one symbol in one bucket, summarised so that it can be merged.

    (``gc=False``: no field can hold a container, so a candle can never be in a
    reference cycle, and untracked objects keep the garbage collector out of
    large replays.)

    ``first_*`` and ``last_*`` are the order key ``(ts, seq, trade id)`` of
    the opening and closing trade, stored as plain columns. ``volume > 0`` and
    ``trades >= 1`` always: a candle exists only if a trade does.
    """

    symbol: str
    interval: Interval
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    notional: Decimal
    first_ts: datetime
    first_seq: int
    first_trade_id: str
    last_ts: datetime
    last_seq: int
    last_trade_id: str

    @property
    def key(self) -> CandleKey:
        return (self.symbol, self.interval, self.start)

    @property
    def end(self) -> datetime:
        """The end of the bucket (exclusive)."""
        return self.start + INTERVALS[self.interval]

    @property
    def first_key(self) -> tuple[datetime, int, str]:
        return (self.first_ts, self.first_seq, self.first_trade_id)

    @property
    def last_key(self) -> tuple[datetime, int, str]:
        return (self.last_ts, self.last_seq, self.last_trade_id)

    @property
    def vwap(self) -> Decimal:
        """``notional / volume`` rounded half-to-even to 8 places: see ``vwap()``."""
        return vwap(self.notional, self.volume)


def vwap(notional: Decimal, volume: Decimal) -> Decimal:
    """``notional / volume`` rounded half-to-even to ``VWAP_PLACES`` (8) decimal places.

    For a stored candle too (the database keeps notional and volume, not the
    VWAP). Computed on exact fractions, so it is rounded once: dividing in
    Decimal and then quantizing would round twice. ``volume`` must be positive
    (a candle always has one); zero raises ZeroDivisionError.
    """
    return _quotient(notional, volume, VWAP_PLACES)


def _quotient(dividend: Decimal, divisor: Decimal, places: int) -> Decimal:
    """``dividend / divisor`` rounded half-to-even to ``places`` decimal places, exactly."""
    # On the integer ratios, without Fraction (whose gcd on every value made the API's candle pages
    # slow): dividend / divisor * 10**places = num / den, floored by divmod, then half to even.
    n_num, n_den = dividend.as_integer_ratio()
    v_num, v_den = divisor.as_integer_ratio()
    num, den = n_num * v_den * 10**places, n_den * v_num
    if den < 0:
        num, den = -num, -den
    scaled, remainder = divmod(num, den)
    twice = 2 * remainder
    if twice > den or (twice == den and scaled & 1):
        scaled += 1
    return Decimal(scaled).scaleb(-places, _CONTEXT)


def change_percent(change: Decimal, base: Decimal) -> Decimal:
    """``change`` as a percentage of ``base``, to 2 places: a fall too small to show is 0.00, not -0.00."""
    percent = _quotient(change.scaleb(2), base, 2)
    return percent.copy_abs() if percent.is_zero() else percent


def plain(value: Decimal) -> Decimal:
    """``value`` without trailing zeros, and not in exponent notation from 1e-6 up: 230.50 is 230.5, 230.00
    is 230.

    ``normalize()`` alone gives 2.3E+2 for 230, which is the same number but not how the contract writes
    one, and rounds to its context's precision (28 digits by default) where a volume can have 38. Below a
    millionth, str() of any Decimal has an exponent (1E-8); ``f"{v:f}"`` and ``streaming.schemas.encode``
    write the digits.
    """
    normal = value.normalize(_CONTEXT)
    return normal.quantize(_ONE, context=_CONTEXT) if normal.as_tuple().exponent > 0 else normal


def decimal_text(value: Decimal) -> str:
    """The exact, normalized decimal string, what a DRF DecimalField(normalize_output=True) renders for a
    value with at most 8 places: trailing zeros trimmed, never an exponent (230, 0.00000001)."""
    return f"{value.normalize(_CONTEXT):f}"


def merge(a: CandleAggregate, b: CandleAggregate) -> CandleAggregate:
    """The candle of the trades of ``a`` and ``b`` together.

    Associative and commutative. Raises ValueError if the two are not the
    same (symbol, interval, start). ``a`` and ``b`` must not share a trade:
    a trade in both would be counted twice.
    """
    if a.symbol != b.symbol or a.interval != b.interval or a.start != b.start:
        raise ValueError(
            f"Cannot merge candles of different buckets: {a.symbol} {a.interval} {a.start.isoformat()} "
            f"and {b.symbol} {b.interval} {b.start.isoformat()}; merge only candles with the same key."
        )
    first = a if a.first_key <= b.first_key else b
    last = a if a.last_key >= b.last_key else b
    return CandleAggregate(
        symbol=a.symbol,
        interval=a.interval,
        start=a.start,
        open=first.open,
        high=max(a.high, b.high),
        low=min(a.low, b.low),
        close=last.close,
        volume=_CONTEXT.add(a.volume, b.volume),
        trades=a.trades + b.trades,
        notional=_CONTEXT.add(a.notional, b.notional),
        first_ts=first.first_ts,
        first_seq=first.first_seq,
        first_trade_id=first.first_trade_id,
        last_ts=last.last_ts,
        last_seq=last.last_seq,
        last_trade_id=last.last_trade_id,
    )


def merge_maps(
    a: Mapping[CandleKey, CandleAggregate], b: Mapping[CandleKey, CandleAggregate]
) -> dict[CandleKey, CandleAggregate]:
    """Combine two results of ``aggregate`` (of disjoint sets of trades) into a new dict."""
    merged = dict(a)
    for key, candle in b.items():
        mine = merged.get(key)
        merged[key] = candle if mine is None else merge(mine, candle)
    return merged


class _Acc:
    """A mutable candle under construction. ``first`` and ``last`` are the
    trades with the smallest and largest order key; keeping the trade itself
    makes moving them one assignment."""

    __slots__ = ("first", "last", "high", "low", "volume", "notional", "trades")

    def __init__(self, first, last, high, low, volume, notional, trades) -> None:
        self.first = first
        self.last = last
        self.high = high
        self.low = low
        self.volume = volume
        self.notional = notional
        self.trades = trades

    def copy(self) -> _Acc:
        return _Acc(self.first, self.last, self.high, self.low, self.volume, self.notional, self.trades)

    def absorb(self, other: _Acc) -> None:
        """Merge ``other`` into this one (inside ``_CONTEXT``)."""
        if other.high > self.high:
            self.high = other.high
        if other.low < self.low:
            self.low = other.low
        self.volume += other.volume
        self.notional += other.notional
        self.trades += other.trades
        f, g = other.first, self.first
        if (f.ts, f.seq, f.id) < (g.ts, g.seq, g.id):
            self.first = f
        f, g = other.last, self.last
        if (f.ts, f.seq, f.id) > (g.ts, g.seq, g.id):
            self.last = f


def aggregate(
    trades: Iterable[Trade], intervals: Iterable[str] = tuple(INTERVALS)
) -> dict[CandleKey, CandleAggregate]:
    """Fold trades into one candle per (symbol, interval, bucket start) they touch.

    The result does not depend on the order of ``trades``, and
    ``merge_maps(aggregate(x), aggregate(y)) == aggregate(x + y)``. The order
    of the returned dict is unspecified: sort the keys before writing if the
    writer needs a stable lock order. Raises ``UnknownInterval`` before
    reading any trade if an interval is unknown. Duplicate trades are counted
    as often as they appear.
    """
    if isinstance(intervals, str):  # aggregate(trades, "1m"), not a set of "1" and "m"
        intervals = (intervals,)
    wanted = {parse_interval(name) for name in intervals}
    with decimal.localcontext(_CONTEXT):
        by_minute = _fold_minutes(trades)
        levels = _derive_levels(by_minute, wanted)
    result: dict[CandleKey, CandleAggregate] = {}
    for name, accs in levels:
        for (symbol, minute), acc in accs.items():
            first, last = acc.first, acc.last
            start = _start_of_minute(minute)
            result[(symbol, name, start)] = CandleAggregate(
                symbol=symbol,
                interval=name,
                start=start,
                open=first.price,
                high=acc.high,
                low=acc.low,
                close=last.price,
                volume=acc.volume,
                trades=acc.trades,
                notional=acc.notional,
                first_ts=_as_utc(first.ts),
                first_seq=first.seq,
                first_trade_id=first.id,
                last_ts=_as_utc(last.ts),
                last_seq=last.seq,
                last_trade_id=last.id,
            )
    return result


def _fold_minutes(trades: Iterable[Trade]) -> dict[tuple[str, int], _Acc]:
    """The 1m accumulators, keyed by (symbol, minute number). The hot loop:
    one dict lookup and a few Decimal operations per trade, no datetime built."""
    accs: dict[tuple[str, int], _Acc] = {}
    get = accs.get
    epoch_ordinal = _EPOCH_ORDINAL
    for trade in trades:
        ts = trade.ts
        if ts.tzinfo is not UTC:  # the schema normalises to UTC; this is for hand-built trades
            ts = _as_utc(ts)
        key = (trade.symbol, (ts.toordinal() - epoch_ordinal) * 1440 + ts.hour * 60 + ts.minute)
        acc = get(key)
        price = trade.price
        size = trade.size
        if acc is None:
            accs[key] = _Acc(trade, trade, price, price, size, price * size, 1)
            continue
        if price > acc.high:
            acc.high = price
        elif price < acc.low:
            acc.low = price
        acc.volume += size
        acc.notional += price * size
        acc.trades += 1
        # Trades mostly arrive in order, so test for a new close first; a key
        # above the last cannot also be below the first.
        last = acc.last
        if ts > last.ts or (ts == last.ts and (trade.seq, trade.id) > (last.seq, last.id)):
            acc.last = trade
        else:
            first = acc.first
            if ts < first.ts or (ts == first.ts and (trade.seq, trade.id) < (first.seq, first.id)):
                acc.first = trade
    return accs


def _derive_levels(
    by_minute: dict[tuple[str, int], _Acc], wanted: set[str]
) -> list[tuple[str, dict[tuple[str, int], _Acc]]]:
    """The accumulators of every wanted interval, each coarser one merged from
    the finest already computed interval that divides it (buckets nest because
    all are aligned to the epoch). Keys stay (symbol, start minute).

    A coarse bucket with a single fine bucket in it (common when replaying a
    sparse history) shares the fine accumulator instead of copying it; it is
    copied only when a second one has to be absorbed, so no accumulator is
    ever changed after its own level is built."""
    levels: list[tuple[str, dict[tuple[str, int], _Acc]]] = []
    computed: list[tuple[int, dict[tuple[str, int], _Acc]]] = [(1, by_minute)]
    coarsest = max((_MINUTES[name] for name in wanted), default=0)
    for name, step in _MINUTES.items():
        if step > coarsest:
            break
        source_step, source = max((c for c in computed if step % c[0] == 0), key=lambda c: c[0])
        if step == source_step:
            accs = source
        else:
            accs = {}
            owned: set[tuple[str, int]] = set()
            for (symbol, minute), fine in source.items():
                key = (symbol, minute - minute % step)
                coarse = accs.get(key)
                if coarse is None:
                    accs[key] = fine
                    continue
                if key not in owned:
                    coarse = accs[key] = coarse.copy()
                    owned.add(key)
                coarse.absorb(fine)
            computed.append((step, accs))
        if name in wanted:
            levels.append((name, accs))
    return levels
