"""Messages written straight to wire bytes are, byte for byte, what encoding the struct gives,
over the contract's whole value space."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from market.domain.candles import decimal_text
from streaming.schemas import MAX_PRICE, Quote, Trade, encode
from streaming.wire import UtcTexts, cents_text, epoch_ms, quote_bytes, trade_bytes

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)

symbols = st.from_regex(r"\A[A-Z0-9][A-Z0-9.\-]{0,15}\Z")
# Ids as the producers make them: a prefix of symbol characters, digits and dashes, then a number or a digest.
id_heads = st.from_regex(r"\A[a-z]{1,4}-[0-9A-Z.\-]{0,40}\Z")
id_tails = st.integers(0, 10**15) | st.from_regex(r"\A[0-9a-f]{0,24}\Z")
# Microseconds since the epoch over the years 1-9999, whole seconds (written without a fraction) included.
epoch_us = st.integers(MIN_US, MAX_US) | st.integers(MIN_US // 10**6, MAX_US // 10**6).map(lambda s: s * 10**6)
cents = st.integers(1, int(MAX_PRICE * 100))
prices = st.decimals(min_value=Decimal("0.00000001"), max_value=MAX_PRICE, places=8, allow_nan=False,
                     allow_infinity=False) | cents.map(lambda c: Decimal(c).scaleb(-2))
sizes = st.integers(1, 10**16 - 1).map(Decimal) | st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("9999999999999999"), places=8)


def at(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@given(head=id_heads, tail=id_tails, symbol=symbols, us=epoch_us, seq=st.integers(0, 2**62), price=prices,
       size=sizes, side=st.sampled_from(["buy", "sell"]))
def test_a_trade_written_directly_is_its_encoding(head, tail, symbol, us, seq, price, size, side):
    trade = Trade(id=f"{head}{tail}", symbol=symbol, ts=at(us), seq=seq, price=price, size=size, side=side)
    written = trade_bytes(head, tail, symbol, UtcTexts().text(us), seq, f"{price:f}", f"{size:f}", side)
    assert written == encode(trade)


@given(head=id_heads, tail=id_tails, symbol=symbols, us=epoch_us, bid=prices, ask=prices,
       bid_size=sizes | st.just(Decimal(0)), ask_size=st.integers(0, 10**9))
def test_a_quote_written_directly_is_its_encoding(head, tail, symbol, us, bid, ask, bid_size, ask_size):
    quote = Quote(id=f"{head}{tail}", symbol=symbol, ts=at(us), bid=bid, ask=ask, bid_size=bid_size,
                  ask_size=Decimal(ask_size))
    written = quote_bytes(head, tail, symbol, UtcTexts().text(us), f"{bid:f}", f"{ask:f}", f"{bid_size:f}", ask_size)
    assert written == encode(quote)


@given(c=cents)
def test_whole_cents_are_written_as_the_rest_api_writes_them(c):
    assert cents_text(c) == decimal_text(Decimal(c).scaleb(-2))


@given(times=st.lists(epoch_us, min_size=1, max_size=50), step=st.integers(0, 3 * 10**6))
def test_utc_texts_remembering_a_second_write_every_time_as_encoding_does(times, step):
    # In any order, and in runs within one second: the remembered second is never used for another.
    times = times + [times[0] + i * step for i in range(1, 20) if times[0] + i * step <= MAX_US]
    texts = UtcTexts()
    for us in times:
        assert texts.text(us) == encode(at(us)).decode().strip('"')


@given(us=epoch_us)
def test_the_kafka_timestamp_is_the_epoch_millisecond_rounded_down(us):
    assert epoch_ms(at(us)) == us // 1000
