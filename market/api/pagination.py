"""Query parameters shared by the list endpoints: time bounds, sort, cursors.

* ``start`` (inclusive) and ``end`` (exclusive) are RFC 3339 timestamps with a
  zone (``2026-03-02T14:30:00Z``, ``2026-03-02T09:30:00-05:00``), a UTC date
  (``2026-03-02``) or epoch milliseconds (``1772461800000``).
* ``sort`` is ``desc`` (newest first, the default) or ``asc``.
* ``cursor`` is opaque: the ``next`` link of a page carries it with every other
  parameter of the request. Inside it is the (time, id) of the page's last row
  (a trade's: time, seq and id, its order on the tape), so a page never
  repeats or skips a row however many rows share a timestamp (keyset
  pagination: no OFFSET, each page is one index range scan), the sort, and
  the listing it pages through: the endpoint's kind of rows (trades, candles,
  alerts) and what selects them (the symbol, the interval, the alerts'
  filters). A cursor used on another listing is refused (400), not read as a
  position in it. Cursors issued before 2026-11-28 named no symbol, interval
  or filters: they are refused too, but for those of unfiltered alerts, whose
  listing is the same.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from finstream.errors import ApiError
from streaming.wire import epoch_us, epoch_us_time

SORTS = ("desc", "asc")
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Epoch milliseconds below this (1973-03-03) are far more likely epoch seconds (1795766400) or a compact
# date (20261127) than a time in 1970-1973, when no market data here begins.
_MIN_EPOCH_MS = 10**11
_DIGITS = re.compile(r"[0-9]+")
# An id PostgreSQL can compare: at most 64 characters, no NUL, no lone surrogate (JSON's "\ud800"), which
# UTF-8 cannot encode and the database driver would fail on.
_STORABLE_ID = re.compile(r"[^\x00\ud800-\udfff]{0,64}")
# 2026-03-02T15:30:00+01:00 put in a URL as it is: the query string's "+" arrives as a space.
_UNENCODED_PLUS = re.compile(r"([Tt]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?) (\d\d:?\d\d)$")
# Digits past the microsecond, which Python's reader drops: 14:30:00.0000005 is after 14:30:00.
_BELOW_MICROSECOND = re.compile(r"[.,]\d{6}(\d+)")
_TIME_HELP = "RFC 3339 with a zone (2026-03-02T14:30:00Z), a UTC date (2026-03-02) or epoch milliseconds"


def parse_time(text: str) -> datetime:
    """A UTC datetime from RFC 3339, a date or epoch ms; ValueError says what is accepted."""
    text = _UNENCODED_PLUS.sub(r"\1+\2", text.strip())
    not_a_time = ValueError(f"{text[:40]!r} is not a time: use {_TIME_HELP}")
    # Python's readers take more than the formats: int() full-width digits, fromisoformat a trailing NUL.
    if not (text.isascii() and text.isprintable()):
        raise not_a_time
    if _EPOCH_MS.fullmatch(text):
        if int(text) < 0:
            raise ValueError(f"{text[:40]!r} as epoch milliseconds is before 1970: no market data here is")
        if int(text) < _MIN_EPOCH_MS:
            raise ValueError(f"{text[:40]!r} as epoch milliseconds is before 1973: epoch seconds are "
                             f"{int(text) * 1000} in milliseconds, and a date is written 2026-03-02")
        try:
            return epoch_us_time(int(text) * 1000)
        except OverflowError:
            raise not_a_time from None
    try:
        if _DATE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except (ValueError, OverflowError):
        raise not_a_time from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{text[:40]!r} has no time zone: add Z or an offset such as +00:00")
    try:
        # Rows are stored to the microsecond: a bound between two microseconds is the later one,
        # for `start` (rows at or after it) as for `end` (rows before it).
        if (below := _BELOW_MICROSECOND.search(text)) and below.group(1).strip("0"):
            value += timedelta(microseconds=1)
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text[:40]!r} is out of range") from None


@extend_schema_field({"type": "string", "description": f"{_TIME_HELP}.", "example": "2026-03-02T14:30:00Z"})
class TimeParamField(serializers.Field):
    default_error_messages = {"invalid": "{reason}"}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", reason=f"use {_TIME_HELP}")
        try:
            return parse_time(data)
        except ValueError as error:
            self.fail("invalid", reason=str(error))

    def to_representation(self, value):
        return value.isoformat()


class WholeNumberField(serializers.IntegerField):
    """Digits 0-9 only: Python's int() also reads "5_0" as 50 and "５" (full-width) as 5."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not _DIGITS.fullmatch(data.strip()):
            self.fail("invalid")
        return super().to_internal_value(data)


def limit_field(*, default: int, maximum: int) -> serializers.IntegerField:
    allowed = f"a whole number from 1 to {maximum} (default {default})"
    return WholeNumberField(
        min_value=1, max_value=maximum, default=default, help_text=f"Rows per page: {allowed}.",
        error_messages={"invalid": f"must be {allowed}", "min_value": f"must be {allowed}",
                        "max_value": f"must be {allowed}", "max_string_length": f"must be {allowed}"},
    )


