"""simulate and replay against the real broker: what they publish is exactly
what they were asked to, a stop loses nothing they accepted, and a replayed
file keeps its prices, times and ids."""

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from market.domain.replay import ReplayError
from market.domain.pacing import Pacer
from market.feeds import PACING_TICK, feed_publish, paced_batches
from market.models import Trade as TradeRow
from market.pipelines import TradesPipeline
from streaming.kafka import DeliveryFailed, EventPublisher
from streaming.schemas import Trade, decoder_for
from streaming.testing import read_topic, wait_for
from streaming.topics import QUOTES, TRADES, topic

SAMPLE = Path(settings.BASE_DIR) / "market" / "fixtures" / "sample_trades.csv"


def trades_on_broker() -> list[Trade]:
    return [decoder_for(Trade).decode(m.value()) for m in read_topic(topic(TRADES))]


def test_a_seeded_simulation_publishes_the_same_stream_twice(kafka_topics):
    call_command("simulate", "--fresh", "--rate", "max", "--duration", "30", "--seed", "3", "--symbols", "AAPL,JPM",
                 "--start", "2026-03-02T14:30:00Z")
    first = trades_on_broker()
    call_command("simulate", "--fresh", "--rate", "max", "--duration", "30", "--seed", "3", "--symbols", "AAPL,JPM",
                 "--start", "2026-03-02T14:30:00Z")
    both = trades_on_broker()
    assert len(both) == 2 * len(first) > 0
    assert sorted(both, key=lambda t: t.id) == sorted(first + first, key=lambda t: t.id)


def test_a_paced_simulation_publishes_its_rate_over_its_duration(kafka_topics):
    started = time.monotonic()
    call_command("simulate", "--fresh", "--rate", "200", "--duration", "10", "--seed", "5", "--symbols", "AAPL,MSFT,JPM")
    # Paced: nothing is published before its event time comes round on the clock (a lower bound only:
    # how much later a busy machine finishes is not the simulator's doing).
    assert time.monotonic() - started >= 9.5
    trades = trades_on_broker()
    assert abs(len(trades) - 2000) <= 40, len(trades)
    span = (max(t.ts for t in trades) - min(t.ts for t in trades)).total_seconds()
    assert 9.5 <= span < 10


