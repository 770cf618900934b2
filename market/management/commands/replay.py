"""`manage.py replay FILE`: recorded trades and quotes from CSV onto Kafka."""

import bz2
import gzip
import io
import lzma
import zipfile
import zlib
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from finstream import tracing
from market import selectors
from market.domain.pacing import Pacer
from market.domain.replay import EPOCH_UNITS, DEFAULT_COLUMNS, ReplayError, ReplayParser
from market.feeds import feed_publish, positive_or_max, stop_on_signals
from streaming import metrics
from streaming.kafka import DeliveryFailed, EventPublisher, KafkaUnavailable, kafka_cluster_reachable
from streaming.topics import QUOTES, TRADES, topic
from streaming.wire import epoch_us_time

# What a damaged or truncated file raises while it is unpacked.
_UNREADABLE = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


def _open_text(path: Path, encoding: str):
    """The file's raw stream and its text, unpacked by its magic bytes (not its name): gzip, bzip2, xz, or a
    zip archive of one file."""
    raw = path.open("rb")
    head = raw.peek(6)[:6]
    if head.startswith(b"\x1f\x8b"):
        unpacked = gzip.GzipFile(fileobj=raw)
    elif head.startswith(b"BZh"):
        unpacked = bz2.BZ2File(raw)
    elif head.startswith(b"\xfd7zXZ\x00"):
        unpacked = lzma.LZMAFile(raw)
    elif head.startswith(b"PK\x03\x04"):
        archive = zipfile.ZipFile(raw)
        files = [member for member in archive.infolist() if not member.is_dir()]
        if len(files) != 1:
            raw.close()
            names = ", ".join(member.filename for member in files[:5]) + (", ..." if len(files) > 5 else "")
            raise CommandError(f"{path}: a zip archive of {len(files)} files ({names}): replay one file at a "
                               "time, unpacked")
        try:
            unpacked = archive.open(files[0])
        except RuntimeError as error:  # encrypted
            raw.close()
            raise CommandError(f"{path}: {error}: unpack it first") from None
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        raw.close()
        raise CommandError(f"{path}: zstd-compressed: unpack it first (zstd -d), or recompress it with gzip")
    else:
        unpacked = raw
    return raw, io.TextIOWrapper(unpacked, encoding=encoding, newline="")


def _delimiter(text: str) -> str:
    delimiter = {"\\t": "\t", "tab": "\t"}.get(text.lower(), text)
    if len(delimiter) != 1 or delimiter in "\"\r\n":
        raise CommandError(f"--delimiter {text!r}: give one character, such as ';' or '|', or \\t for a tab")
    return delimiter


WARN_BEFORE_DROP = timedelta(days=3)


def retention_warning(*, earliest: dict[str, int], now: datetime,
                      trades_closed: Callable[[date], bool] = lambda day: False) -> str | None:
    """What the hourly retention will drop within WARN_BEFORE_DROP of a file whose earliest trade and
    quote are at `earliest` (epoch µs by "trades" and "quotes", for those it holds), or None.
    `trades_closed(day)`: whether retention dropped that UTC day's trades already (for the symbol
    of the earliest trade), so that none of the file's trades of it is stored at all."""
    dropped, closed = [], None
    trades_go = False
    for what, kind, days, name in (
        ("trades", "trades", settings.TRADES_RETENTION_DAYS, "TRADES_RETENTION_DAYS"),
        ("quotes", "quotes", settings.QUOTES_RETENTION_DAYS, "QUOTES_RETENTION_DAYS"),
        ("1m and 5m candles", "trades", settings.FINE_CANDLES_RETENTION_DAYS, "FINE_CANDLES_RETENTION_DAYS"),
    ):
        if kind not in earliest or (kind == "trades" and closed):  # no trade stored: no candle built
            continue
        start = epoch_us_time(earliest[kind])
        left = start + timedelta(days=days) - now
        if what == "trades" and left <= timedelta(0) and trades_closed(start.date()):
            closed = (f"its trades of {start:%Y-%m-%d} ({(now - start).days} days ago) are of a day retention "
                      f"has closed ({name}={days}): they are not stored, and that day's candles stay as they are "
                      f"(finstream_trades_not_stored_total counts them)")
            continue
        if left <= WARN_BEFORE_DROP:
            when = "within the hour" if left <= timedelta(0) else f"in {_duration(left)}"
            dropped.append(f"its {what} of {start:%Y-%m-%d} ({(now - start).days} days ago) {when} ({name}={days})")
            trades_go = trades_go or what == "trades"
    said = [closed] if closed else []
    if dropped:
        closing = (" Once a day's trades are dropped, the day is closed: replaying the file again stores none of "
                   "its trades, and its candles stay as they are." if trades_go else "")
        said.append(f"the file is stored, but the hourly retention will drop {'; '.join(dropped)}.{closing} To "
                    "keep it, raise those settings for the stack (docs/replay.md)")
    return "; ".join(said) or None


