"""What the market endpoints read from the query string and write back.

Prices, sizes, volumes and VWAPs are exact decimal strings ("187.23", never a
float), normalized (no trailing zeros): parse them with a decimal type.
"""

from datetime import UTC
from decimal import Decimal

from rest_framework import serializers

from market.api.pagination import SymbolPageQuerySerializer, limit_field
from market.domain.candles import INTERVALS, decimal_text

PRICE = {"max_digits": 20, "decimal_places": 8, "normalize_output": True, "coerce_to_string": True}
SIZE = {"max_digits": 24, "decimal_places": 8, "normalize_output": True, "coerce_to_string": True}
VOLUME = {"max_digits": 38, "decimal_places": 8, "normalize_output": True, "coerce_to_string": True}
SIGNED = {"max_digits": 20, "decimal_places": 8, "normalize_output": True, "coerce_to_string": True}

CENT = Decimal("0.01")

TRADES_LIMIT = {"default": 100, "maximum": 1000}
CANDLES_LIMIT = {"default": 100, "maximum": 5000}
_INTERVALS = ", ".join(INTERVALS)


# --- query parameters -------------------------------------------------------------
class TradeQuerySerializer(SymbolPageQuerySerializer):
    pages = "trades"
    limit = limit_field(**TRADES_LIMIT)


class CandleQuerySerializer(SymbolPageQuerySerializer):
    pages = "candles"
    interval = serializers.ChoiceField(
        choices=list(INTERVALS), default="1m", help_text=f"Candle width: one of {_INTERVALS} (default 1m).",
        error_messages={"invalid_choice": f"{{input!r}} is not an interval: use one of {_INTERVALS}"},
    )
    limit = limit_field(**CANDLES_LIMIT)

    def selection(self, attrs) -> list[str]:
        return [*super().selection(attrs), attrs["interval"]]


# --- responses ----------------------------------------------------------------------
class SymbolSerializer(serializers.Serializer):
    symbol = serializers.CharField(source="ticker")
    name = serializers.CharField()


class SymbolListSerializer(serializers.Serializer):
    symbols = SymbolSerializer(many=True)


class TradeSerializer(serializers.Serializer):
    id = serializers.CharField(source="trade_id")
    symbol = serializers.CharField()
    time = serializers.DateTimeField()
    seq = serializers.IntegerField(help_text="The producer's per-symbol sequence; breaks ties of equal times.")
    price = serializers.DecimalField(**PRICE)
    size = serializers.DecimalField(**SIZE)
    side = serializers.ChoiceField(choices=["buy", "sell"], help_text="Aggressor side.")


class TradePageSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    trades = TradeSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last one.")


class CandleSerializer(serializers.Serializer):
    time = serializers.DateTimeField(source="start", help_text="Bucket start (UTC, epoch-aligned).")
    open = serializers.DecimalField(**PRICE)
    high = serializers.DecimalField(**PRICE)
    low = serializers.DecimalField(**PRICE)
    close = serializers.DecimalField(**PRICE)
    volume = serializers.DecimalField(**VOLUME)
    trades = serializers.IntegerField(help_text="Number of trades in the bucket.")
    vwap = serializers.DecimalField(**PRICE, help_text="Exact notional / volume, rounded half-even to 8 places.")


