"""Properties of the pure candle math in market/domain/candles.py.

The trades hypothesis generates cluster on the edges where candle code goes
wrong: exact bucket boundaries and one microsecond either side, the same
timestamp (and sequence number) for several trades, a year end, a leap day and
the days before the epoch, equal prices written differently ("100" and
"100.00000000"), and prices and sizes up to the largest the schema allows.
Pure code: no database, no Django settings.
"""

from __future__ import annotations

import calendar
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from functools import reduce

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.domain.candles import (
    INTERVALS,
    CandleAggregate,
    UnknownInterval,
    aggregate,
    bucket_start,
    change_percent,
    merge,
    merge_maps,
    parse_interval,
    plain,
    vwap,
)
from streaming.schemas import MAX_PRICE, MAX_SIZE, Trade

US = timedelta(microseconds=1)
SYMBOLS = ["AAPL", "BRK.B", "BTC-USD"]
# Each window is a few days from a UTC midnight: across a year end, across a
# leap day, and across the epoch (negative POSIX times).
WINDOWS = [
    datetime(2023, 12, 30, tzinfo=UTC),
    datetime(2024, 2, 27, tzinfo=UTC),
    datetime(1969, 12, 30, tzinfo=UTC),
]
WINDOW_DAYS = 4
ALLOWED = "1m, 5m, 15m, 1h, 4h, 1d"
FIELDS = CandleAggregate.__struct_fields__
# More examples than hypothesis's default 100 for the core properties; the
# whole file still runs in about 20 s. No deadline: timing is not the point here.
THOROUGH = settings(max_examples=200, deadline=None)


# --- strategies -------------------------------------------------------------


def timestamps() -> st.SearchStrategy[datetime]:
    """Anywhere in a window, or on a bucket boundary of some interval, or 1 us either side of one."""
    anywhere = st.builds(
        lambda base, us: base + us * US,
        st.sampled_from(WINDOWS),
        st.integers(0, WINDOW_DAYS * 86_400_000_000 - 1),
    )
    boundary = st.sampled_from(list(INTERVALS.values())).flatmap(
        lambda length: st.builds(
            lambda base, k, nudge: base + k * length + nudge,
            st.sampled_from(WINDOWS),
            st.integers(0, timedelta(days=WINDOW_DAYS) // length),
            st.sampled_from([-US, timedelta(0), timedelta(0), US]),
        )
    )
    return st.one_of(anywhere, boundary)


def _scaled(maximum: Decimal) -> st.SearchStrategy[Decimal]:
    """Positive decimals up to ``maximum`` with up to 8 places, written in varied ways."""
    full = st.integers(1, int(maximum.scaleb(8))).map(lambda m: Decimal(m).scaleb(-8))
    short = st.builds(lambda m, places: Decimal(m).scaleb(-places), st.integers(1, 10**6), st.integers(0, 8))
    # Equal values written differently, the same value often (ties), and the
    # value with the most digits the schema allows (20 for a price, 24 for a size).
    same = st.sampled_from([Decimal("100"), Decimal("100.00000000"), Decimal("1E+2"), Decimal("0.00000001")])
    return st.one_of(full, short, same, st.just(maximum - Decimal("0.00000001")))


def prices() -> st.SearchStrategy[Decimal]:
    return _scaled(MAX_PRICE)


def sizes() -> st.SearchStrategy[Decimal]:
    return _scaled(MAX_SIZE)


@st.composite
def trade_lists(draw, *, min_size: int = 1, max_size: int = 40, symbols=tuple(SYMBOLS), times=None):
    """Valid trades with unique ids (unrelated to time order) and deliberately colliding timestamps."""
    times = timestamps() if times is None else times
    # A few instants that many trades share or crowd around, so that candles
    # hold several trades and order keys collide.
    pool = draw(st.lists(times, min_size=1, max_size=4))
    near = st.builds(lambda ts, us: ts + us * US, st.sampled_from(pool), st.integers(-120_000_000, 120_000_000))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(symbols),
                st.one_of(st.sampled_from(pool), near, times),
                st.integers(0, 3),  # small, so that (ts, seq) ties happen and the id decides
                prices(),
                sizes(),
                st.sampled_from(["buy", "sell"]),
            ),
            min_size=min_size,
            max_size=max_size,
        )
    )
    ids = draw(st.permutations(range(len(rows))))
    return [
        Trade(id=f"T{ident:04d}", symbol=symbol, ts=ts, seq=seq, price=price, size=size, side=side)
        for ident, (symbol, ts, seq, price, size, side) in zip(ids, rows)
    ]


