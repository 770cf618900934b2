"""Reads of market data. Views call these; they never build querysets themselves."""

from __future__ import annotations

from market.models import Symbol, Trade


def symbol_exists(*, ticker: str) -> bool:
    return Symbol.objects.filter(ticker=ticker, active=True).exists()


def symbol_list() -> list[Symbol]:
    return list(Symbol.objects.filter(active=True).order_by("ticker"))


def trade_list(*, symbol: str, limit: int) -> list[Trade]:
    """Newest first, served by the (symbol, time, trade_id) primary key."""
    return list(Trade.objects.filter(symbol=symbol).order_by("-time", "-trade_id")[:limit])
