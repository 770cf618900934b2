"""Recorded trades and quotes from CSV rows (or JSON lines), as ``Trade`` and ``Quote`` messages.

Pure: no Django, no I/O, no clock. The ``replay`` command opens the file
(plain or compressed) and hands its lines to ``ReplayParser.parse_lines``; this
module turns them into messages. ``docs/replay.md`` is the user's guide; the
rules, briefly:

* **Columns** are found by name (``DEFAULT_COLUMNS``; an exact match, else
  case-insensitively), or named explicitly with overrides; a file without a
  header row is given its column names. A row with a price is a trade; a row
  with no price but a bid and an ask is a quote.
* **Timestamps** are ISO-8601 (``Z`` or an offset; a naive one is in ``timezone``,
  UTC unless given) or epoch numbers whose unit (s, ms, us, ns) is read from
  their magnitude unless ``epoch_unit`` says, or, with a ``time_format``,
  strptime's reading of it. Digits beyond the microsecond are truncated. A
  ``date`` column is put before the time of a ``time`` column.
* **Prices and sizes** are parsed exactly, as ``Decimal`` from the text, and
  published as the REST API writes them (``230.1``, not the file's ``230.10``).
* **Side**: buy/sell and their usual spellings; when empty or absent, the tick
  rule per symbol (uptick buy, downtick sell, unchanged repeats the previous
  side, the first trade is a buy), against the latest trade in time order: a
  late print takes its side from it but moves nothing.
* **Ids** are stable: ``r-`` (trades) or ``rq-`` (quotes) and a 24-hex-digit
  blake2b of the row's symbol, time and values and the vendor's id of the
  trade or quote (an ``id`` column: Binance's ``id``, Polygon's
  ``sequence_number``), or, without one, of its side too and ``k``, the
  number of identical rows before it. Replaying a file again gives the same
  ids, so consumers drop the second copy; two identical rows are two trades
  unless they share a vendor id. The id depends on values, not spelling:
  ``230.10`` and ``230.1``, or a time in ISO and in epoch ms, give the same
  id. ``k`` counts identical rows at the latest timestamp of the symbol's
  trades (or quotes), and late rows (older than an earlier one) apart, among
  themselves (``_TimeOrder``, ``_LateRows``): memory stays bounded, and a
  late row neither takes the id of a row in order nor breaks their count.
* ``seq`` counts each symbol's trades from 1 in file order; event times are
  kept as recorded.
* **JSON lines** (one object per line) are read as rows (``JsonLines``): the
  first object's keys, nested objects' as dotted paths, are the header; numbers
  keep their text, so prices stay exact.

A bad row raises ``ReplayError`` naming the line and the reason, or, with an
``on_error`` callback, is reported and skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_FLOOR, Context, Decimal, Inexact, InvalidOperation, Overflow
from functools import partial
from hashlib import blake2b
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streaming.schemas import (
    MAX_PRICE, MAX_SIZE, SYMBOL_RULE, Quote, Trade, check_decimal, is_valid_symbol, symbol_upper,
)
from streaming.wire import UtcTexts, WireMessage, epoch_us, epoch_us_time, quote_bytes, trade_bytes

EpochUnit = Literal["s", "ms", "us", "ns"]
EPOCH_UNITS: tuple[EpochUnit, ...] = ("s", "ms", "us", "ns")

# Candidate column names per role, in order of preference, lower case.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "time", "ts", "datetime", "date_time", "trade_time", "event_time",
                  "sip_timestamp", "participant_timestamp", "transact_time", "ts_event", "gmt time", "time (utc)",
                  "date"),
    "price": ("price", "trade_price", "px", "last", "last_price"),
    "size": ("size", "qty", "quantity", "volume", "amount", "shares", "trade_size"),
    "symbol": ("symbol", "ticker", "sym", "instrument"),
    "side": ("side", "aggressor", "aggressor_side", "taker_side", "direction", "tks"),
    "buyer_is_maker": ("is_buyer_maker", "buyer_is_maker", "isbuyermaker", "buyer_maker"),
    "bid": ("bid", "bid_price", "bid_px", "bidprice"),
    "ask": ("ask", "ask_price", "ask_px", "askprice", "offer", "offer_price"),
    "bid_size": ("bid_size", "bid_qty", "bidsize", "bid_sz", "bid_volume", "bidvolume"),
    "ask_size": ("ask_size", "ask_qty", "asksize", "ask_sz", "offer_size", "ask_volume", "askvolume"),
    # The vendor's id of the trade or quote. Polygon has both sequence_number (unique per ticker and day)
    # and id (unique per ticker, exchange and TRF): the first is the finer.
    "id": ("trade_id", "tradeid", "agg_trade_id", "sequence_number", "id"),
    # The day of a time column that holds only the time of day (Date,Time,Price,Volume exports); by default
    # taken only beside a column named "time" (see _column_positions).
    "date": ("date", "trade_date"),
}

SIDES: dict[str, Literal["buy", "sell"]] = {
    **dict.fromkeys(("buy", "b", "bid", "buyer", "bought", "1", "+1"), "buy"),
    **dict.fromkeys(("sell", "s", "ask", "a", "offer", "seller", "sold", "-1"), "sell"),
}
# Side values that say the side is not known (Databento's N): inferred, as an empty cell is.
UNKNOWN_SIDES = frozenset(("n", "none", "unknown"))
# A buyer_is_maker column (Binance's is_buyer_maker): the buyer's order was resting, so the taker sold.
BUYER_IS_MAKER: dict[str, Literal["buy", "sell"]] = {
    **dict.fromkeys(("true", "t", "1", "yes", "y"), "sell"),
    **dict.fromkeys(("false", "f", "0", "no", "n"), "buy"),
}
# Magnitude tells an epoch number's unit only from here on (1973-03-03 in seconds): a smaller number
# read by its magnitude is far more likely a time of day or a date (93001, 20260105) than a 1970 time.
_MIN_GUESSED_EPOCH = 10**8
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+")
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?")

_US_PER_UNIT_EXP = {"s": 6, "ms": 3, "us": 0, "ns": -3}
_MIN_US = epoch_us(datetime.min.replace(tzinfo=UTC))
_MAX_US = epoch_us(datetime.max.replace(tzinfo=UTC))


class ReplayError(ValueError):
    """A row (``line`` set) or the file as a whole (``line`` None) cannot be replayed."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


