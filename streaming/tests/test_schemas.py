"""The message contract: every valid message survives a JSON round trip
exactly; invalid ones are refused with a message that says why."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.schemas import MAX_PRICE, Alert, Candle, Quote, Trade, check_decimal, decoder_for, encode

symbols = st.from_regex(r"\A[A-Z0-9][A-Z0-9.\-]{0,15}\Z")
times = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]))
prices = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("999999999999"), places=8,
                     allow_nan=False, allow_infinity=False)
sizes = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("9999999999999999"), places=8,
                    allow_nan=False, allow_infinity=False)
ids = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=64)

trades = st.builds(Trade, id=ids, symbol=symbols, ts=times, seq=st.integers(0, 2**62), price=prices, size=sizes,
                   side=st.sampled_from(["buy", "sell"]))
quotes = st.builds(Quote, id=ids, symbol=symbols, ts=times, bid=prices, ask=prices,
                   bid_size=sizes | st.just(Decimal(0)), ask_size=sizes)


@given(trades)
def test_a_trade_survives_the_wire_exactly(trade):
    decoded = decoder_for(Trade).decode(encode(trade))
    assert decoded == trade
    assert decoded.price == trade.price and str(decoded.price) == str(trade.price)
    assert decoded.ts.tzinfo is UTC and decoded.ts == trade.ts
    assert msgspec.json.decode(encode(trade))["price"] == f"{trade.price:f}"  # digits, never 9.0E-7


def test_decimals_are_written_in_digits_whatever_their_exponent():
    trade = Trade(id="META-1E-7", symbol="META", ts=datetime(2026, 1, 1, tzinfo=UTC), seq=1,
                  price=Decimal("0.00000090"), size=Decimal("1E+2"), side="buy")
    assert encode(trade) == (b'{"id":"META-1E-7","symbol":"META","ts":"2026-01-01T00:00:00Z","seq":1,'
                             b'"price":"0.00000090","size":"100","side":"buy","version":1}')
    assert decoder_for(Trade).decode(encode(trade)) == trade


@given(quotes)
def test_a_quote_survives_the_wire_exactly(quote):
    assert decoder_for(Quote).decode(encode(quote)) == quote


def test_prices_are_strings_on_the_wire_and_numbers_are_accepted_exactly():
    trade = Trade(id="x", symbol="AAPL", ts=datetime(2026, 1, 1, tzinfo=UTC), seq=1, price=Decimal("187.23"),
                  size=Decimal("100"), side="buy")
    assert b'"price":"187.23"' in encode(trade)
    decoded = decoder_for(Trade).decode(
        b'{"id":"x","symbol":"AAPL","ts":"2026-01-01T00:00:00Z","seq":1,"price":187.23,"size":100,"side":"buy"}')
    assert decoded.price == Decimal("187.23")


BASE = {"id": "x", "symbol": "AAPL", "ts": "2026-01-01T00:00:00Z", "seq": 1, "price": "1.5", "size": "1",
        "side": "buy"}


@pytest.mark.parametrize(("change", "reason"), [
    ({"price": "0"}, "price must be positive"),
    ({"price": "-1"}, "price must be positive"),
    ({"price": "NaN"}, "finite"),
    ({"price": "1.123456789"}, "more than 8 decimal places"),
    ({"size": "1e17"}, "size must be at most"),
    ({"ts": "2026-01-01T00:00:00"}, "timezone"),
    ({"symbol": "aapl"}, "$.symbol"),
    ({"symbol": "AAPL\n"}, "$.symbol"),  # Python's $ alone would let the newline through
    ({"side": "short"}, "$.side"),
    ({"version": 2}, "$.version"),
    ({"extra": 1}, "unknown field"),
    ({"id": ""}, "$.id"),
])
def test_an_invalid_trade_is_refused_with_the_reason(change, reason):
    payload = msgspec.json.encode({**BASE, **change})
    with pytest.raises(msgspec.ValidationError) as error:
        decoder_for(Trade).decode(payload)
    assert reason.lower() in str(error.value).lower()


def test_bytes_that_are_not_json_are_a_decode_error():
    with pytest.raises(msgspec.DecodeError):
        decoder_for(Trade).decode(b"\x00\xff garbage")


def test_candle_and_alert_messages_round_trip():
    ts = datetime(2026, 1, 1, 14, 30, tzinfo=UTC)
    candle = Candle(symbol="AAPL", interval="1m", start=ts, open=Decimal("1"), high=Decimal("2"), low=Decimal("1"),
                    close=Decimal("2"), volume=Decimal("10"), trades=2, vwap=Decimal("1.5"), first_trade_ts=ts,
                    last_trade_ts=ts + timedelta(seconds=5))
    assert decoder_for(Candle).decode(encode(candle)) == candle
    alert = Alert(id="al-1", rule="price-spike", type="price_spike", severity="high", symbol="TSLA", message="m",
                  ts=ts, detected_at=ts, observed={"change_pct": "8.4", "window_s": 42})
    assert decoder_for(Alert).decode(encode(alert)) == alert


@pytest.mark.parametrize(("value", "shown"), [("1e400", "got 1.000000e+400"), ("-12.5", "got -12.5"),
                                             ("1234567890123", "got 1234567890123")])
def test_a_refused_value_is_shown_short_however_many_digits_it_has(value, shown):
    with pytest.raises(ValueError) as refused:
        check_decimal("price", Decimal(value), maximum=MAX_PRICE)
    assert str(refused.value).endswith(shown) and len(str(refused.value)) < 80