def test_sigterm_during_a_run_loses_no_accepted_message(kafka_topics):
    env = {**os.environ, "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
           "KAFKA_BOOTSTRAP_SERVERS": settings.KAFKA_BOOTSTRAP_SERVERS}
    process = subprocess.Popen([sys.executable, "manage.py", "simulate", "--fresh", "--rate", "max", "--seed", "9"],
                               cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    wait_for(lambda: len(read_topic(topic(TRADES))) > 5000, timeout=60, interval=0.5, what="simulated trades")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    published = re.search(r"published (\d+) trades and (\d+) quotes", out)
    assert published, out
    trades, quotes = int(published[1]), int(published[2])
    assert len(read_topic(topic(TRADES))) == trades
    assert len(read_topic(topic(QUOTES))) == quotes


def test_an_unpaced_run_without_a_start_simulates_the_duration_up_to_now(kafka_topics):
    before = datetime.now(UTC)
    call_command("simulate", "--fresh", "--rate", "max", "--duration", "600", "--seed", "4", "--symbols", "AAPL")
    times = [trade.ts for trade in trades_on_broker()]
    assert before - timedelta(seconds=601) <= min(times) and max(times) <= datetime.now(UTC)
    assert max(times) - min(times) > timedelta(seconds=590)


def test_an_unpaced_run_in_the_future_fails_saying_to_start_in_the_past(kafka_topics):
    # The broker refuses timestamps more than an hour ahead of its clock.
    with pytest.raises(CommandError, match="give a --start in the past"):
        call_command("simulate", "--fresh", "--rate", "max", "--duration", "1", "--seed", "2", "--symbols", "AAPL",
                     "--start", "2099-01-01T00:00:00Z")


def test_a_bad_row_fails_the_feed_after_every_message_before_it_is_on_the_broker(kafka_topics):
    def rows():
        for _ in range(3):
            yield (topic(TRADES), "AAPL", b"{}", 0)
        raise ReplayError("bad row", line=5)

    with pytest.raises(ReplayError, match="line 5"):
        feed_publish(messages=rows(), publisher=EventPublisher(name="test"), pacer=None, should_stop=lambda: False)
    assert len(read_topic(topic(TRADES))) == 3


def test_a_message_the_broker_does_not_take_fails_the_feed_and_is_not_counted_delivered(kafka_topics):
    # The topic does not exist and the broker does not create topics: delivery times out.
    publisher = EventPublisher(name="test", **{"message.timeout.ms": 2000})
    good = (topic(TRADES), "AAPL", b"{}", 0)
    lost = (f"{settings.KAFKA_TOPIC_PREFIX}no-such-topic", "AAPL", b"{}", 0)
    with pytest.raises(DeliveryFailed, match="delivery to Kafka failed"):
        feed_publish(messages=iter([good, lost, good]), publisher=publisher, pacer=None, should_stop=lambda: False)
    assert publisher.delivered == 2 and len(read_topic(topic(TRADES))) == 2


def sample_rows() -> list[dict]:
    with SAMPLE.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.django_db  # replay asks whether old rows' days are closed
def test_replaying_the_sample_publishes_exactly_its_rows_with_exact_prices_and_times(kafka_topics, settings):
    settings.TRADES_RETENTION_DAYS, settings.QUOTES_RETENTION_DAYS = 30, 7
    settings.FINE_CANDLES_RETENTION_DAYS = 100_000  # the sample's 1m candles are kept: not named below
    err = io.StringIO()
    call_command("replay", str(SAMPLE), "--speed", "max", stderr=err)
    # The sample (2026-01-05) is older than the trades' retention: the command says what will go.
    assert "will drop its trades of 2026-01-05 (" in err.getvalue()
    assert "days ago) within the hour (TRADES_RETENTION_DAYS=30). Once a day's trades are dropped" in err.getvalue()
    assert err.getvalue().count("hourly retention") == 1  # said at the start; the end has nothing to add
    assert "1m and 5m candles" not in err.getvalue() and "quotes" not in err.getvalue()  # it has no quotes
    trades = trades_on_broker()
    rows = sample_rows()
    assert len(trades) == len(rows)
    expected = sorted((r["symbol"], datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")),
                       Decimal(r["price"]), Decimal(r["size"])) for r in rows)
    assert sorted((t.symbol, t.ts, t.price, t.size) for t in trades) == expected


def test_the_retention_warning_names_what_the_file_holds_from_its_earliest_and_comes_days_ahead(settings):
    from market.management.commands.replay import retention_warning

    settings.TRADES_RETENTION_DAYS, settings.QUOTES_RETENTION_DAYS, settings.FINE_CANDLES_RETENTION_DAYS = 30, 7, 90
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)

    def warning(**ages: timedelta) -> str | None:
        return retention_warning(earliest={kind: int((now - age).timestamp() * 10**6) for kind, age in ages.items()},
                                 now=now)

    assert warning(trades=timedelta(days=26)) is None and warning(quotes=timedelta(days=3)) is None
    four_weeks = warning(trades=timedelta(days=28))
    assert four_weeks is not None and "its trades of 2026-10-30 (28 days ago) in 2 days (TRADES_RETENTION_DAYS=30)" \
        in four_weeks and "quotes" not in four_weeks and "1m and 5m candles" not in four_weeks
    assert "the day is closed: replaying the file again stores none of its trades" in four_weeks
    mixed = warning(trades=timedelta(days=1), quotes=timedelta(days=8))  # each kind by its own earliest row
    assert "its quotes of 2026-11-19 (8 days ago) within the hour (QUOTES_RETENTION_DAYS=7)" in mixed
    assert "trades" not in mixed and "closed" not in mixed
    assert "1m and 5m candles of 2026-08-31 (88 days ago) in 2 days" in warning(trades=timedelta(days=88))
    # A day retention closed already: none of its trades is stored, and no setting brings them back.
    closed = retention_warning(earliest={"trades": int((now - timedelta(days=40)).timestamp() * 10**6)}, now=now,
                               trades_closed=lambda day: day == date(2026, 10, 18))
    assert closed.startswith("its trades of 2026-10-18 (40 days ago) are of a day retention has closed "
                             "(TRADES_RETENTION_DAYS=30): they are not stored")
    assert "the file is stored" not in closed and "will drop its trades" not in closed


