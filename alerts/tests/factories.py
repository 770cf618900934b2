"""Builders of trades, quotes and rules for the detector tests. Times are seconds after T0."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alerts.domain.detectors import AlertSignal, AnomalyEngine
from alerts.domain.rules import RuleConfig, rule_config_from_params
from streaming.schemas import Quote, Trade

T0 = datetime(2024, 1, 2, 14, 0, tzinfo=UTC)  # a minute boundary
_ids = itertools.count()


def at(seconds: float) -> datetime:
    return T0 + timedelta(microseconds=round(seconds * 1_000_000))


def trade(symbol: str, seconds: float, price: str | Decimal | int, size: str | int = 1, seq: int = 0) -> Trade:
    return Trade(id=f"t{next(_ids)}", symbol=symbol, ts=at(seconds), seq=seq, price=Decimal(price),
                 size=Decimal(size), side="buy")


def quote(symbol: str, seconds: float, bid: str | Decimal, ask: str | Decimal) -> Quote:
    return Quote(id=f"q{next(_ids)}", symbol=symbol, ts=at(seconds), bid=Decimal(bid), ask=Decimal(ask),
                 bid_size=Decimal(100), ask_size=Decimal(100))


def rule(type: str, cooldown_seconds: int = 300, symbol_overrides=None, **params) -> RuleConfig:
    return rule_config_from_params(rule=type.replace("_", "-"), type=type, params=params,
                                   symbol_overrides=symbol_overrides, cooldown_seconds=cooldown_seconds)


def engine(*rules: RuleConfig) -> AnomalyEngine:
    return AnomalyEngine(rules)


def feed(eng: AnomalyEngine, trades: Iterable[Trade], batch: int = 1, advance: bool = False) -> list[AlertSignal]:
    """Feed trades in batches of ``batch``, each grouped by symbol like the consumer does; with ``advance``, call advance(latest ts of the batch) after each."""
    trades = list(trades)
    out: list[AlertSignal] = []
    for i in range(0, len(trades), batch):
        chunk = consumer_order(trades[i : i + batch])
        out += eng.on_trades(chunk)
        if advance:
            out += eng.advance(max(t.ts for t in chunk))
    return out


def consumer_order(trades: Sequence[Trade]) -> list[Trade]:
    """The anomaly consumer's order within a batch: grouped by symbol, each in the order it came."""
    return sorted(trades, key=lambda t: t.symbol)


def steady(
    symbol: str, start: float, end: float, price: str = "100.00", every: float = 1.0, size: int = 1
) -> list[Trade]:
    """One trade every ``every`` seconds in [start, end) at a fixed price."""
    count = round((end - start) / every)
    return [trade(symbol, start + i * every, price, size, seq=i) for i in range(count)]
