"""Number and time formatting of the dashboard: fixed decimals, signs, arrows.

Values are Decimals (never floats) and may be None (not known yet), which
renders as an em dash. static/dashboard/live.js formats live values the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import template

register = template.Library()
MISSING = "—"


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


@register.filter
def fixed(value, places: int = 2) -> str:
    """1234.5 -> "1234.50" (places decimals, half-even, no grouping)."""
    number = _decimal(value)
    if number is None:
        return MISSING
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
    text = fixed(number, places)
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
def hms(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S") if isinstance(value, datetime) else MISSING


@register.filter
def utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else MISSING


@register.filter
def epoch(value: datetime | None) -> str:
    return str(int(value.timestamp())) if isinstance(value, datetime) else ""


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