@pytest.mark.django_db(transaction=True)
def test_replaying_a_file_twice_gives_the_same_ids_and_stores_each_trade_once(kafka_topics, redis_clean):
    call_command("replay", str(SAMPLE), "--speed", "max")
    first = {t.id for t in trades_on_broker()}
    call_command("replay", str(SAMPLE), "--speed", "max")
    both = trades_on_broker()
    assert {t.id for t in both} == first and len(both) == 2 * len(first)
    pipeline = TradesPipeline()
    events = {TRADES: both}
    pipeline.prepare(events)
    with transaction.atomic():
        stored = pipeline.store(events)
    pipeline.close()
    assert len(stored.trades) == len(first) == TradeRow.objects.count()


def test_replay_refuses_a_file_without_the_columns_it_needs(tmp_path, kafka_topics):
    bad = tmp_path / "bad.csv"
    bad.write_text("when,amount\n2026-01-01T00:00:00Z,5\n")
    with pytest.raises(CommandError, match="no timestamp column"):
        call_command("replay", str(bad), "--speed", "max", "--symbol", "AAPL")


@pytest.mark.django_db  # replay asks whether old rows' days are closed
def test_replay_of_a_gzip_file_and_a_bad_row_with_skip_bad(tmp_path, kafka_topics):
    import gzip

    path = tmp_path / "trades.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("ts,price,size\n1767225600000,10.5,3\nnot-a-time,1,1\n1767225601000,10.25,0.5\n")
    err, out = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="2 trades and 0 quotes would be replayed; 1 bad rows, each reported above; "
                                           "nothing published. Without --skip-bad"):
        call_command("replay", str(path), "--check", "--symbol", "BTC-USD", stderr=err)
    assert "line 3: timestamp 'not-a-time'" in err.getvalue()
    call_command("replay", str(path), "--check", "--skip-bad", "--symbol", "BTC-USD", stdout=out)
    assert out.getvalue().startswith(f"checked {path}: 2 trades") and trades_on_broker() == []
    with pytest.raises(CommandError, match="line 3"):
        call_command("replay", str(path), "--speed", "max", "--symbol", "BTC-USD")
    call_command("replay", str(path), "--speed", "max", "--symbol", "BTC-USD", "--skip-bad")
    trades = trades_on_broker()
    # The first run published the row before the bad one; the second both good rows, with the same id for the first.
    assert len({t.id for t in trades}) == 2
    assert {t.price for t in trades} == {Decimal("10.5"), Decimal("10.25")}


@pytest.mark.django_db  # replay asks whether old rows' days are closed
def test_replay_tells_json_lines_by_their_first_line_and_refuses_csv_options_for_them(tmp_path):
    import gzip

    path = tmp_path / "trades.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('\n{"ts": 1767225600000, "price": 10.5, "size": 3, "symbol": "BTC-USD"}\n'
                     '{"ts": 1767225601000, "price": 10.25, "size": 0.5, "symbol": "BTC-USD"}, {}\n')
    out, err = io.StringIO(), io.StringIO()
    call_command("replay", str(path), "--check", "--skip-bad", stdout=out, stderr=err)
    assert out.getvalue().startswith(f"checked {path}: 1 trades and 0 quotes would be replayed; 1 bad rows")
    assert "line 3: not JSON" in err.getvalue()
    with pytest.raises(CommandError, match="--columns and --delimiter are for CSV"):
        call_command("replay", str(path), "--check", "--delimiter", ";")
    with pytest.raises(CommandError, match="no timestamp column"):  # read as CSV, its header is an object
        call_command("replay", str(path), "--check", "--format", "csv")
    named = tmp_path / "lines.ndjson"  # told by its name: its first line is no object
    named.write_text('[1, 2]\n{"ts": 1767225600000, "price": 10.5, "size": 3, "symbol": "BTC-USD"}\n')
    out, err = io.StringIO(), io.StringIO()
    call_command("replay", str(named), "--check", "--skip-bad", stdout=out, stderr=err)
    assert "1 trades" in out.getvalue() and "line 1: not a JSON object" in err.getvalue()