# --- the independent oracle ----------------------------------------------------


def oracle(trades: list[Trade]) -> dict[tuple[str, str, datetime], dict[str, object]]:
    """Candles computed the slow, obvious way: integer POSIX seconds, group, sort by key."""
    groups: dict[tuple[str, str, datetime], list[Trade]] = defaultdict(list)
    for trade in trades:
        seconds = calendar.timegm(trade.ts.utctimetuple())  # whole seconds, floored, no floats
        for name, length in INTERVALS.items():
            length_s = length // timedelta(seconds=1)
            start = datetime.fromtimestamp(seconds - seconds % length_s, UTC)
            groups[(trade.symbol, name, start)].append(trade)
    candles = {}
    with localcontext(Context(prec=200)):
        for (symbol, name, start), members in groups.items():
            ordered = sorted(members, key=lambda t: (t.ts, t.seq, t.id))
            first, last = ordered[0], ordered[-1]
            volume = sum(t.size for t in members)
            notional = sum(t.price * t.size for t in members)
            candles[(symbol, name, start)] = {
                "symbol": symbol,
                "interval": name,
                "start": start,
                "open": first.price,
                "high": max(t.price for t in members),
                "low": min(t.price for t in members),
                "close": last.price,
                "volume": volume,
                "trades": len(members),
                "notional": notional,
                "first_ts": first.ts,
                "first_seq": first.seq,
                "first_trade_id": first.id,
                "last_ts": last.ts,
                "last_seq": last.seq,
                "last_trade_id": last.id,
                "vwap": (notional / volume).quantize(Decimal("1E-8"), rounding=ROUND_HALF_EVEN),
            }
    return candles


def trade(ts: datetime, *, ident: str = "T1", seq: int = 0, price: str = "100", size: str = "1", symbol="AAPL"):
    return Trade(id=ident, symbol=symbol, ts=ts, seq=seq, price=Decimal(price), size=Decimal(size), side="buy")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- properties of aggregate -----------------------------------------------------


@THOROUGH
@given(trades=trade_lists())
def test_the_fast_path_equals_the_naive_oracle_field_by_field(trades):
    fast = aggregate(trades)
    slow = oracle(trades)
    assert sorted(fast, key=repr) == sorted(slow, key=repr)
    for key, expected in slow.items():
        candle = fast[key]
        for field in (*FIELDS, "vwap"):
            assert getattr(candle, field) == expected[field], f"{key} {field}"
        assert candle.start.tzinfo is UTC and candle.first_ts.tzinfo is UTC and candle.last_ts.tzinfo is UTC
        assert candle.vwap.as_tuple().exponent == -8


@THOROUGH
@given(trades=trade_lists(), data=st.data())
def test_aggregation_does_not_depend_on_trade_order(trades, data):
    shuffled = data.draw(st.permutations(trades))
    assert aggregate(shuffled) == aggregate(trades)
    assert aggregate(reversed(trades)) == aggregate(trades)  # any iterable, not just lists


@THOROUGH
@given(trades=trade_lists(), data=st.data())
def test_splitting_a_batch_anywhere_and_merging_equals_the_whole(trades, data):
    k = data.draw(st.integers(0, len(trades)))
    assert merge_maps(aggregate(trades[:k]), aggregate(trades[k:])) == aggregate(trades)


