"""The public WebSocket channel names, and the one Channels group behind them.

A channel is what a client subscribes to:

    trades.<SYMBOL>   quotes.<SYMBOL>   candles.<INTERVAL>.<SYMBOL>   alerts

Channels are not Channels groups: the relay sends every batch, all channels
in it, to FANOUT_GROUP, whose members are the web processes' hubs
(streaming/relay.py, streaming/hub.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from market.domain.candles import INTERVALS
from streaming.schemas import is_valid_symbol, symbol_upper

KINDS = ("trades", "quotes", "candles", "alerts")
FANOUT_GROUP = "fs.fanout"
_EXAMPLES = "trades.AAPL, quotes.MSFT, candles.1m.NVDA or alerts"


class BadChannel(ValueError):
    """A channel name that does not parse; the message says what would."""


@dataclass(frozen=True)
class Channel:
    kind: str
    symbol: str | None = None
    interval: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "alerts":
            return "alerts"
        if self.kind == "candles":
            return f"candles.{self.interval}.{self.symbol}"
        return f"{self.kind}.{self.symbol}"


def trades_channel(symbol: str) -> str:
    return f"trades.{symbol}"


def quotes_channel(symbol: str) -> str:
    return f"quotes.{symbol}"


def candles_channel(interval: str, symbol: str) -> str:
    return f"candles.{interval}.{symbol}"


ALERTS_CHANNEL = "alerts"


def channel_parse(text: object) -> Channel:
    """A Channel from its name; raises BadChannel. Symbols are upper-cased."""
    if not isinstance(text, str) or not text or len(text) > 40:
        raise BadChannel(f"{str(text)[:40]!r} is not a channel: use {_EXAMPLES}")
    if text == ALERTS_CHANNEL:
        return Channel("alerts")
    kind, _, rest = text.partition(".")
    if kind == "candles":
        interval, _, symbol = rest.partition(".")
        if interval not in INTERVALS:
            raise BadChannel(f"{text!r}: unknown candle interval {interval!r}: use one of {', '.join(INTERVALS)}")
        channel = Channel("candles", symbol_upper(symbol), interval)
    elif kind in ("trades", "quotes"):
        channel = Channel(kind, symbol_upper(rest))
    else:
        raise BadChannel(f"{text[:40]!r} is not a channel: use {_EXAMPLES}")
    if not is_valid_symbol(channel.symbol):
        raise BadChannel(f"{text[:40]!r}: {channel.symbol!r} is not a symbol")
    return channel