@pytest.mark.django_db  # replay asks whether old rows' days are closed
def test_replay_reads_compressed_headerless_and_non_utf8_files(tmp_path, kafka_topics):
    import bz2
    import lzma
    import zipfile

    # Binance's aggTrades: no header row, epoch microseconds, is_buyer_maker; shipped as a zip of one file.
    binance = tmp_path / "BTCUSDT-aggTrades-2026-01-05.zip"
    with zipfile.ZipFile(binance, "w") as archive:
        archive.writestr("BTCUSDT-aggTrades-2026-01-05.csv",
                         "3512880114,91843.20,0.0452,5702118930,5702118931,1767623400150437,True,True\n")
    call_command("replay", str(binance), "--speed", "max", "--symbol", "BTCUSDT", "--columns",
                 "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,best_match")
    # A European export: semicolons, Windows' code page, the date apart and in Frankfurt's time, decimal
    # commas, a column to ignore; bzip2.
    european = tmp_path / "trades.csv.bz2"
    european.write_bytes(bz2.compress("Datum;Zeit;Symbol;Kurs;Stück;Side\n05.01.2026;15:30:00,000;SAP;230,5;7;x\n"
                                      .encode("cp1252")))
    call_command("replay", str(european), "--speed", "max", "--encoding", "cp1252", "--delimiter", ";",
                 "--column", "date=Datum", "--column", "timestamp=Zeit", "--column", "price=Kurs",
                 "--column", "size=Stück", "--column", "side=", "--time-format", "%d.%m.%Y %H:%M:%S,%f",
                 "--timezone", "Europe/Berlin", "--decimal-comma")
    # Tab-separated, xz.
    tabbed = tmp_path / "trades.tsv.xz"
    tabbed.write_bytes(lzma.compress(b"timestamp\tsymbol\tprice\tsize\n2026-01-05T14:30:01Z\tEUR/USD\t1.17\t1000\n"))
    call_command("replay", str(tabbed), "--speed", "max", "--delimiter", "\\t")

    trades = sorted(trades_on_broker(), key=lambda t: t.ts)
    assert [(t.symbol, t.price, t.size, t.side) for t in trades] == [
        ("SAP", Decimal("230.5"), Decimal(7), "buy"),
        ("BTCUSDT", Decimal("91843.20"), Decimal("0.0452"), "sell"),  # the buyer was the maker: the taker sold
        ("EUR-USD", Decimal("1.17"), Decimal(1000), "buy"),
    ]


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("ts;price;size\n".encode("cp1252") + "1767623400;1;1 Stück\n".encode("cp1252"), [],
         "not UTF-8 text .* --encoding cp1252"),
        (b"ts,price,size\n", ["--encoding", "klingon"], "--encoding 'klingon': not an encoding"),
        (b"ts,price,size\n", ["--encoding", "base64"], "--encoding 'base64': not an encoding"),
        (b"ts,price,size\n", ["--delimiter", ";;"], "--delimiter ';;': give one character"),
        (b"ts,price,size\n", ["--column", "price"], "--column 'price': use ROLE=NAME"),
        (b"ts,price,size\n", ["--price-scale", "3"], "price scale '3' is not a power of ten"),
        (bytes.fromhex("28b52ffd") + b"\x00" * 20, [], "zstd-compressed: unpack it first"),
        (bytes.fromhex("1f8b0800000000000003") + b"\x01\x02", [], "cannot be read"),
        ("zip of two", [], "a zip archive of 2 files"),
        (b"93001,1,1\n", ["--columns", "time,price,size"], r"line 1: timestamp '93001' is too small"),
        (b"ts,price,size\n", ["--time-format", "%d.%m.%Y"], "time format '%d.%m.%Y' needs the year .* and the hour"),
        (b"ts,price,size\n", ["--timezone", "Mars/Olympus"], "time zone 'Mars/Olympus' is not known"),
        (b"ts,price,size\n", ["--time-format", "%Y %H", "--epoch-unit", "s"], "exclude each other"),
    ],
)
def test_replay_refuses_what_it_cannot_read_with_a_clear_error(tmp_path, content, options, message):
    path = tmp_path / "recorded"
    if content == "zip of two":
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.csv", "ts,price,size\n")
            archive.writestr("b.csv", "ts,price,size\n")
    else:
        path.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        call_command("replay", str(path), "--speed", "max", "--symbol", "AAPL", *options)