@THOROUGH
@given(trades=trade_lists(), data=st.data())
def test_merging_maps_is_associative_and_commutative(trades, data):
    i = data.draw(st.integers(0, len(trades)))
    j = data.draw(st.integers(i, len(trades)))
    a, b, c = aggregate(trades[:i]), aggregate(trades[i:j]), aggregate(trades[j:])
    a_before = dict(a)
    assert merge_maps(merge_maps(a, b), c) == merge_maps(a, merge_maps(b, c)) == aggregate(trades)
    assert merge_maps(a, b) == merge_maps(b, a)
    assert a == a_before  # inputs are not changed


@st.composite
def three_candles_of_one_bucket(draw):
    """Three candles of the same (symbol, 1h, start) from disjoint trades, some on the hour's edges."""
    hour = draw(st.sampled_from(WINDOWS)) + draw(st.integers(0, 24 * WINDOW_DAYS - 1)) * timedelta(hours=1)
    inside = st.one_of(
        st.integers(0, 3_599_999_999).map(lambda us: hour + us * US),
        st.sampled_from([hour, hour + timedelta(hours=1) - US]),
    )
    trades = draw(trade_lists(min_size=3, max_size=20, symbols=("AAPL",), times=inside))
    # Trades crowding around an instant may spill out of the hour: fold them back in.
    hour_long = timedelta(hours=1)
    trades = [msgspec.structs.replace(t, ts=hour + (t.ts - hour) % hour_long) for t in trades]
    i = draw(st.integers(1, len(trades) - 2))
    j = draw(st.integers(i + 1, len(trades) - 1))
    return [aggregate(part, ["1h"])[("AAPL", "1h", hour)] for part in (trades[:i], trades[i:j], trades[j:])]


@THOROUGH
@given(candles=three_candles_of_one_bucket())
def test_merge_is_associative_and_commutative(candles):
    a, b, c = candles
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, b) == merge(b, a)
    assert merge(merge(c, a), b) == merge(a, merge(b, c))


@THOROUGH
@given(trades=trade_lists())
def test_every_coarser_candle_is_the_merge_of_the_finer_candles_inside_it(trades):
    candles = aggregate(trades)
    names = list(INTERVALS)
    for fine_name, coarse_name in [(f, c) for i, f in enumerate(names) for c in names[i + 1 :]]:
        fine = [c for c in candles.values() if c.interval == fine_name]
        covered = 0
        for coarse in (c for c in candles.values() if c.interval == coarse_name):
            inside = [
                msgspec.structs.replace(f, interval=coarse_name, start=coarse.start)
                for f in fine
                if f.symbol == coarse.symbol and coarse.start <= f.start < coarse.end
            ]
            assert inside, f"{coarse.key} contains no {fine_name} candle"
            assert reduce(merge, inside) == coarse
            covered += len(inside)
        assert covered == len(fine)  # and no fine candle falls outside every coarse one


@THOROUGH
@given(trades=trade_lists())
def test_each_trade_lands_in_exactly_one_bucket_per_interval_and_the_bucket_holds_it(trades):
    candles = aggregate(trades)
    for t in trades:
        for name in INTERVALS:
            holding = [
                c for c in candles.values() if c.symbol == t.symbol and c.interval == name and c.start <= t.ts < c.end
            ]
            assert len(holding) == 1
            assert holding[0].start == bucket_start(t.ts, name)
            assert holding[0].first_key <= (t.ts, t.seq, t.id) <= holding[0].last_key
    for name in INTERVALS:
        assert sum(c.trades for c in candles.values() if c.interval == name) == len(trades)


@THOROUGH
@given(trades=trade_lists())
def test_every_candle_is_internally_consistent(trades):
    for candle in aggregate(trades).values():
        assert candle.high >= max(candle.open, candle.close)
        assert candle.low <= min(candle.open, candle.close)
        assert candle.low <= candle.vwap <= candle.high
        assert candle.trades >= 1 and candle.volume > 0
        assert candle.start <= candle.first_ts and candle.first_key <= candle.last_key and candle.last_ts < candle.end
        assert bucket_start(candle.first_ts, candle.interval) == candle.start