@dataclass(frozen=True)
class ColumnMapping:
    """Which header column plays which role; ``None`` when the file has no such column."""

    timestamp: str
    price: str | None = None
    size: str | None = None
    symbol: str | None = None
    side: str | None = None
    buyer_is_maker: str | None = None
    bid: str | None = None
    ask: str | None = None
    bid_size: str | None = None
    ask_size: str | None = None
    id: str | None = None
    date: str | None = None


class UnreadableRow(ValueError):
    """A line of a JSON-lines file that is no row: the reader has consumed it and can go on."""


class JsonLines:
    """The rows of a JSON-lines file, as a CSV reader gives a CSV's: first the header, the keys of
    the first object (a nested object's as ``outer.inner``), then each object's values in that
    order, as text: strings as they are, numbers as written (``0.10`` stays exact), ``true`` and
    ``false``, null and a missing key empty, a list as its JSON. Keys the first object lacks are
    not read; ``header_refused`` makes the next object the header instead (a recording that
    starts with a subscription's acknowledgement). A line that is not a JSON object raises
    ``UnreadableRow`` and the next call reads on. ``line_num`` is the line last read, as
    ``csv.reader``'s."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.line_num = 0
        self._header: list[str] | None = None
        self._first_row: list[str] | None = None

    def __iter__(self) -> JsonLines:
        return self

    def header_refused(self) -> None:
        self._header = self._first_row = None

    def __next__(self) -> list[str]:
        if self._first_row is not None:
            row, self._first_row = self._first_row, None
            return row
        line = next(self._lines)
        self.line_num += 1
        if not line.strip():
            return []
        try:
            obj = json.loads(line, parse_float=str, parse_int=str, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise UnreadableRow(f"not JSON: {line.strip()[:60]!r}") from None
        if not isinstance(obj, dict):
            raise UnreadableRow(f"not a JSON object: {line.strip()[:60]!r}")
        fields = _flat_fields(obj, "")
        if self._header is None:
            self._header = list(fields)
            self._first_row = list(fields.values())
            return self._header
        return [fields.get(key, "") for key in self._header]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON has")


def _flat_fields(obj: dict, prefix: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in obj.items():
        name = prefix + key
        if isinstance(value, str):
            fields[name] = value
        elif isinstance(value, dict):
            fields.update(_flat_fields(value, name + "."))
        elif isinstance(value, list):
            fields[name] = json.dumps(value)
        else:
            fields[name] = "" if value is None else "true" if value is True else "false" if value is False else value
    return fields


def _clean(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip()


def mapping_from_header(header: Sequence[str], overrides: Mapping[str, str | None] | None = None) -> ColumnMapping:
    """Resolve each role to a column of ``header``.

    Names match case-insensitively, an exact match first: of ``S`` and ``s``,
    ``S`` is the column named ``S``, and a name that two columns share, in any
    case, without one of them matching it exactly, is refused as ambiguous.
    ``overrides`` maps a role to a column name, or to ``None`` to ignore a
    column the defaults would pick (e.g. a ``side`` column that means
    something else). Raises ``ReplayError`` naming what is missing and the
    header found.
    """
    return _named(header, _column_positions(header, overrides))


def _named(header: Sequence[str], positions: Mapping[str, int | None]) -> ColumnMapping:
    return ColumnMapping(**{role: None if i is None else header[i] for role, i in positions.items()})


def _column_positions(header: Sequence[str], overrides: Mapping[str, str | None] | None) -> dict[str, int | None]:
    """Each role's index in ``header`` (None: no such column); see ``mapping_from_header``."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_COLUMNS))
    if unknown:
        raise ReplayError(f"unknown column role(s) {unknown}: the roles are {', '.join(DEFAULT_COLUMNS)}")
    exact = [_clean(name) for name in header]
    folded = [name.lower() for name in exact]

    def position(name: str, role: str) -> int | None:
        name = _clean(name)
        matches = [i for i, column in enumerate(exact) if column == name]
        if not matches:
            matches = [i for i, column in enumerate(folded) if column == name.lower()]
        if len(matches) > 1:
            raise ReplayError(f"{len(matches)} columns of the header {list(header)} are named {name!r}: "
                              f"map the one meant for {role} by its exact name (--column {role}=NAME)")
        return matches[0] if matches else None

    found: dict[str, int | None] = {}
    for role, candidates in DEFAULT_COLUMNS.items():
        if role in overrides:
            wanted = overrides[role]
            found[role] = None if wanted is None else position(wanted, role)
            if wanted is not None and found[role] is None:
                raise ReplayError(f"column {wanted!r} given for {role} is not in the header {list(header)}")
        else:
            found[role] = next((i for c in candidates if (i := position(c, role)) is not None), None)

    if found["date"] is not None:
        if found["date"] == found["timestamp"]:
            if "date" in overrides:
                raise ReplayError(f"column {overrides['date']!r} given for date is the timestamp column: map the "
                                  "column with the time of day (--column timestamp=NAME)")
            found["date"] = None
        elif "date" not in overrides and found["timestamp"] is not None \
                and folded[found["timestamp"]] != "time":
            found["date"] = None  # a date beside a full timestamp (say, a session date) is not part of it

    def missing(role: str) -> str:
        return f"no {role} column (looked for {', '.join(DEFAULT_COLUMNS[role])})"

    problems = []
    if found["timestamp"] is None:
        problems.append(missing("timestamp"))
    has_trades = found["price"] is not None
    has_quotes = found["bid"] is not None and found["ask"] is not None
    if has_trades and found["size"] is None:
        problems.append(missing("size"))
    if not has_trades and not has_quotes:
        problems.append(f"{missing('price')}, and no bid and ask columns for quotes")
    if problems:
        raise ReplayError(
            f"cannot replay this file: {'; '.join(problems)}. Header found: {list(header)}. "
            f"{_header_hint(header)}Map the columns by name: --column ROLE=NAME, e.g. --column timestamp=<name>."
        )
    return found