class PacerClock:
    """The pacer's clock, moved on by the feed's own waits (and by nothing else)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def test_a_paced_feed_sends_each_message_once_due_in_few_batches():
    start_ms = 1_700_000_000_000
    messages = [(topic(TRADES), "AAPL", b"{}", start_ms + i) for i in range(300)]  # one a millisecond
    clock = PacerClock()
    pacer = Pacer(wall_start=clock.now, event_start_ms=start_ms, speed=1.0)
    sent = []
    for batch in paced_batches(iter(messages), pacer, wait=clock.wait, should_stop=lambda: False, clock=clock):
        assert all(pacer.due_at(message[3]) <= clock.now for message in batch)  # never early
        assert clock.now - pacer.due_at(batch[0][3]) <= PACING_TICK + 1e-9  # nor much late
        sent.append(batch)
    assert [message for batch in sent for message in batch] == messages
    # Each wake-up takes everything due since the last one: one batch per PACING_TICK, not one a message.
    assert len(sent) <= 0.3 / PACING_TICK + 1


@pytest.mark.django_db
def test_replaying_the_sample_again_once_retention_closed_its_day_says_nothing_is_stored(settings):
    from market.models import RetiredTradeDay

    settings.TRADES_RETENTION_DAYS = 30

    def said() -> str:
        err = io.StringIO()
        call_command("replay", str(SAMPLE), "--check", stderr=err, stdout=io.StringIO())
        return err.getvalue()

    RetiredTradeDay.objects.create(symbol="ZZZZ", day=date(2026, 1, 5))  # another symbol's day: not the sample's
    assert "the file is stored, but the hourly retention will drop its trades of 2026-01-05" in said()
    for symbol in {row["symbol"] for row in sample_rows()}:
        RetiredTradeDay.objects.create(symbol=symbol, day=date(2026, 1, 5))
    assert "its trades of 2026-01-05 (" in said() and "are of a day retention has closed" in said()
    assert "the file is stored" not in said()


def test_check_warns_of_each_kinds_retention_from_its_earliest_row(tmp_path, settings):
    settings.TRADES_RETENTION_DAYS, settings.QUOTES_RETENTION_DAYS = 30, 7
    now = datetime.now(UTC)
    path = tmp_path / "mixed.csv"
    path.write_text("ts,symbol,price,size,bid,ask\n"
                    f"{(now - timedelta(days=1)).isoformat()},AAPL,1,1,,\n"  # the first row: a recent trade
                    f"{(now - timedelta(days=10)).isoformat()},AAPL,,,1,2\n")  # a late quote, 10 days old
    err = io.StringIO()
    call_command("replay", str(path), "--check", stderr=err, stdout=io.StringIO())
    assert "its quotes of" in err.getvalue() and "within the hour (QUOTES_RETENTION_DAYS=7)" in err.getvalue()
    assert "its trades" not in err.getvalue()