@THOROUGH
@given(trades=trade_lists())
def test_volume_trades_and_notional_are_exact_sums(trades):
    # Fractions are exact whatever a decimal context would do.
    candles = aggregate(trades)
    for name in INTERVALS:
        for symbol in SYMBOLS:
            mine = [c for c in candles.values() if c.interval == name and c.symbol == symbol]
            theirs = [t for t in trades if t.symbol == symbol]
            assert sum(c.trades for c in mine) == len(theirs)
            assert sum(Fraction(c.volume) for c in mine) == sum(Fraction(t.size) for t in theirs)
            assert sum(Fraction(c.notional) for c in mine) == sum(Fraction(t.price) * Fraction(t.size) for t in theirs)


@settings(deadline=None, max_examples=100)
@given(trades=trade_lists())
def test_the_callers_decimal_context_does_not_change_the_result(trades):
    expected = aggregate(trades)
    with localcontext(Context(prec=3)):
        assert aggregate(trades) == expected
        half = len(trades) // 2
        assert merge_maps(aggregate(trades[:half]), aggregate(trades[half:])) == expected


@settings(deadline=None, max_examples=100)
@given(trades=trade_lists(), wanted=st.lists(st.sampled_from(list(INTERVALS)), min_size=1, unique=True))
def test_asking_for_some_intervals_gives_exactly_those_candles(trades, wanted):
    everything = aggregate(trades)
    assert aggregate(trades, wanted) == {key: c for key, c in everything.items() if c.interval in wanted}


# --- properties of bucket_start -------------------------------------------------


@given(
    ts=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]),
    ),
    name=st.sampled_from(list(INTERVALS)),
)
def test_a_bucket_starts_on_an_epoch_multiple_and_holds_the_timestamp(ts, name):
    start = bucket_start(ts, name)
    assert start.tzinfo is UTC
    assert start <= ts < start + INTERVALS[name]
    assert (start - datetime(1970, 1, 1, tzinfo=UTC)) % INTERVALS[name] == timedelta(0)


# --- boundaries, by example --------------------------------------------------------


@pytest.mark.parametrize("name", list(INTERVALS))
def test_a_trade_at_midnight_utc_starts_every_bucket_of_the_new_day(name):
    midnight = utc(2024, 1, 1)
    assert bucket_start(midnight, name) == midnight


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("1m", utc(2023, 12, 31, 23, 59)),
        ("5m", utc(2023, 12, 31, 23, 55)),
        ("15m", utc(2023, 12, 31, 23, 45)),
        ("1h", utc(2023, 12, 31, 23)),
        ("4h", utc(2023, 12, 31, 20)),
        ("1d", utc(2023, 12, 31)),
    ],
)
def test_the_last_microsecond_of_a_year_belongs_to_the_old_year(name, start):
    assert bucket_start(utc(2023, 12, 31, 23, 59, 59, 999_999), name) == start


@pytest.mark.parametrize("hour", range(24))
def test_4h_buckets_start_at_00_04_08_12_16_and_20_utc(hour):
    day = utc(2024, 3, 10)
    start = day + timedelta(hours=hour - hour % 4)
    assert bucket_start(day + timedelta(hours=hour), "4h") == start
    assert bucket_start(day + timedelta(hours=hour, minutes=59, seconds=59, microseconds=999_999), "4h") == start


@pytest.mark.parametrize(
    ("ts", "day"),
    [
        (utc(2024, 2, 29), utc(2024, 2, 29)),
        (utc(2024, 2, 29, 23, 59, 59, 999_999), utc(2024, 2, 29)),
        (utc(2024, 3, 1), utc(2024, 3, 1)),
        (utc(2000, 2, 29, 12), utc(2000, 2, 29)),
        (utc(2100, 3, 1, 0, 0, 0, 1), utc(2100, 3, 1)),  # 2100 is not a leap year
        (utc(1969, 12, 31, 23, 59, 59), utc(1969, 12, 31)),  # before the epoch: floored, not truncated
    ],
)
def test_days_are_utc_calendar_days_including_leap_days(ts, day):
    assert bucket_start(ts, "1d") == day


