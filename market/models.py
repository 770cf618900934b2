"""Market data at rest: symbols, trades, quotes and OHLCV candles.

Trades, quotes and candles are time-series tables. Their tables are created by
the migrations in the active storage mode (see market/storage.py): TimescaleDB
hypertables when the extension exists, native PostgreSQL range partitions by
time when it does not. Either way every unique key includes the time column,
which both modes require.
"""

from django.core.exceptions import ValidationError
from django.db import models

from streaming.schemas import SYMBOL_RULE, is_valid_symbol

PRICE = {"max_digits": 20, "decimal_places": 8}
SIZE = {"max_digits": 24, "decimal_places": 8}


class Symbol(models.Model):
    ticker = models.CharField(max_length=16, primary_key=True)
    name = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ticker"]

    def __str__(self) -> str:
        return self.ticker

    def clean(self) -> None:
        """A ticker the feeds could never publish would be listed by the API and then refused by it."""
        if not is_valid_symbol(self.ticker):
            raise ValidationError({"ticker": f"{self.ticker!r} is not a symbol: use {SYMBOL_RULE}"})


class Trade(models.Model):
    """One stored trade. (symbol, time, trade_id) is the primary key: it
    serves the API's newest-first reads per symbol and makes a redelivered
    trade a conflict that the ingest ignores."""

    pk = models.CompositePrimaryKey("symbol", "time", "trade_id")
    symbol = models.CharField(max_length=16)
    time = models.DateTimeField()
    trade_id = models.CharField(max_length=64)
    seq = models.BigIntegerField()
    price = models.DecimalField(**PRICE)
    size = models.DecimalField(**SIZE)
    side = models.CharField(max_length=4)
    received_at = models.DateTimeField()

    class Meta:
        managed = False  # created in the storage mode's DDL by migration 0002
        db_table = "market_trade"


class Quote(models.Model):
    pk = models.CompositePrimaryKey("symbol", "time", "quote_id")
    symbol = models.CharField(max_length=16)
    time = models.DateTimeField()
    quote_id = models.CharField(max_length=64)
    bid = models.DecimalField(**PRICE)
    ask = models.DecimalField(**PRICE)
    bid_size = models.DecimalField(**SIZE)
    ask_size = models.DecimalField(**SIZE)

    class Meta:
        managed = False
        db_table = "market_quote"


class Candle(models.Model):
    """An OHLCV candle of one (symbol, interval, bucket start).

    `notional` (sum of price × size) is stored so that VWAP stays exact and
    candles can be merged; the first/last keys (time, seq, trade id) decide
    open and close whatever order trades arrive in.
    """

    pk = models.CompositePrimaryKey("symbol", "interval", "time")
    symbol = models.CharField(max_length=16)
    interval = models.CharField(max_length=3)
    time = models.DateTimeField()
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    volume = models.DecimalField(max_digits=38, decimal_places=8)
    trades = models.BigIntegerField()
    notional = models.DecimalField(max_digits=50, decimal_places=16)
    first_trade_time = models.DateTimeField()
    first_trade_seq = models.BigIntegerField()
    first_trade_id = models.CharField(max_length=64)
    last_trade_time = models.DateTimeField()
    last_trade_seq = models.BigIntegerField()
    last_trade_id = models.CharField(max_length=64)
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "market_candle"


class RetiredTradeDay(models.Model):
    """A UTC day of a symbol's trades that retention dropped. Its candles are final: a trade of it that
    comes again (a file replayed a second time) is not stored, since its id, which told a repeat, is gone."""

    symbol = models.CharField(max_length=16)
    day = models.DateField()
    retired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["symbol", "day"], name="retired_trade_day_unique")]

    def __str__(self) -> str:
        return f"{self.symbol} {self.day}"