def _trades_closed(parser: ReplayParser) -> Callable[[date], bool]:
    """Whether retention closed a day for the symbol of the file's earliest trade; False if
    PostgreSQL cannot say."""
    def closed(day: date) -> bool:
        symbol = parser.earliest_trade_symbol()
        try:
            return symbol is not None and bool(selectors.retired_trade_days(days={(symbol, day)}))
        except DatabaseError:
            return False
    return closed


def _duration(left: timedelta) -> str:
    hours = max(1, round(left.total_seconds() / 3600))
    if hours >= 48:
        return f"{round(hours / 24)} days"
    return "an hour" if hours == 1 else f"{hours} hours"


class Command(BaseCommand):
    help = ("Replay recorded trades (and quotes) from a CSV or JSON-lines file, plain or compressed, into "
            "market.trades and market.quotes with their original event times. docs/replay.md describes the format.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV or JSON-lines file, plain or compressed (gzip, bzip2, xz, a zip of "
                                         "one file)")
        parser.add_argument("--format", choices=("auto", "csv", "jsonl"), default="auto",
                            help="csv, or jsonl: one JSON object per line (default: jsonl for a file named .jsonl "
                                 "or .ndjson, or whose first line is an object)")
        parser.add_argument("--speed", default="1", help="1 = real time, 10 = ten times faster, 'max' = no pacing")
        parser.add_argument("--symbol", default=None, help="symbol for files without a symbol column")
        parser.add_argument("--epoch-unit", choices=EPOCH_UNITS, default=None,
                            help="unit of numeric timestamps (default: read from their magnitude)")
        parser.add_argument("--time-format", default=None, metavar="FORMAT",
                            help="how the timestamps are written, in strptime's directives, e.g. "
                                 "'%%d.%%m.%%Y %%H:%%M:%%S.%%f' (default: ISO-8601 or epoch numbers)")
        parser.add_argument("--timezone", default=None, metavar="ZONE",
                            help="the time zone of times written without an offset, e.g. America/New_York "
                                 "(default: UTC)")
        parser.add_argument("--decimal-comma", action="store_true",
                            help="prices and sizes are written with a decimal comma (212,40)")
        parser.add_argument("--column", action="append", default=[], metavar="ROLE=NAME",
                            help=f"map a column, e.g. --column timestamp=trade_time, or ignore one, e.g. "
                                 f"--column side=; roles: {', '.join(DEFAULT_COLUMNS)}")
        parser.add_argument("--columns", default=None, metavar="NAME,NAME,...",
                            help="the column names of a file without a header row (its first line is data)")
        parser.add_argument("--delimiter", default=",", help="field delimiter (default ','; \\t or tab for a tab)")
        parser.add_argument("--encoding", default="utf-8-sig",
                            help="the file's text encoding (default UTF-8, with or without a BOM), e.g. cp1252")
        parser.add_argument("--price-scale", default=None, metavar="POWER_OF_TEN",
                            help="multiply prices, bids and asks by this, e.g. 1e-9 for fixed-point prices")
        parser.add_argument("--skip-bad", action="store_true",
                            help="report and skip malformed rows instead of stopping at the first")
        parser.add_argument("--check", action="store_true",
                            help="read the whole file and report what it holds and its bad rows; publish nothing")

    def handle(self, *args, **options):
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        speed = positive_or_max(options["speed"], option="--speed",
                                meaning="a factor (1 = real time, 10 = ten times faster)")
        overrides: dict[str, str | None] = {}
        for item in options["column"]:
            role, equals, name = item.partition("=")
            if role not in DEFAULT_COLUMNS or not equals:
                raise CommandError(f"--column {item!r}: use ROLE=NAME (or ROLE= to ignore a column) with ROLE one "
                                   f"of {', '.join(DEFAULT_COLUMNS)}")
            overrides[role] = name or None
        header = None if options["columns"] is None else [name.strip() for name in options["columns"].split(",")]
        delimiter = _delimiter(options["delimiter"])
        encoding = options["encoding"]
        try:
            io.TextIOWrapper(io.BytesIO(), encoding=encoding)  # a text encoding: not base64 or rot13
        except LookupError:
            raise CommandError(f"--encoding {encoding!r}: not an encoding Python knows, e.g. utf-8, cp1252, "
                               "latin-1") from None
        try:
            parser = ReplayParser(default_symbol=options["symbol"], epoch_unit=options["epoch_unit"],
                                  time_format=options["time_format"], timezone=options["timezone"],
                                  decimal_comma=options["decimal_comma"], overrides=overrides,
                                  price_scale=options["price_scale"],
                                  latest=datetime.now(UTC) + timedelta(seconds=settings.EVENT_TIME_MAX_AHEAD_SECONDS))
        except ReplayError as error:
            raise CommandError(str(error)) from None

        def on_error(error: ReplayError) -> None:
            self.stderr.write(f"{path}: {'' if options['check'] else 'skipped '}{error}")

        try:
            raw, text = _open_text(path, encoding)
        except _UNREADABLE as error:
            raise CommandError(f"{path}: cannot be read: {error}") from None
        size = path.stat().st_size
        try:
            json_lines, lines = _lines_and_format(text, options["format"], path)
            if json_lines and (header is not None or options["delimiter"] != ","):
                raise CommandError(f"{path}: JSON lines name their fields: --columns and --delimiter are for CSV")
            messages = parser.wire_messages(lines, trades_topic=topic(TRADES), quotes_topic=topic(QUOTES),
                                            delimiter=delimiter, header=header, json_lines=json_lines,
                                            on_error=on_error if options["skip_bad"] or options["check"] else None)
            try:
                first = next(messages)
            except StopIteration:
                raise CommandError(f"{path}: no rows to replay{_remarks(parser)}") from None
            pacer = Pacer(wall_start=time.monotonic(), event_start_ms=first[3], speed=speed) if speed else None
            messages = chain([first], messages)
            # What the first row says now, what the whole file says at the end (if that is more).
            warned = retention_warning(earliest=parser.earliest(), now=datetime.now(UTC),
                                       trades_closed=_trades_closed(parser))
            if warned:
                self.stderr.write(f"{path}: {warned}")
            if options["check"]:
                deque(messages, maxlen=0)
                self._warn_of_retention(path, parser, warned)
                summary = (f"{path}: {parser.trades:,} trades and {parser.quotes:,} quotes would be replayed"
                           f"{_remarks(parser)}; nothing published")
                if parser.errors and not options["skip_bad"]:
                    raise CommandError(f"{summary}. Without --skip-bad, a replay stops at the first bad row")
                self.stdout.write(f"checked {summary}")
                return
            kafka_cluster_reachable(timeout=10)
            should_stop = stop_on_signals()
            metrics.serve_metrics(settings.METRICS_PORT)
            tracing.configure("replay")
            show_progress = sys.stdout.isatty()

            def progress(stats):
                if show_progress:
                    done = raw.tell() / size * 100 if size else 100
                    self.stdout.write(f"\r  {done:5.1f}%  {stats.trades:,} trades  {stats.quotes:,} quotes  "
                                      f"{stats.rate(time.monotonic()):,.0f} rows/s", ending="")
                    self.stdout.flush()

            publisher = EventPublisher(name="replay")
            stats = feed_publish(messages=messages, publisher=publisher, pacer=pacer,
                                 should_stop=should_stop, on_progress=progress,
                                 progress_every=100_000 if pacer is None else 1_000)
        except ReplayError as error:
            hint = " (--skip-bad skips such rows)" if error.line is not None else ""
            raise CommandError(f"{path}: {error}{hint}") from None
        except UnicodeDecodeError as error:
            raise CommandError(
                f"{path}: not {'UTF-8' if encoding == 'utf-8-sig' else encoding} text ({error.reason}): give its "
                "encoding, e.g. --encoding cp1252. Rows published before it keep their ids, so replaying the file "
                "again counts none of them twice"
            ) from None
        except (KafkaUnavailable, DeliveryFailed) as error:
            raise CommandError(str(error)) from None
        except _UNREADABLE as error:
            if isinstance(error, ConnectionError):  # stdout's pipe, say: not the file
                raise
            raise CommandError(f"{path}: cannot be read to the end: {error}. Rows published before keep their "
                               "ids, so replaying a repaired file counts none of them twice") from None
        finally:
            text.close()
            tracing.shutdown()
        if show_progress:
            self.stdout.write("")
        self._warn_of_retention(path, parser, warned)
        elapsed = time.monotonic() - stats.started
        self.stdout.write(
            f"replayed {stats.trades:,} trades and {stats.quotes:,} quotes from {path} in {elapsed:.1f} s "
            f"({stats.rate(time.monotonic()):,.0f} rows/s){_remarks(parser)}"
        )

    def _warn_of_retention(self, path: Path, parser: ReplayParser, warned: str | None) -> None:
        final = retention_warning(earliest=parser.earliest(), now=datetime.now(UTC),
                                  trades_closed=_trades_closed(parser))
        if final and final != warned:
            self.stderr.write(f"{path}: {final}")