def _header_hint(header: Sequence[str]) -> str:
    """What a header that names no column usually means, if it looks like it."""
    if len(header) == 1:
        for delimiter, called in ((";", "';'"), ("\t", "'\\t'"), ("|", "'|'")):
            if delimiter in header[0]:
                return f"It is one field: are the fields delimited by {called}? (--delimiter {called}) "
    cells = [_clean(cell) for cell in header if cell.strip()]
    if cells and 2 * sum(map(_looks_like_a_value, cells)) >= len(cells):
        return ("Its first line looks like data, not a header: if the file has no header row, name its columns "
                "(--columns NAME,NAME,...). ")
    return ""


def _looks_like_a_value(cell: str) -> bool:
    try:
        Decimal(cell)
        return True
    except InvalidOperation:
        pass
    try:
        datetime.fromisoformat(cell)
        return True
    except ValueError:
        return cell.lower() in ("true", "false")


def parse_timestamp(text: str, *, epoch_unit: EpochUnit | None = None, time_format: str | None = None,
                    timezone: str | None = None) -> datetime:
    """A timestamp as a UTC datetime with microsecond precision (see ``time_reader``)."""
    return epoch_us_time(time_reader(epoch_unit=epoch_unit, time_format=time_format, timezone=timezone)(text))


def time_reader(*, epoch_unit: EpochUnit | None = None, time_format: str | None = None,
                timezone: str | None = None, latest: datetime | None = None) -> Callable[[str], int]:
    """How a file writes its times: the function from a timestamp's text to microseconds since the epoch
    (part of the id), raising ``ReplayError`` for a text it cannot read.

    Without ``time_format``, a timestamp is ISO-8601 or an epoch number (the module docstring); with it, every
    timestamp is read by ``datetime.strptime`` with it. A time without an offset is in ``timezone`` (an IANA
    name; UTC when None); epoch numbers are UTC by definition. A time after ``latest`` is refused (a recording
    holds no future). Raises ``ReplayError`` for a bad unit, format or zone, before any row is read.
    """
    if epoch_unit is not None and epoch_unit not in EPOCH_UNITS:
        raise ReplayError(f"epoch unit {epoch_unit!r} is not one of {', '.join(EPOCH_UNITS)}")
    if epoch_unit is not None and time_format is not None:
        raise ReplayError("an epoch unit and a time format exclude each other: a file's times are epoch numbers "
                          "or written in a format")
    zone = _zone(timezone)
    latest_us = _MAX_US if latest is None else epoch_us(latest)
    if time_format is None:
        return partial(_timestamp_us, epoch_unit=epoch_unit, zone=zone, latest_us=latest_us)
    _check_time_format(time_format)

    def formatted(text: str) -> int:
        s = text.strip()
        if not s:
            raise ReplayError("the timestamp is empty")
        try:
            value = datetime.strptime(s, time_format)
        except ValueError:
            raise ReplayError(f"timestamp {s!r} does not match the time format {time_format!r}") from None
        us = _in_range_us(value if value.tzinfo is not None else _localized(value, zone, s), s)
        if us > latest_us:
            raise _in_the_future(s, us, latest_us)
        return us

    return formatted


def _in_the_future(text: str, us: int, latest_us: int) -> ReplayError:
    ahead = timedelta(microseconds=us - latest_us)
    return ReplayError(f"timestamp {text!r} is in the future ({_ahead(ahead)} past this machine's clock): is its "
                       "time zone right? (--timezone)")


def _ahead(span: timedelta) -> str:
    if span >= timedelta(days=2):
        return f"{span.days} days"
    if span >= timedelta(hours=2):
        return f"{span // timedelta(hours=1)} hours"
    return f"{max(1, span // timedelta(minutes=1))} min"


def _zone(name: str | None) -> tzinfo | None:
    """The zone of times written without an offset; None for UTC."""
    if name is None or name.strip().upper() in ("UTC", "Z"):
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ReplayError(f"time zone {name!r} is not known: give an IANA name, such as America/New_York, "
                          "Europe/London or UTC") from None


# A time a format must write back and read again: one with a fraction, in the afternoon (%I with %p).
_SAMPLE_TIME = datetime(2026, 1, 5, 14, 30, 1, 658000, tzinfo=UTC)


def _check_time_format(time_format: str) -> None:
    """Refuse a format that strptime cannot read, or that lacks the year or the hour: strptime would
    take 1900 or midnight for them without a word."""
    if not any(d in time_format for d in ("%Y", "%y", "%c")) or \
            not any(d in time_format for d in ("%H", "%I", "%X", "%c")):
        raise ReplayError(f"time format {time_format!r} needs the year (%Y or %y) and the hour (%H, or %I with "
                          "%p) at least: a date alone or a time of day alone is not a timestamp")
    try:
        datetime.strptime(_SAMPLE_TIME.strftime(time_format), time_format)
    except ValueError as error:
        raise ReplayError(f"time format {time_format!r} cannot be read: {error}. It takes strptime's "
                          "directives, e.g. '%d.%m.%Y %H:%M:%S.%f'") from None


def _localized(naive: datetime, zone: tzinfo | None, text: str) -> datetime:
    """A time written without an offset, in ``zone`` (None: UTC). Of an hour the clocks repeat, the
    first; an hour they skip is refused."""
    if zone is None:
        return naive.replace(tzinfo=UTC)
    value = naive.replace(tzinfo=zone)
    try:
        exists = value.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive
    except OverflowError:
        raise ReplayError(f"timestamp {text!r} is out of range in UTC (years 1 to 9999)") from None
    if not exists:
        raise ReplayError(f"timestamp {text!r} does not exist in {zone} (the clocks skipped it)")
    return value


def _in_range_us(value: datetime, text: str) -> int:
    us = epoch_us(value)
    if not _MIN_US <= us <= _MAX_US:  # an offset took it past year 1 or 9999 in UTC
        raise ReplayError(f"timestamp {text!r} is out of range in UTC (years 1 to 9999)")
    return us


