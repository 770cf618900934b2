"""The message contract: one versioned JSON schema per topic.

Every message is a JSON object any Kafka tool can read and write (kcat, a Java
client). Decoding is strict: unknown types, missing fields, naive timestamps,
non-positive prices or more decimal places than the database keeps are
validation errors, and the consumer runner sends such messages to the
dead-letter topic instead of crashing. Prices and sizes are exact decimals,
encoded as JSON strings ("187.23") so that no JSON parser turns them into
floats; numbers are accepted on input and parsed exactly.

This module is pure: no Django, no I/O. ``docs/messages.md`` documents the
schemas with an example of each.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1

# The database keeps 8 decimal places for prices and sizes (NUMERIC(20,8) and
# NUMERIC(24,8)); a value with more would be rounded on the way in, so it is
# refused at the door instead.
MAX_DECIMAL_PLACES = 8
MAX_PRICE = Decimal("999999999999")  # 12 integer digits, NUMERIC(20,8)
MAX_SIZE = Decimal("9999999999999999")  # 16 integer digits, NUMERIC(24,8)

# (?!\n): Python's $ also matches before a final newline, and "AAPL\n" is no symbol.
SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9.\-]{0,15}(?!\n)$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)

Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN)]
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
Side = Literal["buy", "sell"]
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
Severity = Literal["low", "medium", "high", "critical"]
Version = Literal[1]


SYMBOL_RULE = "A-Z, 0-9, '.' and '-' (a letter or digit first), at most 16 characters"


def is_valid_symbol(symbol: str) -> bool:
    return bool(_SYMBOL_RE.match(symbol))


def symbol_upper(text: str) -> str:
    """``text`` in capitals if it is ASCII, else as it is (for the symbol check to refuse): str.upper()
    makes "ſ" an S and "ﬀ" FF, which would take "TſLA" for TSLA."""
    return text.upper() if text.isascii() else text


_PLACES = Decimal(1).scaleb(-MAX_DECIMAL_PLACES)


def check_decimal(name: str, value: Decimal, *, maximum: Decimal, allow_zero: bool = False) -> None:
    """The contract's rule for a price or size: finite, positive (or zero, if allowed), at most ``maximum``
    and ``MAX_DECIMAL_PLACES`` places; raises ValueError saying which."""
    # Every message runs this for each price and size: one cheap expression on
    # the good path, the reason worked out only for a bad value.
    if value.is_finite() and (value > 0 or (allow_zero and value == 0)) and value <= maximum \
            and value.quantize(_PLACES) == value:
        return
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite decimal, got {_written(value)}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {_written(value)}")
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {_written(value)}")
    raise ValueError(f"{name} has more than {MAX_DECIMAL_PLACES} decimal places: {_written(value)}")


def _written(value: Decimal) -> str:
    """A value for an error message: as written, unless that runs to hundreds of digits (1e400)."""
    text = f"{value:f}"
    return text if len(text) <= 40 else f"{value:.6e}"


def _to_utc(struct: msgspec.Struct, field: str) -> None:
    value: datetime = getattr(struct, field)
    if value.tzinfo is not UTC:
        msgspec.structs.force_setattr(struct, field, value.astimezone(UTC))


class Trade(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One executed trade on ``market.trades``, keyed by symbol.

    ``id`` is unique across all trades ever published: consumers drop a trade
    whose id they already stored, which is what makes redelivery and replays
    harmless. ``seq`` increases by one per symbol within one producer run and
    breaks ties between trades with the same timestamp.
    """

    id: MessageId
    symbol: Symbol
    ts: UtcTime
    seq: Annotated[int, msgspec.Meta(ge=0)]
    price: Decimal
    size: Decimal
    side: Side
    version: Version = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_decimal("price", self.price, maximum=MAX_PRICE)
        check_decimal("size", self.size, maximum=MAX_SIZE)
        _to_utc(self, "ts")


class Quote(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A top-of-book bid/ask update on ``market.quotes``, keyed by symbol.

    A locked (bid == ask) or crossed (bid > ask) book is valid on the wire: it
    happens in real feeds and is something the anomaly detectors report.
    """

    id: MessageId
    symbol: Symbol
    ts: UtcTime
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    version: Version = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_decimal("bid", self.bid, maximum=MAX_PRICE)
        check_decimal("ask", self.ask, maximum=MAX_PRICE)
        check_decimal("bid_size", self.bid_size, maximum=MAX_SIZE, allow_zero=True)
        check_decimal("ask_size", self.ask_size, maximum=MAX_SIZE, allow_zero=True)
        _to_utc(self, "ts")


class Candle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An OHLCV candle on ``market.candles``, keyed by symbol.

    Published each time a batch changes the candle, so the same
    (symbol, interval, start) appears many times while its bucket is open;
    the newest message (highest ``trades``) is the current state.
    """

    symbol: Symbol
    interval: Interval
    start: UtcTime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: Annotated[int, msgspec.Meta(ge=1)]
    vwap: Decimal
    first_trade_ts: UtcTime
    last_trade_ts: UtcTime
    version: Version = SCHEMA_VERSION

    @property
    def id(self) -> str:
        return f"{self.symbol}:{self.interval}:{self.start.isoformat()}"

    @property
    def ts(self) -> datetime:
        """The event time of a candle update: its newest trade's."""
        return self.last_trade_ts


class Alert(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An anomaly alert on ``alerts``, keyed by symbol.

    ``id`` is derived from (rule, symbol, episode start), so a detector that
    replays the same trades after a crash produces the same id again.
    """

    id: MessageId
    rule: str
    type: str
    severity: Severity
    symbol: Symbol
    message: str
    ts: UtcTime
    detected_at: UtcTime
    observed: dict[str, str | int | float | None] = {}
    version: Version = SCHEMA_VERSION


TOPIC_SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "market.trades": Trade,
    "market.quotes": Quote,
    "market.candles": Candle,
    "alerts": Alert,
}

_encoder = msgspec.json.Encoder(decimal_format="string")
_decoders = {schema: msgspec.json.Decoder(schema) for schema in TOPIC_SCHEMAS.values()}


# A Decimal as msgspec writes it, str(): with an exponent below a millionth ("9.0E-7") and for a
# whole number with a positive exponent ("1E+2").
_EXPONENT_DECIMAL = re.compile(rb'"-?[0-9]+(?:\.[0-9]+)?E[+-][0-9]+"')


def encode(message: msgspec.Struct) -> bytes:
    """The message's JSON, every decimal written in digits (0.0000009, never 9.0E-7)."""
    data = _encoder.encode(message)
    # A single-byte search first: most messages have no "E" at all, and this runs for every event.
    if b"E" not in data or _EXPONENT_DECIMAL.search(data) is None:
        return data
    return _encoder.encode({name: f"{value:f}" if isinstance(value, Decimal) else value
                            for name, value in msgspec.structs.asdict(message).items()})


def decoder_for(schema: type[msgspec.Struct]) -> msgspec.json.Decoder:
    return _decoders[schema]


DecodeError = msgspec.DecodeError  # ValidationError is a subclass
