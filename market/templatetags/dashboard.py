"""Number and time formatting of the dashboard: exact prices and sizes, signs, arrows.

Values are Decimals (never floats) and may be None (not known yet), which
renders as an em dash. Prices and sizes keep every digit they have (a price of
0.00001227 is not 0.00); static/dashboard/decimal.js formats live values the
same way (tests/test_dashboard_decimals.py holds the two to one output).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from django import template

from streaming import wire

register = template.Library()
MISSING = "—"


# What static/dashboard/decimal.js reads too: ASCII digits (not "1_000" or Arabic-Indic ones, which
# Decimal() takes), an exponent of at most 4 digits.
_DECIMAL_TEXT = re.compile(r"\s*[+-]?(?=\.?[0-9])[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,4})?\s*")


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    text = str(value)
    return Decimal(text) if _DECIMAL_TEXT.fullmatch(text) else None


def _digits(value, render) -> str:
    """``render(sign, whole digits, fraction digits without trailing zeros)`` of a decimal value, or the
    em dash when there is none."""
    number = _decimal(value)
    if number is None:
        return MISSING
    whole, _, fraction = f"{abs(number):f}".partition(".")
    fraction = fraction.rstrip("0")
    return render("-" if number < 0 and (whole != "0" or fraction) else "", whole, fraction)


@register.filter
def price(value) -> str:
    """Every digit of a price, at least two places, no grouping: 412 -> "412.00", "0.00001227" stays."""
    return _digits(value, lambda sign, whole, fraction: f"{sign}{whole}.{fraction.ljust(2, '0')}")


@register.filter
def signed_price(value) -> str:
    """A price change: 0.5 -> "+0.50", -0.00000012 -> "-0.00000012"."""
    number = _decimal(value)
    text = price(number)
    return f"+{text}" if number is not None and number > 0 else text


@register.filter
def quantity(value) -> str:
    """A size or volume: thousands grouped, every decimal digit: "123,456,789,012.12345678"."""
    return _digits(value, lambda sign, whole, fraction: f"{sign}{int(whole):,}" + (f".{fraction}" if fraction else ""))


def _fixed(number: Decimal, places: int) -> str:
    """1234.5 -> "1234.50" (places decimals, half-even, no grouping)."""
    return f"{number.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_EVEN):f}"


@register.filter
def grouped(value, places: int = 0) -> str:
    """1234567.8 -> "1,234,568" (thousands separated)."""
    number = _decimal(value)
    if number is None:
        return MISSING
    return f"{number.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_EVEN):,f}"


@register.filter
def signed(value, places: int = 2) -> str:
    """1.5 -> "+1.50", -1.5 -> "-1.50", 0 -> "0.00"."""
    number = _decimal(value)
    if number is None:
        return MISSING
    text = _fixed(number, places)
    return f"+{text}" if number > 0 and text.strip("0.") else text


@register.filter
def direction(value) -> str:
    """"up", "down" or "flat": the CSS class that colours a change."""
    number = _decimal(value)
    if number is None or number == 0:
        return "flat"
    return "up" if number > 0 else "down"


@register.filter
def arrow(value) -> str:
    """▲ for a rise, ▼ for a fall: direction is never told by colour alone."""
    return {"up": "▲", "down": "▼"}.get(direction(value), "")


@register.filter
def clock(value: datetime | None) -> str:
    """An event's UTC time of day, with its date when it is not of today (a replayed file's trades,
    yesterday's alert), as FinStream.fmt.clock() writes it in the page's scripts."""
    if not isinstance(value, datetime):
        return MISSING
    value = value.astimezone(UTC)
    return value.strftime("%H:%M:%S" if value.date() == datetime.now(UTC).date() else "%Y-%m-%d %H:%M:%S")


@register.filter
def utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else MISSING


@register.filter
def epoch(value: datetime | None) -> str:
    return str(int(value.timestamp())) if isinstance(value, datetime) else ""


@register.filter
def epoch_us(value: datetime | None) -> str:
    """Whole epoch microseconds, what FinStream.fmt.micros() makes of an event's time in the page's scripts."""
    return str(wire.epoch_us(value)) if isinstance(value, datetime) else ""


@register.filter
def seconds(value: float | None) -> str:
    """A heartbeat age: "0.4 s ago"."""
    return MISSING if value is None else f"{value:.1f} s ago"


@register.filter
def rate(value: float | None) -> str:
    """Messages per second, as the pipeline page shows them."""
    return MISSING if value is None else f"{value:,.1f}"


@register.filter
def words(value: str) -> str:
    """price_spike -> "price spike"."""
    return str(value).replace("_", " ")