def _timestamp_us(text: str, epoch_unit: EpochUnit | None, zone: tzinfo | None, latest_us: int) -> int:
    """An ISO-8601 or epoch timestamp in microseconds since the epoch."""
    s = text.strip()
    if not s:
        raise ReplayError("the timestamp is empty")
    if epoch_unit is None and (":" in s or "T" in s or s.count("-") >= 2):
        if _DATE_ONLY.fullmatch(s):
            raise ReplayError(f"timestamp {s!r} is a date without a time of day: give both, as ISO-8601 "
                              "(a file with the time of day in a column of its own: see --column date=NAME)")
        try:
            value = datetime.fromisoformat(s)
        except (ValueError, OverflowError):
            if _TIME_OF_DAY.fullmatch(s):
                raise ReplayError(f"timestamp {s!r} is a time of day without a date: if the date is in a column "
                                  "of its own, name it (--column date=NAME)") from None
            raise ReplayError(f"timestamp {s!r} is neither ISO-8601 nor an epoch number: give the format of "
                              "such times, e.g. --time-format '%m/%d/%Y %H:%M:%S'") from None
        # Written out: this runs for every new timestamp of a file.
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC) if zone is None else _localized(value, zone, s)
        us = epoch_us(value)
        if not _MIN_US <= us <= _MAX_US:  # an offset took it past year 1 or 9999 in UTC
            raise ReplayError(f"timestamp {s!r} is out of range in UTC (years 1 to 9999)")
    else:
        us = _epoch_microseconds(s, epoch_unit)
    if us > latest_us:
        raise _in_the_future(s, us, latest_us)
    return us


def _epoch_microseconds(s: str, unit: EpochUnit | None) -> int:
    try:
        if "." in s or "e" in s or "E" in s:
            number: int | Decimal = Decimal(s)
            if not number.is_finite() or number.adjusted() > 30:
                raise ValueError
        else:
            number = int(s)
    except (ValueError, InvalidOperation):
        raise ReplayError(f"timestamp {s!r} is neither ISO-8601 nor an epoch number") from None
    if unit is None:
        if number < _MIN_GUESSED_EPOCH:
            raise ReplayError(
                f"timestamp {s!r} is too small to be read as an epoch time by its magnitude (before 1973): "
                "a time of day or a date alone is not a timestamp (give both, ISO-8601); for an epoch time "
                "that early, give its unit (--epoch-unit)")
        # Below 1e11 is seconds (until the year 5138), below 1e14 milliseconds,
        # below 1e17 microseconds, nanoseconds above.
        unit = "s" if number < 10**11 else "ms" if number < 10**14 else "us" if number < 10**17 else "ns"
    exponent = _US_PER_UNIT_EXP[unit]
    if isinstance(number, int):
        us = number * 10**exponent if exponent >= 0 else number // 10**-exponent
    else:
        us = int(number.scaleb(exponent).to_integral_value(rounding=ROUND_FLOOR))
    if not _MIN_US <= us <= _MAX_US:
        raise ReplayError(f"timestamp {s!r} read as epoch {unit} is out of range (years 1 to 9999)")
    return us


def _decimal(text: str, name: str, decimal_comma: bool = False) -> Decimal:
    """A finite decimal parsed exactly from ``text`` (its decimal mark a comma if ``decimal_comma``), or a
    ``ReplayError`` saying what is wrong."""
    if not text.strip():
        raise ReplayError(f"the {name} is empty")
    try:
        value = Decimal(text.replace(",", ".") if decimal_comma else text)
    except InvalidOperation:
        hint = ""
        if not decimal_comma and _DECIMAL_COMMA.fullmatch(text.strip()):
            hint = " (a decimal comma? --decimal-comma reads it)"
        raise ReplayError(f"{name} {text.strip()!r} is not a number{hint}") from None
    if not value.is_finite():
        raise ReplayError(f"{name} {text.strip()!r} is not a finite number")
    return value


_NUMBER_CACHE_SIZE = 50_000

# A fresh blake2b of the ids' digest size: copying it costs a third less than building one with its keyword.
_new_digest = blake2b(digest_size=12).copy

Number = tuple[Decimal, str, str]
"""A parsed price or size: its value, its canonical spelling for ids, and its text on the wire."""

# The contract's rule for each number field: (maximum, zero allowed).
_RULES: dict[str, tuple[Decimal, bool]] = {
    "price": (MAX_PRICE, False), "size": (MAX_SIZE, False), "bid": (MAX_PRICE, False), "ask": (MAX_PRICE, False),
    "bid_size": (MAX_SIZE, True), "ask_size": (MAX_SIZE, True),
}


def _number(text: str, name: str, cache: dict[str, Number], exponent: int | None = None,
            decimal_comma: bool = False) -> Number:
    """The number of ``text`` as the field ``name``, times 10**exponent (a price scale, None when none was
    given), checked against the contract and remembered in ``cache`` (one per field): prices and sizes repeat
    a lot, so each spelling is parsed and checked once.

    The id hashes values, not their spelling: 230.10 and 230.1 are one price,
    both spelled 230.1 in the hash.
    """
    value = _decimal(text, name, decimal_comma)
    if exponent:
        # Fixed-point 262400000000 at 1e-9 is 262.4, written so: not 262.400000000, nor 2.6E+3 for 2600.
        try:
            value = Decimal(format(value.scaleb(exponent, _SCALING_CONTEXT).normalize(_SCALING_CONTEXT), "f"))
        except ArithmeticError:  # more digits than any price has, or an exponent past any range
            raise ReplayError(f"{name} {text.strip()!r} at the price scale 1e{exponent} is out of range") from None
    maximum, allow_zero = _RULES[name]
    try:
        check_decimal(name, value, maximum=maximum, allow_zero=allow_zero)
    except ValueError as exc:  # positive, at most 8 places, ...
        hint = ""
        if value > maximum and maximum == MAX_PRICE and exponent is None:
            hint = " (for fixed-point prices, such as Databento's in units of 1e-9, give the scale: --price-scale 1e-9)"
        raise ReplayError(f"{exc}{hint}") from None
    if len(cache) >= _NUMBER_CACHE_SIZE:
        cache.clear()
    # Published as the REST API writes it (230.1, not the file's 230.10), and so the struct's value.
    wire = f"{value.normalize(_CANONICAL_CONTEXT):f}" if value else "0"
    cache[text] = result = (Decimal(wire), _canonical(value, name), wire)
    return result