def test_one_interval_can_be_asked_for_by_name():
    trades = [trade(utc(2024, 1, 1, 13, 37))]
    assert aggregate(trades, "1h") == aggregate(trades, ["1h"])


def test_no_trades_make_no_candles():
    assert aggregate([]) == {}
    assert merge_maps({}, {}) == {}


def test_a_batch_across_midnight_makes_one_candle_per_day():
    trades = [
        trade(utc(2023, 12, 31, 23, 59, 59, 999_999), ident="a", price="10"),
        trade(utc(2024, 1, 1), ident="b", price="20"),
    ]
    days = {key: c for key, c in aggregate(trades, ["1d"]).items()}
    assert set(days) == {("AAPL", "1d", utc(2023, 12, 31)), ("AAPL", "1d", utc(2024, 1, 1))}
    assert days[("AAPL", "1d", utc(2024, 1, 1))].open == Decimal("20")


def test_a_timestamp_in_another_zone_is_bucketed_by_its_utc_time():
    # 05:29:59 at +05:30 is 23:59:59 UTC the day before; the half-hour offset also moves the hour.
    ts = datetime(2024, 1, 1, 5, 29, 59, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert bucket_start(ts, "1d") == utc(2023, 12, 31)
    assert bucket_start(ts, "1h") == utc(2023, 12, 31, 23)


def test_a_naive_timestamp_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        bucket_start(datetime(2024, 1, 1), "1m")


def test_open_and_close_follow_the_order_key_not_the_arrival_order():
    ts = utc(2024, 5, 1, 12)
    trades = [
        trade(ts, ident="c", seq=1, price="3"),
        trade(ts, ident="b", seq=0, price="2"),
        trade(ts, ident="a", seq=1, price="1"),  # same ts and seq as "c": the id breaks the tie
        trade(ts - US, ident="z", seq=9, price="4"),
    ]
    for order in (trades, trades[::-1], random.Random(7).sample(trades, len(trades))):
        candle = aggregate(order, ["1m"])[("AAPL", "1m", ts)]
        assert (candle.open, candle.close) == (Decimal("2"), Decimal("3"))
        assert candle.first_key == (ts, 0, "b") and candle.last_key == (ts, 1, "c")


def test_the_largest_trades_the_schema_allows_sum_exactly():
    price, size = MAX_PRICE - Decimal("0.00000001"), MAX_SIZE - Decimal("0.00000001")  # 20 and 24 digits
    trades = [trade(utc(2024, 1, 1), ident=f"T{i}", seq=i, price=str(price), size=str(size)) for i in range(3)]
    candle = aggregate(trades, ["1m"])[("AAPL", "1m", utc(2024, 1, 1))]
    assert Fraction(candle.notional) == 3 * Fraction(price) * Fraction(size)  # 44 significant digits
    assert candle.volume == 3 * size
    assert candle.vwap == price


# --- vwap rounding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("notional", "volume", "expected"),
    [
        ("1.000000005", "1", "1.00000000"),  # a tie rounds to even (down)
        ("1.000000015", "1", "1.00000002"),  # a tie rounds to even (up)
        ("1.0000000050000001", "1", "1.00000001"),  # just above a tie: up
        ("1", "3", "0.33333333"),
        ("2", "3", "0.66666667"),
        ("187.5", "1", "187.50000000"),
    ],
)
def test_vwap_is_rounded_half_to_even_to_8_places(notional, volume, expected):
    ts = utc(2024, 1, 1)
    candle = CandleAggregate(
        symbol="AAPL", interval="1m", start=ts, open=Decimal(1), high=Decimal(1), low=Decimal(1), close=Decimal(1),
        volume=Decimal(volume), trades=1, notional=Decimal(notional),
        first_ts=ts, first_seq=0, first_trade_id="a", last_ts=ts, last_seq=0, last_trade_id="a",
    )  # fmt: skip
    assert str(candle.vwap) == expected
    assert str(vwap(Decimal(notional), Decimal(volume))) == expected  # the same rule for a stored row


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=16, allow_nan=False,
                   allow_infinity=False),
       st.decimals(min_value=Decimal("1e-8"), max_value=Decimal("1e12"), places=8, allow_nan=False,
                   allow_infinity=False))
