"""Writes of market data: the only place that changes market tables."""

from __future__ import annotations

from collections.abc import Sequence

from market.models import Symbol


def symbols_seed(*, tickers: Sequence[str]) -> int:
    """Create the symbols that do not exist yet; returns how many were new."""
    existing = set(Symbol.objects.filter(ticker__in=tickers).values_list("ticker", flat=True))
    new = [Symbol(ticker=ticker) for ticker in tickers if ticker not in existing]
    Symbol.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)