def price_scale_exponent(scale: str | Decimal) -> int:
    """The exponent of a price scale that is a power of ten ("1e-9", "0.0001", "1"), or a ReplayError."""
    try:
        value = Decimal(scale).normalize(_CANONICAL_CONTEXT)
    except (InvalidOperation, ValueError):
        value = Decimal(0)
    if not value.is_finite() or value.as_tuple()[:2] != (0, (1,)):
        raise ReplayError(f"price scale {str(scale)!r} is not a power of ten, such as 1e-9, 0.0001 or 1")
    return int(value.as_tuple().exponent)


# Wide enough for every value the contract accepts; independent of the caller's context.
_CANONICAL_CONTEXT = Context(prec=60)
# Scaling a price must be exact: a value it would round is refused instead.
_SCALING_CONTEXT = Context(prec=60, traps=[Inexact, Overflow, InvalidOperation])


def _canonical(value: Decimal, name: str) -> str:
    if not value:
        return "0"  # -0 and 0E-8 are the value zero (ids depend on values, not spelling)
    try:
        return str(value.normalize(_CANONICAL_CONTEXT))
    except ArithmeticError:  # an exponent beyond any context: 1e9999999
        raise ReplayError(f"{name} {value} is out of range") from None


class _TimeOrder:
    """Where one stream of a symbol (its trades, or its quotes) is in time: its latest timestamp,
    the rows at it by their values, and the rows older than it."""

    __slots__ = ("counts", "late_rows", "max_ts", "min_ts")

    def __init__(self) -> None:
        self.max_ts = self.min_ts = _MIN_US - 1
        self.counts: dict[tuple, int] = {}
        self.late_rows = 0

    def saw(self, ts_us: int) -> bool:
        """Take a good row's timestamp; whether the row is in time order (no older than the rows before)."""
        if ts_us >= self.max_ts:
            if ts_us > self.max_ts:
                if self.max_ts < _MIN_US:  # the stream's first row
                    self.min_ts = ts_us
                self.max_ts = ts_us
                self.counts = {}
            return True
        self.late_rows += 1
        self.min_ts = min(self.min_ts, ts_us)
        return False

    def occurrence(self, key: tuple) -> int:
        """The k of a row in time order: how many rows with its values came before it at its timestamp."""
        k = self.counts.get(key, 0)
        self.counts[key] = k + 1
        return k


class _SymbolState:
    __slots__ = ("last_price", "last_side", "quote_times", "quotes", "seq", "trade_times")

    def __init__(self) -> None:
        self.seq = 0  # trades so far
        self.quotes = 0
        self.last_price: Decimal | None = None
        self.last_side: Literal["buy", "sell"] = "buy"
        self.trade_times = _TimeOrder()
        self.quote_times = _TimeOrder()  # apart: a symbol's quotes and trades interleave, each in its order