def test_vwap_equals_the_exact_quotient_rounded_once_half_to_even(notional, volume):
    exact = Fraction(notional) / Fraction(volume) * 10**8
    assert vwap(notional, volume) == Decimal(round(exact)).scaleb(-8)  # round() of a Fraction: half to even


# --- errors -------------------------------------------------------------------------


def test_an_unknown_interval_is_refused_with_the_allowed_ones_listed():
    message = f"Unknown candle interval '2m': use one of {ALLOWED}."
    for call in (
        lambda: parse_interval("2m"),
        lambda: bucket_start(utc(2024, 1, 1), "2m"),
        lambda: aggregate([trade(utc(2024, 1, 1))], ["1m", "2m"]),
    ):
        with pytest.raises(UnknownInterval) as caught:
            call()
        assert str(caught.value) == message
        assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("text", ["1M", " 1m", "1min", "", "60m"])
def test_parse_interval_accepts_only_exact_names(text):
    with pytest.raises(ValueError, match="use one of 1m, 5m, 15m, 1h, 4h, 1d"):
        parse_interval(text)


def test_parse_interval_returns_a_known_name():
    assert [parse_interval(name) for name in INTERVALS] == ["1m", "5m", "15m", "1h", "4h", "1d"]


def test_intervals_are_ordered_finest_first():
    assert list(INTERVALS.items()) == [
        ("1m", timedelta(minutes=1)),
        ("5m", timedelta(minutes=5)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("4h", timedelta(hours=4)),
        ("1d", timedelta(days=1)),
    ]


def test_candles_of_different_buckets_do_not_merge():
    a = aggregate([trade(utc(2024, 1, 1, 0, 0))], ["1m"])[("AAPL", "1m", utc(2024, 1, 1, 0, 0))]
    b = aggregate([trade(utc(2024, 1, 1, 0, 1), ident="T2")], ["1m"])[("AAPL", "1m", utc(2024, 1, 1, 0, 1))]
    with pytest.raises(ValueError, match="different buckets"):
        merge(a, b)
    with pytest.raises(ValueError, match="different buckets"):
        merge(a, msgspec.structs.replace(a, symbol="MSFT"))
    with pytest.raises(ValueError, match="different buckets"):
        merge(a, msgspec.structs.replace(a, interval="5m"))


# Six places: below a millionth, str() of any Decimal is in exponent notation (1E-8), however written.
@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-10**30, max_value=10**30),
       st.integers(min_value=0, max_value=6))
def test_plain_writes_a_decimal_without_trailing_zeros_or_an_exponent(value, zeros):
    padded = value.quantize(Decimal(1).scaleb(-8 - zeros), context=Context(prec=80))  # 230 -> 230.00000000...
    text = str(plain(padded))
    assert Decimal(text) == value
    assert "E" not in text and "e" not in text
    assert not ("." in text and text.endswith("0"))
    assert str(plain(Decimal("2.3E+2"))) == "230" and str(plain(Decimal("1E+2"))) == "100"
    assert str(plain(Decimal("0.00"))) == "0" and str(plain(Decimal("230.50"))) == "230.5"


@given(base=prices(), last=prices())
def test_a_change_in_percent_is_the_exact_ratio_rounded_half_even_to_cents_never_minus_zero(base, last):
    percent = change_percent(last - base, base)
    assert percent.as_tuple().exponent == -2
    assert Fraction(percent) == round(Fraction(last - base) / Fraction(base) * 100, 2)  # round(): half to even
    assert not (percent.is_zero() and percent.is_signed())


def test_a_change_in_percent_of_a_tiny_fall_is_zero():
    assert f"{change_percent(Decimal('-0.01'), Decimal('1000')):f}" == "0.00"
    assert f"{change_percent(Decimal('-2'), Decimal('8')):f}" == "-25.00"
