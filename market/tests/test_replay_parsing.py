"""Recorded CSV rows become the same trades and quotes, exactly, with stable ids, or say which line is bad."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.domain.candles import decimal_text
from market.domain.replay import (
    ColumnMapping,
    ReplayError,
    ReplayParser,
    mapping_from_header,
    parse_csv,
    parse_timestamp,
)
from streaming.schemas import Quote, Trade, decoder_for, encode

SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "sample_trades.csv"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_text(text: str, **options) -> list[Trade | Quote]:
    return list(parse_csv(io.StringIO(text), **options))


def sample_lines() -> list[str]:
    return SAMPLE.read_text().splitlines(keepends=True)


def test_the_sample_file_round_trips_exact_prices_and_timestamps():
    messages = list(parse_csv(sample_lines()))
    with SAMPLE.open(newline="") as f:
        rows = list(csv.DictReader(f))

    assert len(messages) == len(rows) > 200
    for row, trade in zip(rows, messages):
        assert isinstance(trade, Trade)
        assert trade.symbol == row["symbol"]
        assert trade.ts == datetime.fromisoformat(row["timestamp"])
        # Exact: the file's value, not a float's neighbour, written as the REST API writes it.
        assert f"{trade.price:f}" == decimal_text(Decimal(row["price"]))
        assert f"{trade.size:f}" == decimal_text(Decimal(row["size"]))
        if row["side"]:
            assert trade.side == row["side"]
        # The message is valid on the wire, as consumers will decode it.
        assert decoder_for(Trade).decode(encode(trade)) == trade

    by_symbol = defaultdict(list)
    for trade in messages:
        by_symbol[trade.symbol].append(trade)
    assert set(by_symbol) == {"AAPL", "ETH-USD"}
    for trades in by_symbol.values():
        assert [t.seq for t in trades] == list(range(1, len(trades) + 1))
    assert len({t.id for t in messages}) == len(messages)

    # What the file is there to exercise.
    times = [t.ts for t in messages]
    assert max(b - a for a, b in zip(times, times[1:])) > timedelta(hours=3)
    assert len(times) - len(set(times)) > 20  # many trades share a timestamp
    assert any(t.price.as_tuple().exponent == -4 for t in by_symbol["AAPL"])
    assert any(t.size != t.size.to_integral_value() for t in by_symbol["ETH-USD"])
    assert {t.side for t in by_symbol["AAPL"]} == {"buy", "sell"}  # inferred: the file has no AAPL sides


def test_a_gzipped_file_read_as_text_parses_like_the_plain_file(tmp_path):
    packed = tmp_path / "sample_trades.csv.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    with gzip.open(packed, "rt", newline="") as f:
        assert list(parse_csv(f)) == list(parse_csv(sample_lines()))


def sample_as_json_lines() -> list[str]:
    """The sample file as JSON lines: prices and sizes as JSON numbers written as in the file, no side as null."""
    with SAMPLE.open(newline="") as f:
        return [f'{{"symbol": {json.dumps(row["symbol"])}, "timestamp": {json.dumps(row["timestamp"])}, '
                f'"price": {row["price"]}, "size": {row["size"]}, "side": {json.dumps(row["side"] or None)}}}\n'
                for row in csv.DictReader(f)]


def test_json_lines_of_the_sample_give_the_messages_of_the_csv_ids_included():
    lines = sample_as_json_lines()
    assert any('"price": 3411.20,' in line for line in lines)  # a number's trailing zero: the text is kept
    assert list(ReplayParser().parse_lines(lines, json_lines=True)) == list(parse_csv(sample_lines()))


def test_json_lines_read_nested_objects_by_dotted_names_and_booleans():
    # Binance's combined trade stream, as recorded from its WebSocket.
    line = ('{"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1767225600136, "s": "BTCUSDT", "t": 4211, '
            '"p": "87500.10", "q": "0.00120", "T": 1767225600134, "m": %s}}\n')
    parser = ReplayParser(overrides={"symbol": "data.s", "price": "data.p", "size": "data.q", "timestamp": "data.T",
                                     "id": "data.t", "buyer_is_maker": "data.m"})
    first, second = parser.parse_lines([line % "true", "\n", line.replace("4211", "4212") % "false"],
                                       json_lines=True)
    assert (first.symbol, first.price, first.size, first.side) == ("BTCUSDT", Decimal("87500.1"), Decimal("0.0012"),
                                                                    "sell")
    assert first.ts == datetime(2026, 1, 1, 0, 0, 0, 134000, tzinfo=UTC)
    assert second.side == "buy" and second.id != first.id


def test_json_objects_before_the_first_with_a_trades_fields_are_skipped_and_lists_are_read_as_text():
    # A WebSocket recording: the subscription's acknowledgement first; trades with a list beside them.
    lines = ['{"result": null, "id": 1}\n', '{"event": "subscribed", "channel": "trades"}\n',
             '{"symbol": "AAPL", "timestamp": "2026-01-02T14:30:00Z", "price": 187.5, "size": 100, "conditions": [12, 37]}\n']
    parser = ReplayParser()
    [trade] = parser.parse_lines(lines, json_lines=True)
    assert (trade.symbol, trade.price) == ("AAPL", Decimal("187.5"))
    assert parser.preamble_lines == 2 and parser.errors == 0
    # No object with a trade's or a quote's fields at all: what the first one lacked.
    with pytest.raises(ReplayError, match="no timestamp column"):
        list(ReplayParser().parse_lines(lines[:2], json_lines=True))


@pytest.mark.parametrize(("line", "reason"), [
    ("not json\n", "not JSON: 'not json'"),
    ('["AAPL", 1]\n', "not a JSON object"),
    ('{"symbol": "AAPL", "timestamp": "2026-01-02T14:30:00Z", "price": [1, 2], "size": 1}\n', "price"),
    ('{"symbol": "AAPL", "timestamp": "2026-01-02T14:30:00Z", "price": NaN, "size": 1}\n', "not JSON"),
    ('{"symbol": "AAPL", "timestamp": "2026-01-02T14:30:00Z", "size": 1}\n', "price"),
])
def test_a_bad_json_line_is_a_bad_row_named_by_its_line_and_the_next_ones_are_read(line, reason):
    good = '{"symbol": "AAPL", "timestamp": "2026-01-02T14:30:0%dZ", "price": 187.5, "size": 100}\n'
    errors = []
    messages = list(ReplayParser().parse_lines([good % 1, line, good % 2], json_lines=True, on_error=errors.append))
    assert [m.ts.second for m in messages] == [1, 2]
    [error] = errors
    assert error.line == 2 and reason in error.reason, error.reason
    with pytest.raises(ReplayError, match="line 2: "):
        list(ReplayParser().parse_lines([good % 1, line, good % 2], json_lines=True))


def test_replaying_a_file_twice_gives_the_same_ids():
    first = [m.id for m in parse_csv(sample_lines())]
    second = [m.id for m in parse_csv(sample_lines())]
    assert first == second
    assert all(i.startswith("r-") and len(i) == 26 for i in first)


def test_identical_rows_are_distinct_trades_with_distinct_ids():
    text = "timestamp,symbol,price,size,side\n" + "2026-01-05T14:30:00Z,AAPL,230.10,100,buy\n" * 3
    trades = parse_text(text)
    assert len({t.id for t in trades}) == 3
    assert [t.seq for t in trades] == [1, 2, 3]
    # The k-th copy has the same id in another file: a replay still dedupes.
    assert [t.id for t in parse_text(text)] == [t.id for t in trades]


def test_identical_rows_parted_by_a_row_out_of_time_order_are_still_distinct_trades():
    header = "sip_timestamp,ticker,price,size\n"
    same = "1767623401000000000,XLATE,14.10,100\n"
    text = header + same * 3 + "1767623400000000000,XLATE,14.10,100\n" + same * 2  # a late print 1 s back
    parser = ReplayParser()
    trades = list(parser.parse_lines(io.StringIO(text)))
    assert len({t.id for t in trades}) == 6
    assert (parser.out_of_order_rows, parser.unsure_rows) == (1, 0)
    assert [t.id for t in parse_text(text)] == [t.id for t in trades]


def test_late_rows_are_told_apart_while_remembered_and_counted_as_unsure_after():
    late = [f"{1767623400000000 + i % 3},AAPL,1,1" for i in range(6)]  # two identical late rows at each of 3 times
    parser = ReplayParser(late_rows_remembered=3)
    text = "ts,symbol,price,size\n1767723400000000,AAPL,1,1\n" + "\n".join(late) + "\n"
    trades = list(parser.parse_lines(io.StringIO(text)))
    assert len({t.id for t in trades[:4]}) == 4  # the row in order and the first 3 late rows, remembered
    assert (parser.out_of_order_rows, parser.unsure_rows) == (6, 3)  # forgotten: the 3 after may repeat ids
    roomier = ReplayParser(late_rows_remembered=6)
    assert len({t.id for t in roomier.parse_lines(io.StringIO(text))}) == 7 and roomier.unsure_rows == 0


def test_a_late_print_moves_neither_the_sides_nor_the_ids_of_the_trades_after_it():
    header = "timestamp,symbol,price,size\n"
    in_order = ["2026-01-05T10:00:00Z,AAPL,10.00,100\n", "2026-01-05T10:00:01Z,AAPL,10.00,100\n"] * 2
    late = "2026-01-05T09:59:00Z,AAPL,11.00,100\n"
    with_late = parse_text(header + in_order[0] + late + in_order[1] + late + in_order[3])
    without = parse_text(header + in_order[0] + in_order[1] + in_order[3])
    # Each late print is ticked against 10.00 (up: a buy), and the trades after it against 10.00 too, not 11.00.
    assert [t.side for t in with_late] == ["buy"] * 5
    assert [t.id for t in with_late if t.price == 10] == [t.id for t in without]


def test_a_symbols_quotes_and_trades_are_each_in_their_own_time_order():
    rows = [f"{1767623400000000 + i * 5},AAPL,230.1,100,,\n" if i % 2 else f"{1767623400000000 + i * 5},AAPL,,,230,230.2\n"
            for i in range(10)]
    parser = ReplayParser()
    list(parser.parse_lines(io.StringIO("ts,symbol,price,size,bid,ask\n" + "".join(rows))))
    assert parser.out_of_order_rows == 0


def test_a_vendor_id_column_identifies_the_trade_or_quote():
    text = (
        "id,price,qty,time,is_buyer_maker\n"
        "5500000001,91234.57000000,0.00012000,1767623400000,true\n"
        "5500000002,91234.57000000,0.00012000,1767623400000,true\n"  # an identical fill: another id
        "5500000002,91234.57000000,0.00012000,1767623400000,true\n"  # the row again: the same trade
    )
    first, second, again = parse_text(text, default_symbol="BTCUSDT")
    assert first.id != second.id == again.id
    # Its position does not matter: a file of the same trades in another order, or overlapping another
    # file, names them alike.
    lines = text.splitlines(keepends=True)
    assert {t.id for t in parse_text(lines[0] + lines[3] + lines[1], default_symbol="BTCUSDT")} == {
        first.id, second.id}
    # Another column called id that is no trade id is ignored on request: identical rows are counted again.
    ignored = ReplayParser(default_symbol="BTCUSDT", overrides={"id": None}).parse_lines(io.StringIO(text))
    assert len({t.id for t in ignored}) == 3
    quotes = ("sequence_number,ticker,sip_timestamp,bid_price,ask_price\n"
              "7,SOFI,1767623400000000000,14.1,14.2\n7,SOFI,1767623400000000000,14.1,14.2\n"
              "8,SOFI,1767623400000000000,14.1,14.2\n")
    assert len({q.id for q in parse_text(quotes)}) == 2


def test_a_trade_with_a_vendor_id_has_one_id_whatever_the_side_inferred_for_it():
    header = "sequence_number,ticker,sip_timestamp,price,size\n"
    seven = "7,SOFI,1767623400000000000,14.10,100\n"
    alone = parse_text(header + seven)[0].id
    # No side column: the tick rule makes it a sell after 14.20, a buy first, and it is the same trade.
    in_a_longer_file = parse_text(header + "6,SOFI,1767623399000000000,14.20,100\n" + seven + seven)
    assert [t.side for t in in_a_longer_file] == ["buy", "sell", "sell"]
    assert in_a_longer_file[1].id == in_a_longer_file[2].id == alone


def test_ids_depend_on_the_values_not_on_how_they_are_written():
    iso = parse_text("timestamp,symbol,price,size,side\n2026-01-05T14:30:00.250Z,AAPL,230.10,100,buy\n")
    epoch = parse_text("time,ticker,price,qty,side\n1767623400250,aapl,230.1,100.0,B\n")
    assert iso[0].id == epoch[0].id
    other_side = parse_text("timestamp,symbol,price,size,side\n2026-01-05T14:30:00.250Z,AAPL,230.10,100,sell\n")
    other_size = parse_text("timestamp,symbol,price,size,side\n2026-01-05T14:30:00.250Z,AAPL,230.10,101,buy\n")
    assert len({iso[0].id, other_side[0].id, other_size[0].id}) == 3


def test_a_zero_size_quote_has_one_id_however_its_zero_is_written():
    header = "timestamp,symbol,bid,ask,bid_size,ask_size\n"
    ids = {parse_text(f"{header}2026-01-05T14:30:00Z,AAPL,230.1,230.2,{zero},5\n")[0].id
           for zero in ("0", "-0", "0.00", "0E-8")}
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767623400", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
        ("1767623400.5", datetime(2026, 1, 5, 14, 30, 0, 500000, tzinfo=UTC)),
        ("1767623400.123456", datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)),
        ("1767623400123", datetime(2026, 1, 5, 14, 30, 0, 123000, tzinfo=UTC)),
        ("1767623400123.456", datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)),
        ("1767623400123456", datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)),
        ("1767623400123456789", datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)),
        ("946684800", datetime(2000, 1, 1, tzinfo=UTC)),
        ("946684800000000000", datetime(2000, 1, 1, tzinfo=UTC)),
    ],
)
def test_the_epoch_unit_is_read_from_the_magnitude(text, expected):
    assert parse_timestamp(text) == expected


def test_a_forced_epoch_unit_wins_over_the_magnitude():
    assert parse_timestamp("1767623400", epoch_unit="ms") == datetime(1970, 1, 21, 11, 0, 23, 400000, tzinfo=UTC)
    assert parse_timestamp("1767623400123", epoch_unit="us") == EPOCH + timedelta(microseconds=1767623400123)
    assert parse_timestamp("86400.25", epoch_unit="s") == datetime(1970, 1, 2, 0, 0, 0, 250000, tzinfo=UTC)
    trades = parse_text("ts,symbol,price,size\n1767623400,AAPL,1,1\n", epoch_unit="ns")
    assert trades[0].ts == datetime(1970, 1, 1, 0, 0, 1, 767623, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T14:30:00Z", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
        ("2026-01-05T09:30:00-05:00", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
        ("2026-01-05T20:00:00.5+05:30", datetime(2026, 1, 5, 14, 30, 0, 500000, tzinfo=UTC)),
        ("2026-01-05 14:30:00", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),  # naive is UTC
        ("2026-01-05T14:30:00.123456789Z", datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)),  # truncated
        ("  2026-01-05T14:30:00Z ", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
    ],
)
def test_iso_timestamps_become_utc_with_microsecond_precision(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "12:30", "1e400", "nan",
                                  "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_bad_timestamp_is_a_replay_error(text):
    with pytest.raises(ReplayError, match="timestamp"):
        parse_timestamp(text)


BAD_FILE = """timestamp,symbol,price,size,side
2026-01-05T14:30:00Z,AAPL,230.10,100,buy