def time_text(value) -> str:
    """What DRF's DateTimeField renders for an aware UTC datetime."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def trades_json(rows) -> list[dict]:
    """TradeSerializer's output, without DRF's per-field cost (pages hold up to 1000)."""
    return [{"id": r.trade_id, "symbol": r.symbol, "time": time_text(r.time), "seq": r.seq,
             "price": decimal_text(r.price), "size": decimal_text(r.size), "side": r.side} for r in rows]


def candles_json(rows) -> list[dict]:
    """CandleSerializer's output, without DRF's per-field cost (pages hold up to 5000)."""
    return [{"time": time_text(r.start), "open": decimal_text(r.open), "high": decimal_text(r.high),
             "low": decimal_text(r.low), "close": decimal_text(r.close), "volume": decimal_text(r.volume),
             "trades": r.trades, "vwap": decimal_text(r.vwap)} for r in rows]


def quote_json(symbol: str, quote) -> dict:
    """QuoteSerializer's output for a latest quote, without DRF's per-field cost (a hot endpoint)."""
    return {"symbol": symbol, "id": quote.id, "time": time_text(quote.ts), "bid": decimal_text(quote.bid),
            "ask": decimal_text(quote.ask), "bid_size": decimal_text(quote.bid_size),
            "ask_size": decimal_text(quote.ask_size), "spread": decimal_text(quote.ask - quote.bid)}


def _maybe(render, value):
    return None if value is None else render(value)


def summary_json(rows) -> list[dict]:
    """SummaryRowSerializer's output, without DRF's per-field cost (a hot endpoint)."""
    return [{
        "symbol": r.symbol, "last": _maybe(decimal_text, r.last),
        "last_trade_time": _maybe(time_text, r.last_trade_time),
        "change_24h": _maybe(decimal_text, r.change_24h),
        "change_pct_24h": _maybe(lambda v: f"{v.quantize(CENT):f}", r.change_pct_24h),
        "open_24h": _maybe(decimal_text, r.open_24h), "high_24h": _maybe(decimal_text, r.high_24h),
        "low_24h": _maybe(decimal_text, r.low_24h), "volume_24h": _maybe(decimal_text, r.volume_24h),
        "vwap_24h": _maybe(decimal_text, r.vwap_24h), "trades_24h": r.trades_24h,
        "bid": _maybe(decimal_text, r.bid), "ask": _maybe(decimal_text, r.ask),
        "quote_time": _maybe(time_text, r.quote_time), "stats_time": _maybe(time_text, r.stats_time),
    } for r in rows]


class CandlePageSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    interval = serializers.CharField()
    candles = CandleSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last one.")


class QuoteSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    id = serializers.CharField()
    time = serializers.DateTimeField(source="ts")
    bid = serializers.DecimalField(**PRICE)
    ask = serializers.DecimalField(**PRICE)
    bid_size = serializers.DecimalField(**SIZE)
    ask_size = serializers.DecimalField(**SIZE)
    spread = serializers.DecimalField(**SIGNED, help_text="ask - bid; zero or negative for a locked or crossed book.")


class SummaryRowSerializer(serializers.Serializer):
    """One symbol of the market summary. 24h fields are null until the
    statistics task has run once for the symbol."""

    symbol = serializers.CharField()
    last = serializers.DecimalField(**PRICE, allow_null=True, help_text="Last trade price.")
    last_trade_time = serializers.DateTimeField(allow_null=True)
    change_24h = serializers.DecimalField(**SIGNED, allow_null=True, help_text="last - open_24h.")
    change_pct_24h = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True,
                                              allow_null=True, help_text="Percent, 2 places.")
    open_24h = serializers.DecimalField(**PRICE, allow_null=True)
    high_24h = serializers.DecimalField(**PRICE, allow_null=True)
    low_24h = serializers.DecimalField(**PRICE, allow_null=True)
    volume_24h = serializers.DecimalField(**VOLUME, allow_null=True)
    vwap_24h = serializers.DecimalField(**PRICE, allow_null=True)
    trades_24h = serializers.IntegerField(allow_null=True)
    bid = serializers.DecimalField(**PRICE, allow_null=True)
    ask = serializers.DecimalField(**PRICE, allow_null=True)
    quote_time = serializers.DateTimeField(allow_null=True)
    stats_time = serializers.DateTimeField(allow_null=True, help_text="When the 24h statistics were computed.")


class MarketSummarySerializer(serializers.Serializer):
    symbols = SummaryRowSerializer(many=True)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, e.g. unknown_symbol, invalid_parameter, invalid_cursor.")
    message = serializers.CharField(help_text="What went wrong and how to fix it.")
    details = serializers.JSONField(required=False, help_text="Per-parameter messages, for invalid_parameter.")


class ErrorSerializer(serializers.Serializer):
    """The one error shape of every 4xx answer."""

    error = ErrorBodySerializer()
