"""Trades and quotes written straight to their wire bytes, for producers that publish hundreds of thousands a second.

``encode(Trade(...))`` builds a struct, validates its decimals and encodes it: about 3 µs, more than Kafka takes
to accept the message. A producer whose values are valid by construction (the simulator's whole cents and round
sizes) skips all of that: the functions here write the same bytes from plain values, byte for byte
(streaming/tests/test_wire.py proves it over the contract's whole value space). They do not validate: ids and
symbols must need no JSON escaping (the simulator's and the replayer's never do) and values must be in the
contract's range.

Pure: no Django, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

WireMessage = tuple[str, str, bytes, int]
"""What a feed publishes: (topic, key, value, Kafka timestamp in epoch milliseconds)."""

_EPOCH = datetime(1970, 1, 1)  # naive: isoformat() then ends at the seconds
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_ONE_US = timedelta(microseconds=1)


def epoch_ms(ts: datetime) -> int:
    """The Kafka timestamp of an event time (timezone-aware): whole epoch milliseconds, rounded down."""
    return (ts - _EPOCH_UTC) // _ONE_MS


def epoch_us(ts: datetime) -> int:
    """A timezone-aware time as whole microseconds since the epoch."""
    return (ts - _EPOCH_UTC) // _ONE_US


def epoch_us_time(microseconds: int) -> datetime:
    """The UTC time of epoch microseconds; OverflowError outside years 1 to 9999."""
    return _EPOCH_UTC + timedelta(microseconds=microseconds)


def cents_text(cents: int) -> str:
    """Whole cents as the REST API writes them, normalized: 23001 -> "230.01", 23010 -> "230.1",
    23000 -> "230", 5 -> "0.05"."""
    whole, part = divmod(cents, 100)
    if not part:
        return str(whole)
    return f"{whole}.{part:02d}".rstrip("0")


class UtcTexts:
    """Epoch microseconds -> the text msgspec writes for that UTC time: "2026-03-02T14:30:01.000250Z", or
    "2026-03-02T14:30:01Z" on a whole second.

    Remembers the text of the last second: a feed's events come in time order, many to a second, and
    formatting a date costs ten times as much as the fraction.
    """

    __slots__ = ("_second", "_second_text")

    def __init__(self) -> None:
        self._second: int | None = None
        self._second_text = ""

    def text(self, epoch_us: int) -> str:
        second, micro = divmod(epoch_us, 1_000_000)
        if second != self._second:
            self._second = second
            self._second_text = (_EPOCH + timedelta(seconds=second)).isoformat()
        if micro:
            # str() of 1xxxxxx, less its 1: the six zero-padded digits at half the cost of a format spec.
            return f"{self._second_text}.{str(micro + 1_000_000)[1:]}Z"
        return f"{self._second_text}Z"


def trade_bytes(id_head: str, id_tail: str | int, symbol: str, ts: str, seq: int, price: str, size: str | int,
                side: str) -> bytes:
    """The bytes of ``encode(Trade(...))``, from the trade's texts: its id is ``id_head`` then ``id_tail`` (a
    producer's prefix and number, or digest, need not be joined first), ``ts`` from ``UtcTexts``, decimals as
    the contract writes them, in digits: ``f"{Decimal:f}"`` (a whole size may be an int)."""
    return (f'{{"id":"{id_head}{id_tail}","symbol":"{symbol}","ts":"{ts}","seq":{seq},"price":"{price}",'
            f'"size":"{size}","side":"{side}","version":1}}').encode()


def quote_bytes(id_head: str, id_tail: str | int, symbol: str, ts: str, bid: str, ask: str, bid_size: str | int,
                ask_size: str | int) -> bytes:
    """The bytes of ``encode(Quote(...))``, from the quote's texts (see ``trade_bytes``)."""
    return (f'{{"id":"{id_head}{id_tail}","symbol":"{symbol}","ts":"{ts}","bid":"{bid}","ask":"{ask}",'
            f'"bid_size":"{bid_size}","ask_size":"{ask_size}","version":1}}').encode()