2026-01-05T14:30:01Z,AAPL,abc,100,buy
2026-01-05T14:30:02Z,AAPL,230.12,0,buy
2026-01-05T14:30:03Z,AAPL,230.13,100,maybe
2026-01-05T14:30:04Z,AAPL,230.14,100
not a time,AAPL,230.15,100,buy
2026-01-05T14:30:06Z,AAPL,230.123456789,100,buy
2026-01-05T14:30:07Z,AAPL,-1,100,buy
2026-01-05T14:30:08Z,AAPL,,,buy
2026-01-05T14:30:09Z,AAPL,230.16,100,sell
"""


def test_the_first_bad_row_raises_with_its_line_number_and_reason():
    parser = ReplayParser()
    messages = parser.parse_lines(io.StringIO(BAD_FILE))
    assert next(messages).price == Decimal("230.10")
    with pytest.raises(ReplayError) as caught:
        next(messages)
    assert caught.value.line == 4
    assert str(caught.value) == "line 4: price 'abc' is not a number"


def test_bad_rows_are_reported_with_their_line_numbers_and_skipped_on_request():
    errors: list[ReplayError] = []
    parser = ReplayParser()
    good = list(parser.parse_lines(io.StringIO(BAD_FILE), on_error=errors.append))
    assert [t.price for t in good] == [Decimal("230.10"), Decimal("230.16")]
    reasons = {e.line: e.reason for e in errors}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10, 11]
    assert "price 'abc' is not a number" in reasons[4]
    assert "size must be positive" in reasons[5]
    assert "side 'maybe'" in reasons[6]
    assert "the row has 4 fields, the header has 5" in reasons[7]
    assert "timestamp 'not a time'" in reasons[8]
    assert "more than 8 decimal places" in reasons[9]
    assert "price must be positive" in reasons[10]
    assert "price" in reasons[11]
    assert (parser.rows, parser.trades, parser.quotes, parser.errors) == (10, 2, 0, 8)


def test_a_skipped_bad_row_leaves_no_trace_in_seq_or_side_inference():
    text = (
        "timestamp,symbol,price,size\n"
        "2026-01-05T14:30:00Z,AAPL,230.10,100\n"
        "2026-01-05T14:30:01Z,AAPL,500.00,-5\n"  # bad: would have been an uptick
        "2026-01-05T14:30:02Z,AAPL,230.05,100\n"
    )
    trades = parse_text(text, on_error=lambda e: None)
    assert [t.seq for t in trades] == [1, 2]
    assert [t.side for t in trades] == ["buy", "sell"]  # 230.05 is a downtick from 230.10


def test_missing_columns_are_named_together_with_the_header_found():
    with pytest.raises(ReplayError) as caught:
        mapping_from_header(["when", "symbol", "px_last", "qty"])
    message = str(caught.value)
    assert "no timestamp column (looked for timestamp, time, ts" in message
    assert "no price column" in message
    assert "['when', 'symbol', 'px_last', 'qty']" in message
    with pytest.raises(ReplayError, match="no size column"):
        mapping_from_header(["time", "symbol", "price"])


def test_columns_are_found_case_insensitively_and_can_be_overridden():
    header = ["\ufeffTime", "Ticker", "Trade_Price", "Volume", "Aggressor", "Venue"]
    assert mapping_from_header(header) == ColumnMapping(
        timestamp="\ufeffTime", price="Trade_Price", size="Volume", symbol="Ticker", side="Aggressor"
    )
    mapping = mapping_from_header(header, {"symbol": "venue", "side": None})
    assert mapping.symbol == "Venue" and mapping.side is None
    with pytest.raises(ReplayError, match="'Exchange' given for symbol is not in the header"):
        mapping_from_header(header, {"symbol": "Exchange"})
    with pytest.raises(ReplayError, match="unknown column role"):
        mapping_from_header(header, {"qty": "Volume"})


def test_overridden_columns_are_used_to_parse():
    text = "when,what,px,amount,flag\n1767623400,MSFT,420.5,10,x\n"
    trades = parse_text(text, overrides={"timestamp": "when", "symbol": "what", "price": "px", "side": None})
    assert (trades[0].symbol, trades[0].price, trades[0].size, trades[0].side) == (
        "MSFT",
        Decimal("420.5"),
        Decimal("10"),
        "buy",
    )


def test_a_file_without_a_symbol_column_needs_a_default_symbol():
    text = "timestamp,price,size\n2026-01-05T14:30:00Z,95000.5,0.0015\n"
    with pytest.raises(ReplayError, match=r"no symbol column.*--symbol"):
        parse_text(text)
    trades = parse_text(text, default_symbol="btc-usd")
    assert trades[0].symbol == "BTC-USD"
    with pytest.raises(ReplayError, match="not valid"):
        ReplayParser(default_symbol="BTC USD")


def test_an_empty_symbol_cell_takes_the_default_symbol_or_is_a_bad_row():
    text = "timestamp,symbol,price,size\n2026-01-05T14:30:00Z,,1,1\n"
    assert parse_text(text, default_symbol="JNJ")[0].symbol == "JNJ"
    with pytest.raises(ReplayError, match="line 2: the symbol is empty"):
        parse_text(text)


@pytest.mark.parametrize(
    ("spelling", "side"),
    [
        ("buy", "buy"), ("BUY", "buy"), ("b", "buy"), ("B", "buy"), ("bid", "buy"), ("1", "buy"), ("+1", "buy"),
        ("sell", "sell"), ("Sell", "sell"), ("s", "sell"), ("S", "sell"), ("ask", "sell"), ("-1", "sell"),
        (" sell ", "sell"),
    ],
)  # fmt: skip
def test_side_spellings_are_understood(spelling, side):
    text = f'timestamp,symbol,price,size,side\n2026-01-05T14:30:00Z,AAPL,1,1,"{spelling}"\n'
    assert parse_text(text)[0].side == side


def test_a_missing_side_is_inferred_per_symbol_by_the_tick_rule():
    text = (
        "timestamp,symbol,price,size,side\n"
        "2026-01-05T14:30:00Z,AAPL,10.00,1,\n"  # first: buy
        "2026-01-05T14:30:01Z,AAPL,9.99,1,\n"  # downtick: sell
        "2026-01-05T14:30:01Z,MSFT,50.00,1,\n"  # first MSFT: buy, whatever AAPL did
        "2026-01-05T14:30:02Z,AAPL,9.99,1,\n"  # unchanged: as before, sell
        "2026-01-05T14:30:03Z,AAPL,10.01,1,\n"  # uptick: buy
        "2026-01-05T14:30:04Z,AAPL,10.01,1,sell\n"  # given: sell
        "2026-01-05T14:30:05Z,AAPL,10.01,1,\n"  # unchanged from a given sell: sell
        "2026-01-05T14:30:06Z,MSFT,49.99,1,\n"  # MSFT downtick: sell
    )
    assert [t.side for t in parse_text(text)] == ["buy", "sell", "buy", "sell", "buy", "sell", "sell", "sell"]


def test_rows_with_a_bid_and_an_ask_and_no_price_are_quotes():
    text = (
        "timestamp,symbol,price,size,bid,ask,bid_size,ask_size\n"
        "2026-01-05T14:30:00Z,AAPL,,,230.09,230.11,300,500\n"
        "2026-01-05T14:30:00Z,AAPL,230.11,200,230.09,230.11,300,500\n"
        "2026-01-05T14:30:00Z,AAPL,,,230.09,230.11,,\n"
        "2026-01-05T14:30:00Z,AAPL,,,230.09,230.11,,\n"
        "2026-01-05T14:30:01Z,AAPL,,,230.09,,,\n"
        "2026-01-05T14:30:01Z,AAPL,,,,230.11,,500\n"
    )
    errors: list[ReplayError] = []
    messages = parse_text(text, on_error=errors.append)
    quote, trade, q2, q3 = messages
    assert isinstance(quote, Quote) and isinstance(trade, Trade)
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (
        Decimal("230.09"), Decimal("230.11"), Decimal(300), Decimal(500),
    )  # fmt: skip
    assert (q2.bid_size, q2.ask_size) == (Decimal(0), Decimal(0))
    assert quote.id.startswith("rq-") and len({quote.id, q2.id, q3.id}) == 3
    assert trade.seq == 1
    assert [e.line for e in errors] == [6, 7]
    assert "a bid but no ask" in errors[0].reason and "an ask but no bid" in errors[1].reason


def test_a_quotes_only_file_needs_no_price_column():
    text = "ts,ticker,bid_price,ask_price\n1767623400000,EURUSD,1.08412,1.08415\n"
    (quote,) = parse_text(text)
    assert (quote.symbol, quote.bid, quote.ask) == ("EURUSD", Decimal("1.08412"), Decimal("1.08415"))


def test_many_trades_at_one_timestamp_and_gaps_of_hours_keep_their_event_times():
    rows = ["timestamp,symbol,price,size"]
    rows += [f"2026-01-05T14:30:00Z,AAPL,{230 + i / 100:.2f},100" for i in range(500)]
    rows += ["2026-01-05T20:59:59.999999Z,AAPL,231.00,100", "2026-01-06T14:30:00Z,AAPL,231.50,100"]
    trades = parse_text("\n".join(rows) + "\n")
    assert {t.ts for t in trades[:500]} == {datetime(2026, 1, 5, 14, 30, tzinfo=UTC)}
    assert [t.seq for t in trades] == list(range(1, 503))
    assert trades[-2].ts == datetime(2026, 1, 5, 20, 59, 59, 999999, tzinfo=UTC)
    assert trades[-1].ts - trades[-2].ts > timedelta(hours=17)


def test_fractional_sizes_and_sub_cent_prices_parse_exactly():
    text = "timestamp,symbol,price,size\n2026-01-05T14:30:00Z,BTC-USD,95012.37,0.00012345\n"
    text += "2026-01-05T14:30:00Z,PENNY,0.0001,1500000\n2026-01-05T14:30:00Z,ES,5012.25,3\n"
    btc, penny, es = parse_text(text)
    assert (btc.price, btc.size) == (Decimal("95012.37"), Decimal("0.00012345"))
    assert penny.price == Decimal("0.0001") and str(es.price) == "5012.25"


def test_rows_older_than_an_earlier_row_of_their_symbol_are_counted():
    text = (
        "timestamp,symbol,price,size\n"
        "2026-01-05T14:30:02Z,AAPL,1,1\n"
        "2026-01-05T14:30:01Z,MSFT,1,1\n"
        "2026-01-05T14:30:01Z,AAPL,1,1\n"
        "2026-01-05T14:30:03Z,AAPL,1,1\n"
    )
    parser = ReplayParser()
    trades = list(parser.parse_lines(io.StringIO(text)))
    assert parser.out_of_order_rows == 1
    assert trades[2].ts < trades[0].ts  # kept as recorded, not reordered or shifted


def test_a_row_with_a_comma_too_many_says_so_when_its_extra_field_is_empty():
    header = "ticker,conditions,price,sip_timestamp,size,trf_timestamp\n"
    assert len(parse_text(header + 'SOFI,"14,41",14.1,1767623400000000000,100,\n')) == 1
    assert len(parse_text(header + "SOFI,14,14.1,1767623400000000000,100,,\n")) == 1  # a trailing comma
    with pytest.raises(ReplayError, match=r"^line 2: .*\(the row has 7 fields, the header has 6: a field with a "
                                          r"comma in it, not in quotes\?\)$"):
        parse_text(header + "SOFI,14,41,14.1,1767623400000000000,100,\n")
    with pytest.raises(ReplayError, match=r"^line 2: the row has 7 fields, the header has 6$"):  # said once
        parse_text(header + "SOFI,14,41,14.1,1767623400000000000,100,x\n")


def test_parse_rows_numbers_lines_from_the_header_and_a_delimiter_can_be_chosen():
    rows = [["timestamp", "symbol", "price", "size"], ["1767623400", "AAPL", "1", "1"], ["x", "AAPL", "1", "1"]]
    with pytest.raises(ReplayError, match="^line 3: "):
        list(ReplayParser().parse_rows(rows))
    text = "timestamp;symbol;price;size\n1767623400;AAPL;1,5;1\n"
    with pytest.raises(ReplayError, match="line 2: price '1,5'"):
        list(parse_csv(io.StringIO(text), delimiter=";"))


def test_an_empty_file_or_a_header_only_file_is_handled():
    with pytest.raises(ReplayError, match="empty"):
        parse_text("")
    assert parse_text("timestamp,symbol,price,size\n") == []


def test_several_files_through_one_parser_continue_seq():
    parser = ReplayParser()
    first = list(parser.parse_lines(io.StringIO("timestamp,symbol,price,size\n1767623400,AAPL,1,1\n")))
    second = list(parser.parse_lines(io.StringIO("time,ticker,px,qty\n1767623401,AAPL,2,1\n")))
    assert [t.seq for t in first + second] == [1, 2]
    assert parser.trades == 2


# Property: whatever trades we write, in whichever timestamp format, come back the same.

SYMBOLS = ("AAPL", "BTC-USD", "BRK.B", "X")
UTC_ONLY = st.just(UTC)
OFFSET = timezone(timedelta(hours=5, minutes=30))


@st.composite
def decimals(draw, *, max_digits: int = 11) -> Decimal:
    places = draw(st.integers(min_value=0, max_value=8))
    return Decimal(draw(st.integers(min_value=1, max_value=10**max_digits - 1))).scaleb(-places)


@st.composite
def recorded_trades(draw):
    return {
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "ts": draw(st.datetimes(min_value=datetime(1974, 1, 1), max_value=datetime(2200, 1, 1), timezones=UTC_ONLY)),
        "price": draw(decimals()),
        "size": draw(decimals(max_digits=15)),
        "side": draw(st.sampled_from(("buy", "sell", None))),
        "format": draw(st.sampled_from(("iso_z", "iso_offset", "naive", "s", "ms", "us", "ns"))),
        "sub_us": draw(st.integers(min_value=0, max_value=999)),
    }


def timestamp_text(trade) -> str:
    ts: datetime = trade["ts"]
    us = (ts - EPOCH) // timedelta(microseconds=1)
    match trade["format"]:
        case "iso_z":
            return ts.isoformat().replace("+00:00", "Z")
        case "iso_offset":
            return ts.astimezone(OFFSET).isoformat()
        case "naive":
            return ts.replace(tzinfo=None).isoformat(sep=" ")
        case "s":
            return f"{us // 10**6}.{us % 10**6:06d}"
        case "ms":
            return f"{us // 1000}.{us % 1000:03d}"
        case "us":
            return str(us)
        case _:
            return str(us * 1000 + trade["sub_us"])  # nanoseconds: sub-microsecond digits are truncated


def write_csv(trades) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["timestamp", "symbol", "price", "size", "side"])
    for t in trades:
        writer.writerow([timestamp_text(t), t["symbol"], str(t["price"]), str(t["size"]), t["side"] or ""])
    return out.getvalue()


def tick_rule(trades) -> list[str]:
    """The sides a reader should infer: a straightforward restatement of the documented rule (against the
    symbol's latest trade in time order; a late print moves nothing)."""
    last: dict[str, tuple[Decimal, str]] = {}
    latest: dict[str, datetime] = {}
    sides = []
    for t in trades:
        previous = last.get(t["symbol"])
        if t["side"]:
            side = t["side"]
        elif previous is None or t["price"] > previous[0]:
            side = "buy"
        elif t["price"] < previous[0]:
            side = "sell"
        else:
            side = previous[1]
        if t["symbol"] not in latest or t["ts"] >= latest[t["symbol"]]:
            latest[t["symbol"]] = t["ts"]
            last[t["symbol"]] = (t["price"], side)
        sides.append(side)
    return sides


@settings(max_examples=150, deadline=None)
@given(trades=st.lists(recorded_trades(), max_size=40))
def test_any_trades_written_as_csv_parse_back_to_the_same_values(trades):
    parsed = parse_text(write_csv(trades))
    assert len(parsed) == len(trades)
    for expected, side, got in zip(trades, tick_rule(trades), parsed):
        assert (got.symbol, got.ts, got.price, got.size, got.side) == (
            expected["symbol"], expected["ts"], expected["price"], expected["size"], side,
        )  # fmt: skip
        assert f"{got.price:f}" == decimal_text(expected["price"]) and got.ts.tzinfo is UTC
    for symbol in SYMBOLS:
        assert [t.seq for t in parsed if t.symbol == symbol] == list(
            range(1, sum(t["symbol"] == symbol for t in trades) + 1)
        )


@settings(max_examples=100, deadline=None)
@given(
    trades=st.lists(recorded_trades(), min_size=1, max_size=20),
    copies=st.lists(st.integers(min_value=0, max_value=3), min_size=20, max_size=20),
    data=st.data(),
)
def test_ids_are_unique_within_a_file_in_any_order_and_the_same_on_every_replay(trades, copies, data):
    # Each trade appears 1-4 times: identical rows are separate trades.
    rows = data.draw(st.permutations([t for t, n in zip(trades, copies) for _ in range(n + 1)]))
    text = write_csv(rows)
    first = [m.id for m in parse_text(text)]
    assert len(first) == len(rows) == len(set(first))
    assert [m.id for m in parse_text(text)] == first


def test_an_unreadable_csv_line_is_a_bad_row_too():
    text = "timestamp,symbol,price,size\n" + f'1767623400,AAPL,"{"9" * 200_000}",1\n' + "1767623401,AAPL,1,1\n"
    errors: list[ReplayError] = []
    trades = parse_text(text, on_error=errors.append)
    assert [t.seq for t in trades] == [1]
    assert errors[0].line == 2 and "unreadable CSV" in errors[0].reason
    with pytest.raises(ReplayError, match="line 2: unreadable CSV"):
        parse_text(text)


@settings(max_examples=300, deadline=None)
@given(
    cells=st.lists(
        st.lists(
            st.one_of(
                st.text(max_size=12),
                st.sampled_from(["1767623400", "2026-01-05T14:30:00Z", "1e9999999", "NaN", "-0", "0.000000001",
                                 "sNaN", "Infinity", "1_000", " 5 ", "+1", "-1", "buy", "AAPL", "", "1e-9999999",
                                 "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01 00:00",
                                 "9999-12-31 23:59:59", "2026-03-08 02:30", "\"1,5\"", "14:30:00"]),
            ),
            max_size=7,
        ),
        max_size=10,
    ),
    options=st.sampled_from([{}, {"timezone": "Asia/Tokyo", "decimal_comma": True},
                             {"timezone": "America/New_York", "time_format": "%Y-%m-%d %H:%M"}]),
)  # fmt: skip
def test_garbage_rows_are_replay_errors_never_crashes(cells, options):
    text = "timestamp,symbol,price,size,side,bid,ask\n" + "\n".join(",".join(row) for row in cells) + "\n"
    errors: list[ReplayError] = []
    messages = parse_text(text, on_error=errors.append, **options)
    for message in messages:
        assert decoder_for(type(message)).decode(encode(message)) == message
    assert all(isinstance(e, ReplayError) and e.line is not None for e in errors)
    assert wire_of(text, **options) == (encoded(messages), [str(e) for e in errors])


# The wire form: what the replay command publishes


def wire_of(text: str, **options) -> tuple[list, list[str]]:
    """The wire messages of a CSV text and the errors reported on the way."""
    errors: list[ReplayError] = []
    parser = ReplayParser(**options)
    messages = list(parser.wire_messages(io.StringIO(text), trades_topic="t", quotes_topic="q",
                                         on_error=errors.append))
    return messages, [str(e) for e in errors]


def encoded(messages: list[Trade | Quote]) -> list:
    return [("t" if isinstance(m, Trade) else "q", m.symbol, encode(m), (m.ts - EPOCH) // timedelta(milliseconds=1))
            for m in messages]


@settings(max_examples=150, deadline=None)
@given(trades=st.lists(recorded_trades(), max_size=40))
def test_wire_messages_are_the_encoded_messages_of_parse_lines(trades):
    text = write_csv(trades)
    assert wire_of(text) == (encoded(parse_text(text)), [])


def test_wire_messages_check_rows_as_parse_lines_does():
    errors: list[ReplayError] = []
    good = parse_text(BAD_FILE, on_error=errors.append)
    assert wire_of(BAD_FILE) == (encoded(good), [str(e) for e in errors])
    quotes = ("ts,symbol,bid,ask,bid_size,ask_size\n1767623400000,AAPL,1.5,1.6,100,\n"
              "1767623400001,AAPL,1.5,1.6,,0\n1767623400002,AAPL,1.5,0,100,100\n")
    errors = []
    good = parse_text(quotes, on_error=errors.append)
    assert len(good) == 2 and len(errors) == 1
    assert wire_of(quotes) == (encoded(good), [str(e) for e in errors])


# Files as data vendors publish them (docs/replay.md, "Files from data vendors").


def test_a_column_named_in_another_case_is_matched_exactly_first():
    # Alpaca: t, p, s (size) and S (symbol).
    text = "t,x,p,s,c,i,z,S\n2026-01-05T14:30:01.398374736Z,V,262.38,10,@,5298,C,AAPL\n"
    overrides = {"timestamp": "t", "price": "p", "size": "s", "symbol": "S"}
    [trade] = parse_text(text, overrides=overrides)
    assert (trade.symbol, trade.size, trade.price) == ("AAPL", Decimal(10), Decimal("262.38"))
    # Where neither of two columns is named exactly so, which one is meant cannot be known.
    with pytest.raises(ReplayError, match=r"2 columns of the header .* are named 'Price': .*--column price=NAME"):
        mapping_from_header(["time", "symbol", "PRICE", "price ", "size"], {"price": "Price"})


def test_databento_and_binance_sides_are_understood():
    text = (
        "timestamp,symbol,price,size,side\n"
        "2026-01-05T14:30:00Z,AAPL,10,1,A\n"  # Databento: a sell aggressor
        "2026-01-05T14:30:01Z,AAPL,11,1,N\n"  # not known: the tick rule, an uptick
        "2026-01-05T14:30:02Z,AAPL,10,1,none\n"
    )
    assert [t.side for t in parse_text(text)] == ["sell", "buy", "sell"]
    binance = (
        "id,price,qty,quote_qty,time,is_buyer_maker\n"
        "1,91850.1,0.003,275.5503,1767623400146,false\n"
        "2,91850.0,0.010,918.5,1767623400147,true\n"
        "3,91850.2,0.010,918.5,1767623400148,True\n"
        "4,91850.3,0.010,918.5,1767623400149,\n"  # no value: the tick rule, an uptick
    )
    trades = parse_text(binance, default_symbol="BTCUSDT")
    assert [t.side for t in trades] == ["buy", "sell", "sell", "buy"]
    with pytest.raises(ReplayError, match="line 2: buyer_is_maker 'maybe' is neither true nor false"):
        parse_text(binance.replace("false", "maybe"), default_symbol="BTCUSDT")
    # A side column, where there is one, says the side.
    both = "timestamp,symbol,price,size,side,is_buyer_maker\n2026-01-05T14:30:00Z,X,1,1,buy,true\n"
    assert parse_text(both)[0].side == "buy"


@pytest.mark.parametrize("text", ["93001", "20260105", "0", "-5", "99999999.5"])
def test_a_small_number_is_not_taken_for_an_epoch_time_by_its_magnitude(text):
    with pytest.raises(ReplayError, match=r"too small .* \(--epoch-unit\)"):
        parse_timestamp(text)
    assert parse_timestamp("93001", epoch_unit="s") == EPOCH + timedelta(seconds=93001)


def test_a_date_without_a_time_of_day_is_refused():
    with pytest.raises(ReplayError, match="'2026-01-05' is a date without a time of day"):
        parse_timestamp("2026-01-05")
    assert parse_timestamp("2026-01-05 14") == datetime(2026, 1, 5, 14, tzinfo=UTC)  # an hour is a time of day


def test_a_date_column_beside_a_time_column_makes_the_timestamp():
    kibot = "Date,Time,Price,Volume\n2026-01-05,14:30:00.25,230.1,100\n2026-01-05,14:30:01,230.2,5\n"
    assert [t.ts for t in parse_text(kibot, default_symbol="AAPL")] == [
        datetime(2026, 1, 5, 14, 30, 0, 250000, tzinfo=UTC), datetime(2026, 1, 5, 14, 30, 1, tzinfo=UTC)]
    # Any other time column is a whole timestamp: a date beside it is not part of it.
    session = "date,timestamp,price,size\n2026-01-04,2026-01-05T14:30:00Z,1,1\n"
    assert parse_text(session, default_symbol="AAPL")[0].ts == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    # ... unless mapped; and a date column alone is the timestamp.
    day = "day,clock,price,size\n2026-01-05,14:30,1,1\n"
    mapped = parse_text(day, default_symbol="AAPL", overrides={"date": "day", "timestamp": "clock"})
    assert mapped[0].ts == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    alone = "date,price,size\n2026-01-05 14:30:00,1,1\n"
    assert parse_text(alone, default_symbol="AAPL")[0].ts == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    with pytest.raises(ReplayError, match="'date' given for date is the timestamp column"):
        parse_text(alone, default_symbol="AAPL", overrides={"date": "date"})
    with pytest.raises(ReplayError, match="line 2: the date is empty"):
        parse_text("Date,Time,Price,Volume\n,14:30:00,1,1\n", default_symbol="AAPL")
    with pytest.raises(ReplayError, match=r"'14:30:00' is a time of day without a date: .* \(--column date=NAME\)"):
        parse_text("Day,Time,Price,Volume\n2026-01-05,14:30:00,1,1\n", default_symbol="AAPL")


@pytest.mark.parametrize(
    ("text", "time_format", "expected"),
    [
        ("05.01.2026 14:30:01.658", "%d.%m.%Y %H:%M:%S.%f", datetime(2026, 1, 5, 14, 30, 1, 658000, tzinfo=UTC)),
        ("20260105 143001658", "%Y%m%d %H%M%S%f", datetime(2026, 1, 5, 14, 30, 1, 658000, tzinfo=UTC)),
        ("01/05/2026 02:30:01 PM", "%m/%d/%Y %I:%M:%S %p", datetime(2026, 1, 5, 14, 30, 1, tzinfo=UTC)),
        ("2026-01-05 20:00:00 +0530", "%Y-%m-%d %H:%M:%S %z", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
    ],
)
def test_a_time_format_reads_the_timestamps_written_in_it(text, time_format, expected):
    assert parse_timestamp(text, time_format=time_format) == expected
    with pytest.raises(ReplayError, match="timestamp '2026-01-05T14:30:00Z' does not match the time format"):
        parse_timestamp("2026-01-05T14:30:00Z", time_format=time_format)


@pytest.mark.parametrize(
    ("time_format", "message"),
    [
        ("%d.%m.%Y", "needs the year .* and the hour"),
        ("%H:%M:%S", "needs the year .* and the hour"),
        ("%Y-%m-%d %H %Q", "cannot be read: 'Q' is a bad directive"),
    ],
)
def test_a_time_format_without_a_date_and_a_time_or_with_a_bad_directive_is_refused(time_format, message):
    with pytest.raises(ReplayError, match=message):
        ReplayParser(time_format=time_format)
    with pytest.raises(ReplayError, match="exclude each other"):
        ReplayParser(time_format="%Y %H", epoch_unit="ms")


def test_a_timezone_places_the_times_written_without_an_offset():
    new_york = {"timezone": "America/New_York"}
    assert parse_timestamp("2026-01-05 09:30:00", **new_york) == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    assert parse_timestamp("2026-07-06 09:30:00", **new_york) == datetime(2026, 7, 6, 13, 30, tzinfo=UTC)
    assert parse_timestamp("07/06/2026 09:30", time_format="%m/%d/%Y %H:%M", **new_york) == datetime(
        2026, 7, 6, 13, 30, tzinfo=UTC)
    # A written offset, and an epoch time, say the instant themselves.
    assert parse_timestamp("2026-01-05T09:30:00Z", **new_york) == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    assert parse_timestamp("1767623400", **new_york) == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    # The clocks skip 02:00-03:00 on 2026-03-08 there, and repeat 01:00-02:00 on 2026-11-01: the first is read.
    with pytest.raises(ReplayError, match="'2026-03-08 02:30:00' does not exist in America/New_York"):
        parse_timestamp("2026-03-08 02:30:00", **new_york)
    assert parse_timestamp("2026-11-01 01:30:00", **new_york) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert parse_timestamp("2026-01-05 14:30:00", timezone="UTC") == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    with pytest.raises(ReplayError, match="time zone 'Eastern' is not known"):
        ReplayParser(timezone="Eastern")
    with pytest.raises(ReplayError, match="out of range"):
        parse_timestamp("0001-01-01 00:00:00", timezone="Asia/Tokyo")


ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo")


@settings(max_examples=300, deadline=None)
@given(instant=st.datetimes(min_value=datetime(1974, 1, 1), max_value=datetime(2100, 1, 1), timezones=UTC_ONLY),
       zone_name=st.sampled_from(ZONES))
def test_a_local_time_written_without_its_offset_is_read_back_as_its_instant(instant, zone_name):
    local = instant.astimezone(ZoneInfo(zone_name))
    read = parse_timestamp(local.replace(tzinfo=None).isoformat(sep=" "), timezone=zone_name)
    # Of an hour the clocks repeat, the first is read: the instant itself, or the same wall time before it.
    first = local.replace(fold=0).astimezone(UTC)
    assert read == first and (read == instant or local.fold == 1)


def test_a_row_past_the_latest_time_is_a_bad_row_that_asks_about_the_time_zone():
    latest = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    text = ("timestamp,symbol,price,size\n2026-01-05T14:30:00Z,AAPL,1,1\n2026-01-05 23:30:00,AAPL,1,1\n"
            "2026-01-05T14:31:00Z,AAPL,1,1\n2026-01-05T14:29:00Z,AAPL,1,1\n2026-03-05T14:30:00Z,AAPL,1,1\n")
    errors: list[ReplayError] = []
    trades = list(ReplayParser(latest=latest).parse_lines(io.StringIO(text), on_error=errors.append))
    assert [t.ts for t in trades] == [latest, latest - timedelta(minutes=1)]
    assert [str(e) for e in errors] == [
        "line 3: timestamp '2026-01-05 23:30:00' is in the future (9 hours past this machine's clock): is its time "
        "zone right? (--timezone)",
        "line 4: timestamp '2026-01-05T14:31:00Z' is in the future (1 min past this machine's clock): is its time "
        "zone right? (--timezone)",
        "line 6: timestamp '2026-03-05T14:30:00Z' is in the future (59 days past this machine's clock): is its time "
        "zone right? (--timezone)",
    ]
    assert [t.ts for t in parse_text(text)][-1] == datetime(2026, 3, 5, 14, 30, tzinfo=UTC)  # no limit by default


def test_a_decimal_comma_is_read_when_asked_for_and_gives_the_same_ids():
    european = "Zeit;Symbol;Kurs;Menge\n2026-01-05 14:30:00;SAP;230,5;0,25\n"
    with pytest.raises(ReplayError, match=r"price '230,5' is not a number \(a decimal comma\? --decimal-comma"):
        list(ReplayParser(overrides={"timestamp": "Zeit", "price": "Kurs", "size": "Menge"}).parse_lines(
            io.StringIO(european), delimiter=";"))
    trades = list(ReplayParser(decimal_comma=True, overrides={"timestamp": "Zeit", "price": "Kurs", "size": "Menge"})
                  .parse_lines(io.StringIO(european), delimiter=";"))
    dotted = parse_text("timestamp,symbol,price,size\n2026-01-05 14:30:00,SAP,230.50,0.250\n")
    assert [(t.id, t.price, t.size) for t in trades] == [(t.id, t.price, t.size) for t in dotted]
    assert dotted[0].price == Decimal("230.5") and dotted[0].size == Decimal("0.25")
    quotes = "ts;symbol;bid;ask;bid_size\n2026-01-05 14:30:00;SAP;230,4;230,6;1,5\n"
    quote = list(ReplayParser(decimal_comma=True).parse_lines(io.StringIO(quotes), delimiter=";"))[0]
    assert (quote.bid, quote.ask, quote.bid_size) == (Decimal("230.4"), Decimal("230.6"), Decimal("1.5"))
    with pytest.raises(ReplayError, match="price '1.234,5' is not a number"):
        list(ReplayParser(decimal_comma=True).parse_lines(io.StringIO("ts;symbol;price;size\n"
                                                                      "2026-01-05 14:30:00;SAP;1.234,5;1\n"),
                                                          delimiter=";"))


def test_vendor_timestamp_columns_are_found_the_exchange_time_first():
    assert mapping_from_header(["ticker", "participant_timestamp", "price", "sip_timestamp", "size"]).timestamp \
        == "sip_timestamp"
    assert mapping_from_header(["ts_recv", "ts_event", "price", "size"]).timestamp == "ts_event"
    assert mapping_from_header(["agg_trade_id", "price", "quantity", "transact_time"]).timestamp == "transact_time"


def test_a_file_without_a_header_row_is_read_with_the_column_names_given():
    text = (
        "3512880114,91843.20000000,0.04520000,5702118930,5702118931,1767623400150437,True,True\n"
        "3512880115,91843.18000000,0.00012000,5702118932,5702118934,1767623400384546,False,True\n"
        "3512880116,x,0.1,1,1,1767623400384546,False,True\n"
    )
    with pytest.raises(ReplayError, match=r"first line looks like data, not a header.*--columns NAME,NAME"):
        parse_text(text, default_symbol="BTCUSDT")
    header = ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
              "is_buyer_maker", "is_best_match"]
    errors = []
    trades = parse_text(text, default_symbol="BTCUSDT", header=header, on_error=errors.append)
    assert [(t.price, t.side, t.ts) for t in trades] == [
        (Decimal("91843.20000000"), "sell", datetime(2026, 1, 5, 14, 30, 0, 150437, tzinfo=UTC)),
        (Decimal("91843.18000000"), "buy", datetime(2026, 1, 5, 14, 30, 0, 384546, tzinfo=UTC)),
    ]
    assert [e.line for e in errors] == [3]  # the file's own line numbers: its first line is a row


def test_a_header_read_as_one_field_suggests_the_delimiter():
    with pytest.raises(ReplayError, match=r"one field: are the fields delimited by ';'\? \(--delimiter ';'\)"):
        parse_text("timestamp;symbol;price;size\n2026-01-05T14:30:00Z;AAPL;1;1\n")
    assert parse_text("timestamp;symbol;price;size\n2026-01-05T14:30:00Z;AAPL;1;1\n", delimiter=";")[0].size == 1


def test_fixed_point_prices_are_scaled_exactly():
    text = (
        "timestamp,symbol,price,size,bid,ask\n"
        "2026-01-05T14:30:00Z,AAPL,262400000000,5,,\n"
        "2026-01-05T14:30:00Z,ES,6951750000000,100,,\n"
        "2026-01-05T14:30:01Z,AAPL,,,262390000000,262410000000\n"
    )
    messages = parse_text(text, price_scale="1e-9")
    assert [str(m.price) for m in messages[:2]] == ["262.4", "6951.75"]  # not 262.400000000, nor 6.95175E+3
    assert (messages[1].size, messages[2].bid, messages[2].ask) == (100, Decimal("262.39"), Decimal("262.41"))
    parser = ReplayParser(price_scale="0.0001")
    wire = list(parser.wire_messages(io.StringIO(text.replace(",ES,6951750000000", ",ES,69517500")),
                                     trades_topic="t", quotes_topic="q"))
    assert b'"price":"26240000.0"' not in wire[0][2] and b'"price":"26240000"' in wire[0][2]
    with pytest.raises(ReplayError, match="price must be at most .* --price-scale 1e-9"):
        parse_text(text.replace("262400000000", "1"))  # ES's 6951750000000 unscaled
    with pytest.raises(ReplayError, match=r"at most 999999999999, got 6951750000000$"):  # a scale was given
        parse_text(text.replace("262400000000", "1"), price_scale="1")
    # Exact: a digit the scale would round away is refused, and so is a scale past any range.
    with pytest.raises(ReplayError, match="more than 8 decimal places"):
        parse_text(text.replace("262400000000", "262400000000.0000000000000000000001"), price_scale="1e-9")
    with pytest.raises(ReplayError, match="out of range"):
        parse_text(text.replace("262400000000", "1e999999"), price_scale="10")
    for scale in ("3", "1e-9x", "0", "-1", "nan", "20"):
        with pytest.raises(ReplayError, match="not a power of ten"):
            ReplayParser(price_scale=scale)


def test_databento_files_need_their_price_scale_and_book_files_are_refused():
    header = "ts_recv,ts_event,rtype,publisher_id,instrument_id,action,side,depth,price,size,flags,ts_in_delta," \
             "sequence,symbol\n"
    row = "1767623400188398595,1767623400188052535,0,2,14932,T,A,0,262400000000,5,130,16554,10482113,AAPL\n"
    with pytest.raises(ReplayError, match="looks like a Databento CSV.*--price-scale 1e-9.*--price-scale 1 "):
        parse_text(header + row)
    [trade] = parse_text(header + row, price_scale="1e-9")
    assert (trade.price, trade.side, trade.ts) == (Decimal("262.4"), "sell",
                                                   datetime(2026, 1, 5, 14, 30, 0, 188052, tzinfo=UTC))
    book = header.replace("symbol\n", "bid_px_00,ask_px_00,bid_sz_00,ask_sz_00,symbol\n")  # MBP-1
    orders = "ts_recv,ts_event,rtype,publisher_id,instrument_id,action,side,price,size,channel_id,order_id," \
             "flags,ts_in_delta,sequence,symbol\n"  # MBO
    statistics = "ts_recv,ts_event,rtype,publisher_id,instrument_id,ts_ref,price,quantity,sequence,ts_in_delta," \
                 "stat_type,channel_id,update_action,stat_flags,symbol\n"
    for other_schema in (book, orders, statistics):
        with pytest.raises(ReplayError, match="another schema than trades"):
            parse_text(other_schema, price_scale="1e-9")


@pytest.mark.parametrize("symbol", ["tſla", "ﬀ", "AAPL€"])
def test_a_symbol_outside_the_contracts_characters_is_a_bad_row_not_another_symbol(symbol):
    with pytest.raises(ReplayError, match=f"symbol {symbol!r} is not valid"):
        parse_text(f"{symbol},2026-01-05T14:30:01Z,1,1\n", header=["symbol", "timestamp", "price", "size"])


def test_a_currency_pair_written_with_a_slash_is_the_contracts_symbol():
    text = "EUR/USD,20260105 14:30:01.658,1.17229,1.17232\n"
    [quote] = parse_text(text, header=["symbol", "timestamp", "bid", "ask"])
    assert (quote.symbol, quote.bid, quote.ts) == ("EUR-USD", Decimal("1.17229"),
                                                   datetime(2026, 1, 5, 14, 30, 1, 658000, tzinfo=UTC))
    assert parse_text("ts,price,size\n1767623400,1,1\n", default_symbol="btc/usd")[0].symbol == "BTC-USD"


@st.composite
def mixed_events(draw):
    """A trade or a quote at one of few times (so that rows share them), with a vendor id or not."""
    trade = draw(st.booleans())
    return {
        "symbol": draw(st.sampled_from(("AAPL", "BTC-USD"))),
        "ts": str(1767623400000000 + draw(st.integers(0, 3))),
        "price": draw(st.sampled_from(("230.1", "230.10", "231"))) if trade else "",
        "size": draw(st.sampled_from(("100", "5"))) if trade else "",
        "side": draw(st.sampled_from(("", "buy", "sell"))) if trade else "",
        "bid": "" if trade else draw(st.sampled_from(("229", "229.5"))),
        "ask": "" if trade else "230",
        "has_id": draw(st.booleans()),
    }


@settings(max_examples=200, deadline=None)
@given(events=st.lists(mixed_events(), min_size=1, max_size=12),
       copies=st.lists(st.integers(0, 2), min_size=12, max_size=12), data=st.data())
def test_trades_and_quotes_in_any_order_with_or_without_ids_are_each_stored_once(events, copies, data):
    # Each event is written 1-3 times: with a vendor id, the copies are one event; without, identical rows
    # are separate trades (or quotes).
    rows = data.draw(st.permutations([(n, e) for n, (e, c) in enumerate(zip(events, copies)) for _ in range(c + 1)]))
    lines = ["id,ts,symbol,price,size,side,bid,ask"] + [
        ",".join((f"v{n}" if e["has_id"] else "", e["ts"], e["symbol"], e["price"], e["size"], e["side"], e["bid"],
                  e["ask"])) for n, e in rows]
    text = "\n".join(lines) + "\n"
    ids = [m.id for m in parse_text(text)]
    assert len(set(ids)) == len({n for n, e in rows if e["has_id"]}) + sum(not e["has_id"] for _, e in rows)
    assert [m.id for m in parse_text(text)] == ids