class _LateRows:
    """The ``k`` of late rows without a vendor id (older than an earlier row of their stream).

    A row in time order takes its ``k`` among the rows at its stream's latest timestamp
    (``_TimeOrder.occurrence``: ``0``, ``1``...); a late row (a late print) among the late rows
    identical to it (``L0``, ``L1``...), so that late rows never take the number of a row in order,
    nor stop the count of the rows around them. Late rows are remembered up to ``capacity``; past
    it they are forgotten, and the late rows after that are counted in ``unsure`` (one identical to
    a forgotten one would have its id, and one of the two be dropped as a replay).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.unsure = 0
        self._counts: dict[tuple[str, int, tuple], int] = {}
        self._forgot = False

    def occurrence(self, symbol: str, ts_us: int, key: tuple) -> str:
        """The ``k`` of a late row of ``symbol`` at ``ts_us`` with values ``key``, as written into its id."""
        counts = self._counts
        if len(counts) >= self.capacity:
            counts.clear()
            self._forgot = True
        if self._forgot:
            self.unsure += 1
        k = counts.get(full := (symbol, ts_us, key), 0)
        counts[full] = k + 1
        return f"L{k}"


class ReplayParser:
    """Turns CSV rows into messages, keeping the per-symbol state a file needs (seq, tick rule, ids).

    One parser per replay: state carries over between calls, so several files
    parsed in turn replay as one stream (seq keeps counting). Counters for a
    summary: ``rows``, ``trades``, ``quotes``, ``errors``, ``out_of_order_rows``.
    """

    def __init__(
        self,
        *,
        default_symbol: str | None = None,
        epoch_unit: EpochUnit | None = None,
        time_format: str | None = None,
        timezone: str | None = None,
        decimal_comma: bool = False,
        overrides: Mapping[str, str | None] | None = None,
        price_scale: str | Decimal | None = None,
        late_rows_remembered: int = 100_000,
        latest: datetime | None = None,
    ) -> None:
        """``latest``: the latest time a row may have (a recording holds no future: a row past the clock
        is a bad row); None for no limit."""
        if default_symbol is not None:
            default_symbol = _symbol(default_symbol)
            if not is_valid_symbol(default_symbol):
                raise ReplayError(f"symbol {default_symbol!r} is not valid: use {SYMBOL_RULE}")
        self.default_symbol = default_symbol
        self._read_time = time_reader(epoch_unit=epoch_unit, time_format=time_format, timezone=timezone,
                                      latest=latest)
        self.decimal_comma = decimal_comma
        self.overrides = dict(overrides or {})
        # None: not given, and a file that looks like it needs one is refused (see _use_header).
        self.price_exponent = None if price_scale is None else price_scale_exponent(price_scale)
        self.mapping: ColumnMapping | None = None
        self.errors = 0
        self.preamble_lines = 0  # JSON objects skipped before the first with a trade's or quote's fields
        self._preamble_refusal: ReplayError | None = None
        self._symbols: dict[str, _SymbolState] = {}
        self._late_rows = _LateRows(late_rows_remembered)

    # Counted per symbol on the hot path, summed here for a summary.
    @property
    def trades(self) -> int:
        return sum(state.seq for state in self._symbols.values())

    @property
    def quotes(self) -> int:
        return sum(state.quotes for state in self._symbols.values())

    @property
    def rows(self) -> int:
        """Data rows read (not counting the header and blank lines)."""
        return self.trades + self.quotes + self.errors

    @property
    def out_of_order_rows(self) -> int:
        """Rows older than an earlier row of their symbol (a trade than a trade, a quote than a quote)."""
        return sum(state.trade_times.late_rows + state.quote_times.late_rows for state in self._symbols.values())

    def earliest(self) -> dict[str, int]:
        """The earliest time (epoch µs) of the trades and of the quotes read so far, of those there were."""
        firsts = {"trades": [state.trade_times.min_ts for state in self._symbols.values() if state.seq],
                  "quotes": [state.quote_times.min_ts for state in self._symbols.values() if state.quotes]}
        return {kind: min(times) for kind, times in firsts.items() if times}

    def earliest_trade_symbol(self) -> str | None:
        """The symbol of the earliest trade read so far (None before any)."""
        firsts = [(state.trade_times.min_ts, symbol) for symbol, state in self._symbols.items() if state.seq]
        return min(firsts)[1] if firsts else None

    @property
    def unsure_rows(self) -> int:
        """Late rows without a vendor id counted after the parser forgot earlier ones: an identical
        row before such a row may have its id (see the module docstring on ids)."""
        return self._late_rows.unsure

    def parse_lines(
        self,
        lines: Iterable[str],
        *,
        delimiter: str = ",",
        header: Sequence[str] | None = None,
        json_lines: bool = False,
        on_error: Callable[[ReplayError], None] | None = None,
    ) -> Iterator[Trade | Quote]:
        """Messages from the text lines of a CSV file (or, with ``json_lines``, of a JSON-lines
        file, ``JsonLines``); lazy, one row at a time.

        The file's first row is its header, unless ``header`` names the
        columns of a file without one. Line numbers in errors are the file's.
        Without ``on_error`` the first bad row raises ``ReplayError``; with it,
        each bad row is passed to it and skipped. A bad header always raises.
        """
        reader = _reader(lines, delimiter, json_lines)
        return self._parse(reader, on_error, reader, _StructForm(), header)

    def wire_messages(
        self,
        lines: Iterable[str],
        *,
        trades_topic: str,
        quotes_topic: str,
        delimiter: str = ",",
        header: Sequence[str] | None = None,
        json_lines: bool = False,
        on_error: Callable[[ReplayError], None] | None = None,
    ) -> Iterator[WireMessage]:
        """``parse_lines`` as ready-to-publish wire messages, keyed by symbol, each value byte for byte
        ``encode()`` of the message ``parse_lines`` gives; rows are checked against the contract just the same.
        The structs are never built: that and their validation would cost more than Kafka takes to accept
        the message."""
        reader = _reader(lines, delimiter, json_lines)
        return self._parse(reader, on_error, reader, _WireForm(trades_topic, quotes_topic), header)

    def parse_rows(
        self,
        rows: Iterable[Sequence[str]],
        *,
        on_error: Callable[[ReplayError], None] | None = None,
    ) -> Iterator[Trade | Quote]:
        """Like ``parse_lines`` for rows already split into fields; the first row is the header, line 1."""
        return self._parse(rows, on_error, None, _StructForm(), None)

    def _parse(
        self,
        rows: Iterable[Sequence[str]],
        on_error: Callable[[ReplayError], None] | None,
        reader: Any | None,  # a csv reader, for the line numbers of the file
        form: _Form,
        header: Sequence[str] | None,
    ) -> Iterator:
        message = None if header is None else self._use_header(header, form)
        rows_read = 0  # the line number when there is no reader: one row per line
        iterator = iter(rows)
        while True:
            try:
                for row in iterator:
                    rows_read += 1
                    if message is None:
                        if not _is_blank(row):
                            message = self._header_or_preamble(row, form, reader)
                        continue
                    try:
                        result = message(row)
                    except ReplayError as exc:
                        # A blank line is not a row. It never parses (no timestamp), so it is told apart
                        # here, off the path of good rows.
                        if not _is_blank(row):
                            line = reader.line_num if reader is not None else rows_read
                            reason = exc.reason
                            # Rows with extra fields are read if those are empty, as a trailing comma's are.
                            if len(row) > self._width and not any(f.strip() for f in row[self._width:]):
                                reason += (f" (the row has {len(row)} fields, the header has {self._width}: a field "
                                           "with a comma in it, not in quotes?)")
                            self._report(ReplayError(reason, line=line), on_error)
                        continue
                    yield result
                break
            except csv.Error as exc:
                # The reader has consumed the bad line and can go on.
                self._report(ReplayError(f"unreadable CSV: {exc}", line=reader.line_num), on_error)
            except UnreadableRow as exc:
                self._report(ReplayError(str(exc), line=reader.line_num), on_error)
        if message is None:
            raise self._preamble_refusal or ReplayError(
                "the file is empty: expected a header row (or a JSON object) and then one row per trade or quote")

    def _header_or_preamble(self, row: Sequence[str], form: _Form, reader: Any) -> Callable[[Sequence[str]], Any] | None:
        """The header's row parser; for JSON lines, None for an object without the fields a trade or
        quote needs (a WebSocket recording's first messages are the subscription's), which is
        skipped: the next object is tried."""
        try:
            return self._use_header(row, form)
        except ReplayError as error:
            if not isinstance(reader, JsonLines):
                raise
            reader.header_refused()
            self.preamble_lines += 1
            self._preamble_refusal = self._preamble_refusal or error
            return None

    def _report(self, error: ReplayError, on_error: Callable[[ReplayError], None] | None) -> None:
        self.errors += 1
        if on_error is None:
            raise error
        on_error(error)

    def _use_header(self, header: Sequence[str], form: _Form) -> Callable[[Sequence[str]], Any]:
        positions = _column_positions(header, self.overrides)
        if positions["symbol"] is None and self.default_symbol is None:
            raise ReplayError(
                f"the file has no symbol column (looked for {', '.join(DEFAULT_COLUMNS['symbol'])}; "
                f"header found: {list(header)}): give the symbol of its rows (--symbol)"
            )
        names = {_clean(name).lower() for name in header}
        if {"rtype", "ts_event"} <= names and ("depth" not in names or names & {"bid_px_00", "order_id"}):
            raise ReplayError(
                "this looks like a Databento file of another schema than trades (MBO, MBP, BBO, statistics...): "
                "its rows are book updates or statistics as much as trades, and are not replayed; replay a file of "
                "its trades schema instead (its header has depth, and no bid_px_00 or order_id)")
        if self.price_exponent is None and {"rtype", "ts_event"} <= names:
            raise ReplayError(
                "this looks like a Databento CSV (its header has rtype and ts_event): say how its prices are "
                "written, --price-scale 1e-9 for fixed-point integers (Databento's default) or --price-scale 1 "
                "for decimals (exported with pretty_px)")
        self.mapping = _named(header, positions)
        self._bid_i = positions["bid"]
        self._ask_i = positions["ask"]
        self._bid_size_i = positions["bid_size"]
        self._ask_size_i = positions["ask_size"]
        self._id_i = positions["id"]
        self._width = len(header)
        return self._row_parser(
            form,
            width=len(header),
            ts_i=positions["timestamp"],  # type: ignore[arg-type]
            date_i=positions["date"],
            symbol_i=positions["symbol"],
            price_i=positions["price"],
            size_i=positions["size"],
            side_i=positions["side"],
            maker_i=positions["buyer_is_maker"],
            id_i=positions["id"],
        )

    def _row_parser(
        self,
        form: _Form,
        *,
        width: int,
        ts_i: int,
        date_i: int | None,
        symbol_i: int | None,
        price_i: int | None,
        size_i: int | None,
        side_i: int | None,
        maker_i: int | None,
        id_i: int | None,
    ) -> Callable[[Sequence[str]], Any]:
        """The function that turns one row into a message of ``form``, for this header.

        It is the hot path, one call per row: the column positions are bound
        as locals of a closure and the trade case is written out in it.
        """
        symbols = self._symbols
        numbers: dict[str, dict[str, Number]] = {name: {} for name in _RULES}
        prices, sizes = numbers["price"], numbers["size"]
        default_symbol = self.default_symbol
        read_time = self._read_time
        decimal_comma = self.decimal_comma
        price_exponent = self.price_exponent
        quote = self._quote
        late_occurrence = self._late_rows.occurrence
        trade_of = form.trade
        new_digest = _new_digest
        has_bid = self._bid_i is not None
        bid_i = self._bid_i or 0
        # The previous row's timestamp: many rows share one.
        last_ts_text: str | None = None
        ts_us = 0
        # The symbol and its state by the text of the symbol column, as it is spelled in the file.
        by_symbol_text: dict[str, tuple[str, _SymbolState]] = {}

        def symbol_and_state(text: str) -> tuple[str, _SymbolState]:
            symbol = _symbol(text) or default_symbol
            if symbol is None:
                raise ReplayError("the symbol is empty: fill it in, or give a default symbol (--symbol)")
            state = symbols.get(symbol)
            if state is None:
                if not is_valid_symbol(symbol):
                    raise ReplayError(f"symbol {symbol!r} is not valid: use {SYMBOL_RULE}")
                state = symbols[symbol] = _SymbolState()
            if len(by_symbol_text) >= 10_000:
                by_symbol_text.clear()
            by_symbol_text[text] = known = (symbol, state)
            return known

        def parse_row(row: Sequence[str]) -> Any:
            nonlocal last_ts_text, ts_us
            if len(row) != width and (len(row) < width or any(f.strip() for f in row[width:])):
                raise ReplayError(f"the row has {len(row)} fields, the header has {width}")

            ts_text = row[ts_i] if date_i is None else _joined_time(row[date_i], row[ts_i])
            if ts_text != last_ts_text:
                ts_us = read_time(ts_text)
                last_ts_text = ts_text

            symbol_text = row[symbol_i] if symbol_i is not None else ""
            known = by_symbol_text.get(symbol_text)
            if known is None:
                known = symbol_and_state(symbol_text)
            symbol, state = known

            price_text = row[price_i] if price_i is not None else ""
            price = prices.get(price_text)
            if price is None:
                if not price_text or price_text.isspace():
                    if has_bid and row[bid_i].strip():
                        return quote(row, symbol, state, ts_us, numbers, form.quote)
                    if has_bid and self._ask_i is not None and row[self._ask_i].strip():
                        raise ReplayError("the row has an ask but no bid (a quote needs both) and no price (a trade)")
                    raise ReplayError("the row has neither a price (a trade) nor a bid and an ask (a quote)")
                price = _number(price_text, "price", prices, price_exponent, decimal_comma)
            size_text = row[size_i]  # type: ignore[index]
            size = sizes.get(size_text) or _number(size_text, "size", sizes, None, decimal_comma)
            side_text = row[side_i] if side_i is not None else ""
            value = price[0]
            side: Literal["buy", "sell"] | None = SIDES.get(side_text)
            if side is None:
                if side_text := side_text.strip():
                    side = SIDES.get(side_text) or SIDES.get(side_text.lower())
                    if side is None and side_text.lower() not in UNKNOWN_SIDES:
                        raise ReplayError(f"side {side_text!r} is not one of {', '.join(SIDES)} (or empty, "
                                          f"or one of {', '.join(sorted(UNKNOWN_SIDES))}, to infer it)")
                if side is None and maker_i is not None and (maker_text := row[maker_i].strip()):
                    side = BUYER_IS_MAKER.get(maker_text.lower())
                    if side is None:
                        raise ReplayError(f"buyer_is_maker {maker_text!r} is neither true nor false")
                if side is None:
                    if state.last_price is None or value > state.last_price:
                        side = "buy"
                    elif value < state.last_price:
                        side = "sell"
                    else:
                        side = state.last_side

            # The row is good: only now does it move the state, so a skipped bad row leaves no trace.
            # Identical rows are counted by their canonical spellings: equal for equal values, and a
            # string's hash is remembered where a Decimal's is worked out each time.
            price_key, size_key = price[1], size[1]
            times = state.trade_times
            in_order = times.saw(ts_us)
            if id_i is not None and (vendor_id := row[id_i].strip()):
                # The vendor's id names the trade, wherever it is in whichever file: the side, which
                # the tick rule infers from the rows before it, stays out.
                text = f"{symbol}|{ts_us}|{price_key}|{size_key}|#{vendor_id}"
            else:
                key = (price_key, size_key, side)
                which = times.occurrence(key) if in_order else late_occurrence(symbol, ts_us, key)
                text = f"{symbol}|{ts_us}|{price_key}|{size_key}|{side}|{which}"
            state.seq = seq = state.seq + 1
            if in_order:  # the trade before the next in time: a late print is not (nor does it move their ids)
                state.last_price = value
                state.last_side = side
            digest = new_digest()
            digest.update(text.encode())
            return trade_of("r-", digest.hexdigest(), symbol, ts_us, seq, price, size, side)

        return parse_row

    def _quote(self, row: Sequence[str], symbol: str, state: _SymbolState, ts_us: int,
               numbers: dict[str, dict[str, Number]], quote_of: Callable[..., Any]) -> Any:
        if self._ask_i is None or not row[self._ask_i].strip():
            raise ReplayError("the row has a bid but no ask (a quote needs both) and no price (a trade)")

        def number(index: int | None, name: str, exponent: int | None = None) -> Number:
            if index is None or not row[index].strip():
                return _ZERO  # a missing size is unknown depth: zero
            text = row[index]
            return numbers[name].get(text) or _number(text, name, numbers[name], exponent, self.decimal_comma)

        price_exponent = self.price_exponent
        bid, ask = number(self._bid_i, "bid", price_exponent), number(self._ask_i, "ask", price_exponent)
        bid_size, ask_size = number(self._bid_size_i, "bid_size"), number(self._ask_size_i, "ask_size")
        in_order = state.quote_times.saw(ts_us)
        values = (bid[1], ask[1], bid_size[1], ask_size[1])
        if self._id_i is not None and (vendor_id := row[self._id_i].strip()):
            which = f"#{vendor_id}"
        else:
            key = ("quote", *values)
            which = str(state.quote_times.occurrence(key) if in_order
                        else self._late_rows.occurrence(symbol, ts_us, key))
        text = "|".join((symbol, str(ts_us), *values, which))
        state.quotes += 1
        digest = _new_digest()
        digest.update(text.encode())
        return quote_of("rq-", digest.hexdigest(), symbol, ts_us, bid, ask, bid_size, ask_size)


def _reader(lines: Iterable[str], delimiter: str, json_lines: bool) -> Any:
    return JsonLines(lines) if json_lines else csv.reader(lines, delimiter=delimiter)


def _joined_time(date: str, time_of_day: str) -> str:
    """The timestamp of a row whose date and time of day are in columns of their own."""
    if not date.strip():
        raise ReplayError("the date is empty")
    return f"{date.strip()} {time_of_day.strip()}"


def _symbol(text: str) -> str:
    """A symbol as the contract spells it: upper case, and a pair's ``/`` a ``-`` (``btc/usd`` is ``BTC-USD``)."""
    return symbol_upper(text.strip()).replace("/", "-")