def _lines_and_format(text, chosen: str, path: Path) -> tuple[bool, Iterable[str]]:
    """Whether the file is JSON lines (with --format auto: named .jsonl or .ndjson, compressed or not,
    or its first line that is not blank is an object), and its lines from the first."""
    if chosen != "auto":
        return chosen == "jsonl", text
    if {".jsonl", ".ndjson"} & set(path.suffixes):
        return True, text
    peeked = []
    for line in text:
        peeked.append(line)
        if line.strip():
            break
    return bool(peeked) and peeked[-1].lstrip().startswith("{"), chain(peeked, text)


def _remarks(parser: ReplayParser) -> str:
    """What a summary adds about the rows read: bad ones, ones out of time order, late ones whose ids
    may repeat an earlier one's."""
    remarks = []
    if parser.preamble_lines:
        remarks.append(f"{parser.preamble_lines} JSON objects before the first trade or quote skipped (no trade's or "
                       "quote's fields: a subscription's acknowledgement, say)")
    if parser.errors:
        remarks.append(f"{parser.errors} bad rows, each reported above")
    if parser.out_of_order_rows:
        remarks.append(f"{parser.out_of_order_rows} rows out of time order")
    if parser.unsure_rows:
        remarks.append(f"{parser.unsure_rows} late rows without an id came after replay had forgotten the late rows "
                       "before them: one identical to a forgotten row has its id, and one of the two is dropped as a "
                       "replay; sort the file by time, or name its trade id column (docs/replay.md)")
    return "".join(f"; {remark}" for remark in remarks)