@extend_schema_field(OpenApiTypes.STR)
class CursorField(serializers.CharField):
    pass


class PageQuerySerializer(serializers.Serializer):
    """The parameters every list endpoint takes; subclasses add `limit` and filters."""

    start = TimeParamField(required=False, help_text=f"Oldest time included: {_TIME_HELP}.")
    end = TimeParamField(required=False, help_text=f"Time excluded and everything after it: {_TIME_HELP}.")
    sort = serializers.ChoiceField(
        choices=SORTS, default="desc", help_text="desc: newest first (default); asc: oldest first.",
        error_messages={"invalid_choice": "{input!r} is not a sort order: use desc (newest first) or asc"},
    )
    cursor = CursorField(required=False, help_text="Opaque: take it from a page's `next` link.")
    pages: str  # the kind of rows the endpoint pages through: "trades", "candles", "alerts"

    def selection(self, attrs) -> list[str]:
        """What picks this listing's rows besides the kind: the path's symbol, the filters."""
        return []

    def to_internal_value(self, data):
        # A query string may name a parameter twice, and QueryDict.get() would quietly take the last.
        repeated = [name for name in self.fields if len(data.getlist(name)) > 1] if hasattr(data, "getlist") else []
        if repeated:
            raise serializers.ValidationError({name: ["given more than once: give it once"] for name in repeated})
        return super().to_internal_value(data)

    def validate(self, attrs):
        start, end = attrs.get("start"), attrs.get("end")
        if start is not None and end is not None and start >= end:
            raise serializers.ValidationError({"end": ["must be after start"]})
        # Written into the cursors of its pages (next_link), checked against the cursor it was given.
        attrs["listing"] = " ".join([self.pages, *self.selection(attrs)])
        if "cursor" in attrs:
            attrs["cursor"] = cursor_decode(attrs["cursor"], sort=attrs["sort"], listing=attrs["listing"])
        return attrs


class SymbolPageQuerySerializer(PageQuerySerializer):
    """A listing of one symbol, the path's: the view gives it as context["symbol"]."""

    def selection(self, attrs) -> list[str]:
        return [self.context["symbol"]]


@dataclass(frozen=True)
class Position:
    """Where a page ended: its last row's time and id (id is "" where time alone is unique), and a
    trade's seq (None for other rows)."""

    time: datetime
    id: str = ""
    seq: int | None = None


# Far longer than any cursor this API issues (~60-150 characters), short enough to refuse before decoding.
CURSOR_MAX_LENGTH = 500


def cursor_encode(position: Position, *, sort: str, listing: str) -> str:
    fields = [listing, sort, epoch_us(position.time), position.id]
    if position.seq is not None:
        fields.append(position.seq)
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(text: str, *, sort: str, listing: str) -> Position:
    bad = ApiError(code="invalid_cursor", message="cursor is not one this API issued: follow a page's `next` link "
                                                  "as it is, or drop `cursor` to start from the first page")
    if len(text) > CURSOR_MAX_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        issued_listing, issued_for, micros, row_id, *seq = json.loads(raw)
        time = epoch_us_time(int(micros))
    except (ValueError, TypeError, binascii.Error, OverflowError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(issued_listing, str) or issued_for not in SORTS or not isinstance(row_id, str) \
            or type(micros) is not int or not _STORABLE_ID.fullmatch(row_id):
        raise bad
    if seq and (len(seq) > 1 or type(seq[0]) is not int or not 0 <= seq[0] < 2**63):
        raise bad
    pages = listing.split(" ")[0]
    if issued_listing.split(" ")[0] != pages:
        raise ApiError(code="invalid_cursor", message=f"this cursor is not one of {pages} pages: follow the `next` "
                                                      f"link of a page of {pages} as it is")
    if issued_listing != listing:
        raise ApiError(code="invalid_cursor", message="this cursor pages through other rows (another symbol, "
                                                      "interval or filter): follow the `next` link as it is")
    if issued_for != sort:
        raise ApiError(code="invalid_cursor", message=f"this cursor belongs to sort={issued_for}: "
                                                      f"follow the `next` link as it is")
    return Position(time=time, id=row_id, seq=seq[0] if seq else None)


def next_link(request, rows: list, *, limit: int, sort: str, listing: str, position_of) -> str | None:
    """The URL of the page after `rows` (fetched with limit + 1), or None on the last page."""
    if len(rows) <= limit:
        return None
    return next_url(request, position_of(rows[limit - 1]), sort=sort, listing=listing)


def next_url(request, position: Position, *, sort: str, listing: str) -> str:
    """The URL of the page after the row at `position`: the request's parameters and a cursor.
    `request` is Django's or DRF's (which hands `GET` through to Django's)."""
    params = {key: value for key, value in request.GET.items() if key != "cursor"}
    params["sort"] = sort
    params["cursor"] = cursor_encode(position, sort=sort, listing=listing)
    return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")