def _is_blank(row: Sequence[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


class _StructForm:
    """Rows as ``Trade`` and ``Quote`` structs (``parse_lines``); an id is ``id_head`` then ``id_tail``."""

    @staticmethod
    def trade(id_head: str, id_tail: str, symbol: str, ts_us: int, seq: int, price: Number, size: Number,
              side: str) -> Trade:
        return Trade(id_head + id_tail, symbol, epoch_us_time(ts_us), seq, price[0], size[0],
                     side)  # type: ignore[arg-type]

    @staticmethod
    def quote(id_head: str, id_tail: str, symbol: str, ts_us: int, bid: Number, ask: Number, bid_size: Number,
              ask_size: Number) -> Quote:
        return Quote(id_head + id_tail, symbol, epoch_us_time(ts_us), bid[0], ask[0], bid_size[0], ask_size[0])


class _WireForm:
    """Rows as wire messages (``wire_messages``): the bytes of ``encode()`` of the struct, written directly."""

    def __init__(self, trades_topic: str, quotes_topic: str) -> None:
        utc_text = UtcTexts().text

        # Closures rather than methods: the hot path looks up nothing on self.
        def trade(id_head: str, id_tail: str, symbol: str, ts_us: int, seq: int, price: Number, size: Number,
                  side: str) -> WireMessage:
            value = trade_bytes(id_head, id_tail, symbol, utc_text(ts_us), seq, price[2], size[2], side)
            return trades_topic, symbol, value, ts_us // 1000

        def quote(id_head: str, id_tail: str, symbol: str, ts_us: int, bid: Number, ask: Number, bid_size: Number,
                  ask_size: Number) -> WireMessage:
            value = quote_bytes(id_head, id_tail, symbol, utc_text(ts_us), bid[2], ask[2], bid_size[2], ask_size[2])
            return quotes_topic, symbol, value, ts_us // 1000

        self.trade = trade
        self.quote = quote


_Form = _StructForm | _WireForm
_ZERO: Number = (Decimal(0), "0", "0")


def parse_csv(
    lines: Iterable[str],
    *,
    default_symbol: str | None = None,
    epoch_unit: EpochUnit | None = None,
    time_format: str | None = None,
    timezone: str | None = None,
    decimal_comma: bool = False,
    overrides: Mapping[str, str | None] | None = None,
    price_scale: str | Decimal | None = None,
    delimiter: str = ",",
    header: Sequence[str] | None = None,
    on_error: Callable[[ReplayError], None] | None = None,
) -> Iterator[Trade | Quote]:
    """Shorthand for ``ReplayParser(...).parse_lines(lines, ...)`` when the counters are not needed."""
    parser = ReplayParser(default_symbol=default_symbol, epoch_unit=epoch_unit, time_format=time_format,
                          timezone=timezone, decimal_comma=decimal_comma, overrides=overrides,
                          price_scale=price_scale)
    return parser.parse_lines(lines, delimiter=delimiter, header=header, on_error=on_error)

